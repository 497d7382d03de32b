"""dvc.yaml itself: `dvc exp run -S` composes conf/ into params.yaml and runs every stage.

The repository's tracked files are copied into a fresh git repo, so the test sees the
working tree as a new clone would, and the real MNIST files come from the local source.
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest
import yaml
from mlflow.tracking import MlflowClient

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


def slice_overrides(mnist_raw) -> list[str]:
    """`-S` values for a one-epoch run on a slice of the real data, read from its local copy."""
    return [
        "data.sources=[local]",
        f"data.source_dir={mnist_raw}",
        "data.train_limit=3000",
        "data.val_size=500",
        "data.test_limit=500",
        "train.epochs=1",
        "trainer.enable_progress_bar=false",
    ]


def test_exp_run_composes_overrides_and_runs_all_stages(clone, mnist_raw, tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    overrides = ["experiment=fast", *slice_overrides(mnist_raw), "train.batch_size=25"]
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
    # A bad value is refused by the check stage, before DVC removes any stage's outputs.
    kept = [clone / "dvc.lock", clone / "data/params-valid.txt", *(clone / "data").rglob("*.*")]
    before = {p: p.read_bytes() for p in kept if p.is_file()}
    params = (clone / "params.yaml").read_text()
    bad = subprocess.run(
        [*DVC, "exp", "run", "-S", "train.batch_size=0"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0
    assert "error: train.batch_size=0 is not allowed; use an integer >= 1" in bad.stderr
    assert {p: p.read_bytes() for p in before if p.is_file()} == before  # every file intact
    changed = json.loads(_run(*DVC, "status", "--json", cwd=clone, env=env))
    assert changed and all(
        set(entry) == {"changed deps"} and set(entry["changed deps"]) == {"params.yaml"}
        for entries in changed.values()
        for entry in entries
    ), changed
    (clone / "params.yaml").write_text(params)  # the user's way back: the old params
    assert "up to date" in _run(*DVC, "status", cwd=clone, env=env)
    # Editing a function that train imports from another module makes train (and evaluate) stale.
    module = clone / "src/lenet_mnist/prepare.py"
    module.write_text(module.read_text().replace('mmap_mode="r")', 'mmap_mode="c")'))
    changed = json.loads(_run(*DVC, "status", "--json", cwd=clone, env=env))
    for stage in ("prepare", "train", "evaluate"):
        deps = [e["changed deps"] for e in changed[stage] if "changed deps" in e]
        assert deps == [{"src/lenet_mnist/prepare.py": "modified"}], (stage, changed)


def _wait_for_queue(clone, env, timeout_s=900):
    deadline = time.monotonic() + timeout_s
    while True:
        status = _run(*DVC, "queue", "status", cwd=clone, env=env)
        if not re.search(r"\b(Queued|Running)\b", status):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(2)


def _training_runs(db):
    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("lenet-mnist")
    return client.search_runs([experiment.experiment_id]) if experiment else []


def _readme_exp_show(clone, env) -> str:
    """The README's `dvc exp show` line, run at 120 columns: it must fit, nothing elided."""
    readme = (REPO / "README.md").read_text()
    (line,) = [x for x in readme.splitlines() if x.startswith("dvc exp show ")]
    table = subprocess.run(
        line + " --no-pager",
        shell=True,
        cwd=clone,
        env={**env, "COLUMNS": "120"},
        capture_output=True,
        text=True,
    ).stdout
    header = table.splitlines()[1].split()
    for column in ("train.batch_size", "train.epochs", "optimizer.lr", "test_acc"):
        assert column in header, table
    assert "…" not in table and max(map(len, table.splitlines())) <= 120, table
    return table


def test_queued_grid_runs_shows_and_is_not_trained_twice(clone, mnist_raw):
    # No MLFLOW_TRACKING_URI: the queued copies must log into the clone's own mlflow.db.
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    slice_ = [*slice_overrides(mnist_raw), "trainer.compile=false"]
    queue = ["dvc", "exp", "run", "--queue", "-S", "train.batch_size=50,100"]
    queue += [a for o in slice_ for a in ("-S", o)]
    _run(*queue, cwd=clone, env=env)
    _run(*DVC, "queue", "start", cwd=clone, env=env)
    status = _wait_for_queue(clone, env)
    assert status.count("Success") == 2, status
    shown = json.loads(_run(*DVC, "exp", "show", "--json", cwd=clone, env=env))
    exps = [e for rev in shown for e in (rev.get("experiments") or [])]
    points = {}
    for exp in exps:
        data = exp["revs"][0]["data"]
        size = data["params"]["params.yaml"]["data"]["train"]["batch_size"]
        points[size] = data["metrics"]["data/metrics/test.json"]["data"]["test_acc"]
    assert set(points) == {50, 100} and all(0.2 < a <= 1 for a in points.values()), points
    trained = _training_runs(clone / "mlflow.db")
    assert sorted(r.data.params["train.batch_size"] for r in trained) == ["100", "50"]
    names = {e["name"] for e in exps}
    assert {r.data.tags["dvc_exp_name"] for r in trained} == names  # MLflow run <-> DVC exp
    table = _readme_exp_show(clone, env)
    assert table.count(" 50 ") == table.count(" 100 ") == 1, table  # one row per point

    # The same grid again: DVC's run cache restores every stage instead of training.
    _run(*queue, cwd=clone, env=env)
    _run(*DVC, "queue", "start", cwd=clone, env=env)
    status = _wait_for_queue(clone, env)
    assert status.count("Success") == 4, status
    assert len(_training_runs(clone / "mlflow.db")) == len(trained)
