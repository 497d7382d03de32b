"""Links into the MLflow UI: the server's own, or the local `mlflow ui` for a store."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from lenet_mnist.tracking import ui
from tests.conftest import NO_JOB_RUNNER, REPO, run_ok, user_shell


@pytest.mark.parametrize(
    ("uri", "base"),
    [
        ("sqlite:///mlflow.db", "http://127.0.0.1:5000"),
        ("sqlite:////abs/path/m.db", "http://127.0.0.1:5000"),
        ("http://10.0.0.5:8080/", "http://10.0.0.5:8080"),
        ("https://user:secret@mlflow.example.org/team/", "https://mlflow.example.org/team"),
        ("http://[::1]:5001", "http://[::1]:5001"),
    ],
)
def test_ui_links_name_the_server_or_the_local_mlflow_ui(uri, base):
    assert ui.where("train", uri, "3", "abc").splitlines()[0] == (
        f"train: MLflow run abc: {base}/#/experiments/3/runs/abc?workflowType=machine_learning"
    )
    assert ui.experiment_url(uri, "3") == (
        f"{base}/#/experiments/3/runs?workflowType=machine_learning&viewStateShareKey=lenet-runs"
    )


def test_only_a_store_without_a_server_needs_mlflow_ui_started():
    assert ui.ui_command("sqlite:///mlflow.db") == (
        "mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1"
    )
    assert ui.ui_command("http://127.0.0.1:5000") is None


def test_the_ui_command_names_a_store_in_the_working_folder_relative_to_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ui.ui_command(f"sqlite:///{tmp_path}/sub/mlflow.db") == (
        "mlflow ui --backend-store-uri sqlite:///sub/mlflow.db --host 127.0.0.1"
    )


def test_the_ui_command_quotes_a_store_path_with_a_space(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ui.ui_command("sqlite:////elsewhere/my runs/mlflow.db") == (
        "mlflow ui --backend-store-uri 'sqlite:////elsewhere/my runs/mlflow.db' --host 127.0.0.1"
    )


def test_a_stage_ends_with_its_run_page_the_runs_table_and_how_to_open_them():
    lines = ui.where("train", "sqlite:///mlflow.db", "1", "abc").splitlines()
    assert lines == [
        "train: MLflow run abc: http://127.0.0.1:5000/#/experiments/1/runs/abc"
        "?workflowType=machine_learning",
        "train: all runs: http://127.0.0.1:5000/#/experiments/1/runs"
        "?workflowType=machine_learning&viewStateShareKey=lenet-runs",
        "train: start the UI first: mlflow ui --backend-store-uri sqlite:///mlflow.db"
        " --host 127.0.0.1",
    ]
    assert len(ui.where("evaluate", "http://10.0.0.5:8080", "1", "abc").splitlines()) == 2


_PRINT_WHERE = """
from lenet_mnist.config import parse
from lenet_mnist.tracking import store
cfg = parse.load("params.yaml")
print(store.TrackedRun.create(store.client(cfg.logger), cfg.logger.experiment_name).where("train"))
"""


@pytest.mark.slow
def test_the_printed_ui_command_pasted_in_a_clone_whose_path_has_a_space_serves_the_run(
    tmp_path,
):
    """What a stage prints, pasted into a shell in the clone (with a free port added, so
    that tests running side by side do not meet on the default one, and without MLflow's
    job runner, as NO_JOB_RUNNER says)."""
    clone = tmp_path / "my runs" / "repo"
    clone.mkdir(parents=True)
    (clone / "params.yaml").write_bytes((REPO / "params.yaml").read_bytes())
    env = user_shell()
    env |= NO_JOB_RUNNER
    printed = run_ok(sys.executable, "-c", _PRINT_WHERE, cwd=clone, env=env)
    run_id = re.search(r"MLflow run (\w+): ", printed)[1]
    (command,) = [ln.split("start the UI first: ", 1)[1] for ln in printed.splitlines()[2:]]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pasted = f"{command} --port {port} --workers 1"
    ui = subprocess.Popen(["bash", "-c", pasted], cwd=clone, env=env, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/get?run_id={run_id}"
        for _ in range(240):
            assert ui.poll() is None, f"{pasted!r} ended with {ui.returncode}"
            try:
                with urllib.request.urlopen(url, timeout=1) as answer:
                    assert json.load(answer)["run"]["info"]["run_id"] == run_id
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"{pasted!r} never answered")
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)
