"""The check stage as `dvc repro` runs it: it sees every key of params.yaml, and its verdict
stays the same bytes for any valid one, so passing it reruns nothing downstream."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, user_shell

# What dvc.yaml's check stage reads and hashes, besides params.yaml.
CHECK_FILES = ("dvc.yaml", "params.yaml", ".dvcignore", "src/lenet_mnist/stages/check.py")
CHECK_DIRS = ("src/lenet_mnist/config",)
CHECK_MODULES = ("src/lenet_mnist/errors.py", "src/lenet_mnist/outputs.py")


def _dvc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=user_shell(),
    )


@pytest.fixture
def pipeline(tmp_path: Path) -> Path:
    """A git and DVC repository holding the check stage's files, copied from this one."""
    repo = tmp_path / "repo"
    for name in (*CHECK_FILES, *CHECK_MODULES):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / name, repo / name)
    for name in CHECK_DIRS:
        shutil.copytree(REPO / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    assert _dvc("init", "-q", cwd=repo).returncode == 0
    return repo


def _verdict_hash(repo: Path) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["check"]
    (out,) = lock["outs"]
    return out["md5"]


def test_any_key_added_to_params_yaml_reruns_the_check_and_an_unknown_one_fails_it(pipeline):
    first = _dvc("repro", "check", cwd=pipeline)
    assert first.returncode == 0, first.stdout + first.stderr
    verdict = _verdict_hash(pipeline)

    # A valid edit in a group no later stage reads: the check reruns, its verdict the same.
    params = pipeline / "params.yaml"
    params.write_text(params.read_text().replace("  timeout_s: 5.0", "  timeout_s: 7.0"))
    again = _dvc("repro", "check", cwd=pipeline)
    assert again.returncode == 0 and "Running stage 'check'" in again.stdout, again.stdout
    assert _verdict_hash(pipeline) == verdict

    with params.open("a") as f:
        f.write("junk: 1\n")
    assert _dvc("status", "check", "--json", cwd=pipeline).stdout.strip() == (
        '{"check": [{"changed deps": {"params.yaml": {"junk": "new"}}}]}'
    )
    refused = _dvc("repro", "check", cwd=pipeline)
    assert refused.returncode != 0
    ours = [line for line in refused.stderr.splitlines() if not line.startswith("ERROR: ")]
    assert ours == [
        "error: junk is not a config key; the groups are data, model, optimizer, train, "
        "trainer, logger, paths, objective, force"
    ], refused.stderr
    assert _verdict_hash(pipeline) == verdict  # the last verdict, left as it was
