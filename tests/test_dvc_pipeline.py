"""dvc.yaml itself: `dvc exp run -S` composes conf/ into params.yaml and runs every stage.

The repository's tracked files are copied into a fresh git repo, so the test sees the
working tree as a new clone would, and the real MNIST files come from the local source.
"""

import json
import os
import subprocess
import sys

import pytest
import yaml

from .conftest import REPO

pytestmark = pytest.mark.slow


DVC = (sys.executable, "-m", "dvc")


def _run(*cmd, cwd, env=None):
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    assert done.returncode == 0, f"{cmd}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done.stdout


@pytest.fixture
def clone(tmp_path):
    files = _run("git", "ls-files", "-co", "--exclude-standard", cwd=REPO).split()
    repo = tmp_path / "repo"
    for name in files:
        if (REPO / name).is_file() and not name.startswith("data/metrics/"):
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            (repo / name).write_bytes((REPO / name).read_bytes())
    _run("git", "init", "-q", cwd=repo)
    _run("git", "add", "-A", cwd=repo)
    _run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init", cwd=repo)
    return repo


def test_exp_run_composes_overrides_and_runs_all_stages(clone, mnist_raw, tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    overrides = [
        "experiment=fast",
        "data.sources=[local]",
        f"data.source_dir={mnist_raw}",
        "data.train_limit=3000",
        "data.val_size=500",
        "data.test_limit=500",
        "train.epochs=1",
        "train.batch_size=25",
        "trainer.enable_progress_bar=false",
    ]
    _run(
        "dvc",
        "exp",
        "run",
        "-n",
        "slice",
        *[a for o in overrides for a in ("-S", o)],
        cwd=clone,
        env=env,
    )
    composed = yaml.safe_load((clone / "params.yaml").read_text())
    assert composed["train"]["batch_size"] == 25 and composed["data"]["train_limit"] == 3000
    assert composed["optimizer"]["scheduler"] == "onecycle"  # from the preset
    metrics = json.loads((clone / "data/metrics/test.json").read_text())
    assert 0.5 < metrics["test_acc"] <= 1
    shown = json.loads(_run(*DVC, "exp", "show", "--json", cwd=clone, env=env))
    assert "slice" in json.dumps(shown) and "test_acc" in json.dumps(shown)
    # Nothing changed since: the pipeline is up to date.
    assert "up to date" in _run(*DVC, "status", cwd=clone, env=env)
