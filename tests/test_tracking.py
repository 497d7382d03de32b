import json
import sqlite3
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from lenet_mnist import tracking

from .conftest import serve_mlflow, train_and_evaluate


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


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` with its own sqlite store and artifact folder."""
    store = f"sqlite:///{tmp_path / 'server.db'}"
    artifacts = str(tmp_path / "artifacts")
    with serve_mlflow(
        "server", "--backend-store-uri", store, "--artifacts-destination", artifacts
    ) as url:
        yield url


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


def test_a_queued_dvc_experiment_logs_to_the_repository_root(monkeypatch, tmp_path):
    """`dvc queue` runs stages in a temporary copy and names the real root in DVC_ROOT."""
    cfg = OmegaConf.create({"logger": {"tracking_uri": "sqlite:///mlflow.db"}})
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert tracking.tracking_uri(cfg) == f"sqlite:///{tmp_path}/mlflow.db"
    cfg.logger.tracking_uri = "sqlite:////elsewhere/m.db"  # absolute paths stay
    assert tracking.tracking_uri(cfg) == "sqlite:////elsewhere/m.db"


def test_artifacts_live_beside_the_sqlite_file_whatever_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path / 'store' / 'm.db'}")
    exp = tracking.experiment_id(client, "lenet-mnist")
    assert tracking.experiment_id(client, "lenet-mnist") == exp  # found, not made twice
    location = client.get_experiment(exp).artifact_location
    assert location == (tmp_path / "store" / "mlruns" / "lenet-mnist").as_uri()


def test_config_hash_follows_what_changes_results_only():
    base = OmegaConf.create(
        {
            "model": {"name": "lenet5"},
            "optimizer": {"lr": 0.001},
            "train": {"batch_size": 64},
            "trainer": {"threads": None, "enable_progress_bar": True},
            "logger": {"tracking_uri": "sqlite:///a.db"},
            "paths": {"prepared": "data/prepared"},
        }
    )
    key = tracking.config_hash(base, "digest")
    quiet = OmegaConf.merge(base, {"trainer": {"enable_progress_bar": False}})
    elsewhere = OmegaConf.merge(base, {"logger": {"tracking_uri": "x"}, "paths": {"prepared": "y"}})
    assert tracking.config_hash(quiet, "digest") == key
    assert tracking.config_hash(elsewhere, "digest") == key
    assert tracking.config_hash(base, "other data") != key
    for change in ({"train": {"batch_size": 32}}, {"trainer": {"threads": 1}}):
        assert tracking.config_hash(OmegaConf.merge(base, change), "digest") != key


def test_retry_locked_outlasts_a_real_sqlite_lock(tmp_path):
    """Another process holds the write lock; a writer with a short timeout fails, then retries."""
    db = tmp_path / "m.db"
    with sqlite3.connect(db) as c:
        c.execute("create table t (x)")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1]);"
            "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(1.5)",
            str(db),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    failures = []

    def write() -> int:
        try:
            with sqlite3.connect(db, timeout=0.05) as c:
                return c.execute("insert into t values (1)").rowcount
        except sqlite3.OperationalError as err:
            failures.append(str(err))
            raise

    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        tracking.retry_locked(write, attempts=1)
    assert tracking.retry_locked(write) == 1
    assert len(failures) >= 2 and set(failures) == {"database is locked"}
    holder.wait()


class LateClient(MlflowClient):
    """A real client that looks the experiment up a moment before another process makes it.

    The race itself cannot be caused on demand; this reproduces its order of events
    against a real sqlite store: the lookup finds nothing, a second client creates the
    experiment, and then this client's own create meets MLflow's real "already exists".
    """

    def get_experiment_by_name(self, name):
        found = super().get_experiment_by_name(name)
        if found is None and not getattr(self, "raced", False):
            self.raced = True
            self.theirs = MlflowClient(self.tracking_uri).create_experiment(name)
        return found


def test_an_experiment_made_by_another_process_meanwhile_is_used_not_fatal(tmp_path):
    client = LateClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert tracking.experiment_id(client, "lenet-mnist") == client.theirs
