"""What a user's forge runs: the workflow, the report it posts, the way back from an
experiment that the README gives, and the GPU check on a machine without a GPU."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, run_ok, user_shell
from tests.trained import committed_sets, committed_slice

WORKFLOW = REPO / ".github/workflows/reproduce.yml"
CHECKS = ("historical", "determinism", "restart", "determinism-restart")
DVC = (sys.executable, "-m", "dvc")


def test_the_workflow_passes_actionlint():
    done = subprocess.run(
        [Path(sys.executable).with_name("actionlint"), WORKFLOW], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_workflow_runs_each_check_as_its_own_step_through_the_ci_script():
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["reproduce"]["steps"]
    named = {s["name"].split(" ")[0]: s for s in steps if "name" in s}
    for check in CHECKS:
        assert named[check]["run"] == f".ci/run {check}", check
        assert "!cancelled()" in named[check]["if"], check  # runs when one before failed
    assert named["tests"]["run"] == ".ci/run tests"


def test_the_gpu_check_without_cuda_says_so_in_one_line_and_exits_0():
    done = subprocess.run(
        [sys.executable, REPO / ".ci/gpu_check.py"],
        capture_output=True,
        text=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "gpu check: no CUDA GPU on this machine (torch.cuda.is_available() is False)"
    ]


@pytest.fixture(scope="module")
def experimented(mnist_raw, tmp_path_factory):
    """A clone whose last commit is a slice run of the pipeline, and whose workspace holds
    a `dvc exp run` of it at another batch size, both in the clone's own store."""
    repo = committed_slice(mnist_raw, tmp_path_factory, tmp_path_factory.mktemp("ci") / "repo")
    env = user_shell() | {"MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"}
    run_ok(*DVC, "exp", "run", "-n", "b100", *committed_sets(mnist_raw, 100), cwd=repo, env=env)
    return repo, env


@pytest.mark.slow
def test_the_report_holds_the_params_and_metrics_diff_of_a_changed_batch_size(experimented):
    repo, env = experimented
    report = repo.parent / "report.md"
    run_ok(repo / ".ci/run", "report", "HEAD", report, cwd=repo, env=env)
    text = report.read_text()
    params = text.split("### Params", 1)[1].split("### Metrics", 1)[0]
    assert re.search(r"\| params\.yaml +\| train\.batch_size +\| 50 +\| 100 +\|", params), params
    metrics = text.split("### Metrics", 1)[1]
    row = r"\| data/metrics/test\.json +\| test_acc +\| 0\.\d+ +\| 0\.\d+ +\| -?0\.\d+ +\|"
    assert re.search(row, metrics), metrics
    assert (repo / "dvc_plots/index.html").is_file()


@pytest.mark.slow
def test_the_readmes_way_back_from_an_experiment_leaves_the_committed_run(experimented):
    """The commands the README gives after `dvc exp run`, run as it spells them."""
    repo, env = experimented
    readme = (REPO / "README.md").read_text()
    way_back = readme.split("<!-- back from an experiment -->", 1)[1].split("```")[1]
    commands = [ln.split("#")[0].strip() for ln in way_back.splitlines()[1:] if ln.strip()]
    assert commands, way_back
    for command in commands:
        run_ok("bash", "-c", command, cwd=repo, env=env)
    assert run_ok("git", "status", "--porcelain", cwd=repo) == ""
    assert "up to date" in run_ok(*DVC, "status", cwd=repo, env=env)


@pytest.mark.slow
def test_an_applied_experiment_published_as_the_readme_says_competes_for_the_champion(
    experimented,
):
    """After the way back (which publishes the committed run from the workspace, so it is
    the champion), the experiment applied and published by the README's command takes the
    alias exactly when its test accuracy is at least the committed run's."""
    repo, env = experimented
    run_ok(*DVC, "exp", "apply", "b100", cwd=repo, env=env)
    readme = (REPO / "README.md").read_text()
    command = re.search(r"`(dvc repro -f -s publish)`", readme)[1]
    said = run_ok("bash", "-c", f"{command} 2>&1", cwd=repo, env=env)
    assert "Running stage 'publish'" in said, said
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    versions = {str(v.version): v for v in client.search_model_versions("name = 'lenet-mnist'")}
    accs = {k: float(v.tags["test_acc"]) for k, v in versions.items()}
    assert sorted(accs) == ["1", "2"], accs  # the committed run's, then the experiment's
    takes = accs["2"] >= accs["1"]
    assert str(client.get_model_version_by_alias("lenet-mnist", "champion").version) == (
        "2" if takes else "1"
    )
    expected = "(the champion)" if takes else "(the champion stays)"
    assert f"lenet-mnist version 2 holds these weights already {expected}" in said, said
