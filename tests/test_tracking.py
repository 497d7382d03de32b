import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from lenet_mnist import tracking

from .conftest import train_and_evaluate


def test_env_tracking_uri_wins_over_the_config(monkeypatch):
    cfg = OmegaConf.create({"logger": {"tracking_uri": "sqlite:///mlflow.db"}})
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri(cfg) == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri(cfg) == "http://127.0.0.1:5000"


def test_flat_params_use_override_spelling():
    cfg = OmegaConf.create({"train": {"batch_size": 64, "epochs": 10}, "data": {"m": [1, 2]}})
    assert tracking.flat_params(cfg) == {
        "train.batch_size": 64,
        "train.epochs": 10,
        "data.m": [1, 2],
    }


def test_dvc_lock_hash_reads_the_stage_output(tmp_path):
    lock = tmp_path / "dvc.lock"
    lock.write_text(
        "schema: '2.0'\nstages:\n  prepare:\n    outs:\n    - path: data/prepared\n"
        "      md5: abc.dir\n"
    )
    assert tracking.dvc_lock_hash("prepare", "data/prepared", lock) == "abc.dir"
    assert tracking.dvc_lock_hash("train", "data/model", lock) == "unknown"
    assert tracking.dvc_lock_hash("prepare", "x", tmp_path / "missing.lock") == "unknown"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 with its own sqlite store and artifact folder."""
    port = _free_port()
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent))
    proc = subprocess.Popen(
        [
            mlflow,
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_runs_go_to_a_tracking_server_when_the_env_says_so(mlflow_server, prepared_slice, tmp_path):
    prepared, p = prepared_slice
    data = train_and_evaluate(prepared, p, tmp_path, {"MLFLOW_TRACKING_URI": mlflow_server})
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("lenet-mnist")
    (run,) = client.search_runs([exp.experiment_id])
    test = json.loads((data / "metrics/test.json").read_text())
    assert run.data.metrics["test_acc"] == test["test_acc"]
    assert "weights.safetensors" in {a.path for a in client.list_artifacts(run.info.run_id)}
