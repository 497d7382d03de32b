"""Where MLflow runs live, and the TrackedRun that writes them, against real stores."""

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from mlflow.tracking import MlflowClient

from lenet_mnist.config.schema import LoggerConfig
from lenet_mnist.errors import PipelineError, exit_on_error
from lenet_mnist.tracking import store, ui
from tests.conftest import (
    SLICE,
    mlflow_runs,
    new_store,
    serve_mlflow,
    stage_folder,
    train_evaluate_publish,
    write_params,
)


def test_env_tracking_uri_wins_over_the_config(monkeypatch):
    cfg = LoggerConfig("lenet-mnist", "sqlite:///mlflow.db", 5)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert store.tracking_uri(cfg) == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert store.tracking_uri(cfg) == "http://127.0.0.1:5000"


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` with its own sqlite store and artifact folder."""
    store = new_store(tmp_path / "server")
    artifacts = str(tmp_path / "artifacts")
    with serve_mlflow(
        "server", "--backend-store-uri", store, "--artifacts-destination", artifacts
    ) as url:
        yield url


@pytest.mark.slow
def test_runs_go_to_a_tracking_server_when_the_env_says_so(mlflow_server, prepared_slice, tmp_path):
    prepared, p = prepared_slice
    data = train_evaluate_publish(prepared, p, tmp_path, {"MLFLOW_TRACKING_URI": mlflow_server})
    client, (run,) = mlflow_runs(mlflow_server)
    test = json.loads((data / "metrics/test.json").read_text())
    assert run.data.metrics["test_acc"] == test["test_acc"]
    assert "weights.safetensors" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_a_queued_dvc_experiment_logs_to_the_repository_root(monkeypatch, tmp_path):
    """`dvc queue` runs stages in a temporary copy and names the real root in DVC_ROOT."""
    cfg = LoggerConfig("lenet-mnist", "sqlite:///mlflow.db", 5)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert store.tracking_uri(cfg) == f"sqlite:///{tmp_path}/mlflow.db"
    cfg.tracking_uri = "sqlite:////elsewhere/m.db"  # absolute paths stay
    assert store.tracking_uri(cfg) == "sqlite:////elsewhere/m.db"


def test_artifacts_live_beside_the_sqlite_file_whatever_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path / 'store' / 'm.db'}")
    exp = store.experiment_id(client, "lenet-mnist")
    assert store.experiment_id(client, "lenet-mnist") == exp  # found, not made twice
    location = client.get_experiment(exp).artifact_location
    assert location == (tmp_path / "store" / "mlruns" / "lenet-mnist").as_uri()


def test_every_experiment_carries_the_saved_runs_view_once(tmp_path):
    """Made or found, the experiment holds the view the links open; an unchanged one is kept."""
    client = MlflowClient(new_store(tmp_path))
    exp = store.experiment_id(client, "lenet-mnist")
    envelope = json.loads(client.get_experiment(exp).tags[ui.VIEW_TAG])
    assert envelope["name"] == ui.VIEW_NAME
    assert envelope["createdAt"] == client.get_experiment(exp).creation_time
    columns = json.loads(envelope["state"])["selectedColumns"]
    assert "params.`train.batch_size`" in columns and "metrics.`test_acc`" in columns
    client.set_experiment_tag(exp, ui.VIEW_TAG, "stale")  # an older store's, say
    assert store.experiment_id(client, "lenet-mnist") == exp
    assert json.loads(client.get_experiment(exp).tags[ui.VIEW_TAG]) == envelope

    class Counting(MlflowClient):
        writes = 0

        def set_experiment_tag(self, *args):
            Counting.writes += 1
            super().set_experiment_tag(*args)

    store.experiment_id(Counting(client.tracking_uri), "lenet-mnist")
    assert Counting.writes == 0


def test_a_store_locked_past_the_timeout_fails_with_the_busy_line(tmp_path, capsys):
    """sqlite's own wait, which open_store sets to the timeout, ends in the boundary's line."""
    db = new_store(tmp_path)
    started = time.monotonic()
    with _locked(db), pytest.raises(SystemExit) as ended:
        exit_on_error(lambda: store.TrackedRun.create(store.open_store(db, 0.5), "lenet-mnist"))
    assert time.monotonic() - started < 5
    line = capsys.readouterr().err.strip()
    assert ended.value.code == 1 and "is busy (database is locked)" in line
    assert line.endswith("run again once it is done, or raise logger.timeout_s")


def test_printed_links_leave_out_the_busy_wait(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = store.TrackedRun.create(store.open_store("sqlite:///mlflow.db", 7), "lenet-mnist")
    assert "timeout" not in run.where("train")
    assert "?" not in run.mlflow.get_experiment(run.experiment).artifact_location


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


OPEN_AT = """
import sys, time
from lenet_mnist.tracking import store
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
print(store.open_store(sys.argv[1]).create_experiment(sys.argv[3]))
"""


def test_processes_that_create_one_new_store_at_once_all_get_it(tmp_path):
    """MLflow migrates a new sqlite store on first use; two migrations at once break.
    Two new stores, three processes racing for each, all six starting at one moment."""
    uris = [f"sqlite:///{tmp_path / f'new{attempt}.db'}" for attempt in range(2)]
    start = str(time.time() + 10)  # past the imports of every process
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AT, uri, start, f"e{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for uri in uris
        for i in range(3)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [err[-2000:] for _, err in outs]
    for uri in uris:
        names = {e.name for e in MlflowClient(uri).search_experiments()}
        assert {"e0", "e1", "e2"} <= names


def test_an_experiment_made_by_another_process_meanwhile_is_used_not_fatal(tmp_path):
    client = LateClient(new_store(tmp_path))
    assert store.experiment_id(client, "lenet-mnist") == client.theirs


def _recorded(tmp_path, fail: BaseException | None):
    mlflow = MlflowClient(new_store(tmp_path))
    try:
        with store.TrackedRun.create(mlflow, "lenet-mnist", "r", {"k": "v"}) as run:
            run.params({"train.batch_size": 64, "trainer.threads": None})
            run.metrics({"val_acc": 0.5}, step=10)
            run.metrics({"val_acc": 0.75}, step=20)
            if fail is not None:
                raise fail
    except BaseException as err:
        assert err is fail
    return mlflow.get_run(run.run_id), mlflow


def test_a_recorder_writes_params_metrics_per_step_and_closes_finished(tmp_path):
    run, mlflow = _recorded(tmp_path, None)
    assert run.info.status == "FINISHED" and run.data.tags["k"] == "v"
    assert run.data.params == {"train.batch_size": "64", "trainer.threads": "None"}
    history = mlflow.get_metric_history(run.info.run_id, "val_acc")
    assert [(m.step, m.value) for m in history] == [(10, 0.5), (20, 0.75)]


@pytest.mark.parametrize(
    ("fault", "status"),
    [(OSError("No space left on device"), "FAILED"), (KeyboardInterrupt(), "KILLED")],
)
def test_a_recorder_closes_a_run_that_raised_as_failed_or_killed(tmp_path, fault, status):
    run, _ = _recorded(tmp_path, fault)
    assert run.info.status == status


def test_an_unreachable_tracking_server_is_one_line_in_seconds(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    cfg = LoggerConfig("lenet-mnist", "sqlite:///mlflow.db", timeout_s=2)
    with pytest.raises(PipelineError) as err:
        store.client(cfg)
    assert str(err.value).startswith(
        "MLflow tracking server http://127.0.0.1:9 did not answer within 2 s"
    )
    assert "unset MLFLOW_TRACKING_URI to record in sqlite:///mlflow.db" in str(err.value)


@pytest.mark.slow
def test_a_run_left_running_by_kill_9_is_marked_killed_by_the_next_start(prepared_slice, tmp_path):
    folder = stage_folder(tmp_path, prepared_slice[0], trainer__compile=False, train__epochs=20)
    db = folder.db
    proc = folder.start("train")
    deadline = time.monotonic() + 300
    while not (running := _running_runs(db)):
        assert proc.poll() is None and time.monotonic() < deadline, "training never started"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    client = MlflowClient(db)
    assert client.get_run(running[0]).info.status == "RUNNING"  # nobody closed it
    write_params(folder.params, **{**SLICE, "trainer__compile": False, "train__epochs": 1})
    done = folder.run("train")
    assert done.returncode == 0, done.stderr[-3000:]
    assert client.get_run(running[0]).info.status == "KILLED"


def _running_runs(db: str) -> list[str]:
    return [r.info.run_id for r in mlflow_runs(db)[1] if r.info.status == "RUNNING"]


@contextmanager
def _locked(db: str, seconds: float = 600) -> Iterator[None]:
    """Another process holds the store's write lock for `seconds`, as `mlflow gc` does."""
    path = db.removeprefix(store.SQLITE)
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import sqlite3, time; c = sqlite3.connect({path!r}, "
         "isolation_level=None); c.execute('BEGIN EXCLUSIVE'); print(1, flush=True); "
         f"time.sleep({seconds})"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "1"
    try:
        yield
    finally:
        holder.kill()
        holder.wait()


def test_a_store_locked_for_less_than_the_timeout_is_waited_out(tmp_path, capfd):
    db = new_store(tmp_path)  # a store that exists, its tables made
    cfg = LoggerConfig("lenet-mnist", db, timeout_s=20)
    held = 6.0  # longer than one of sqlite's own waits (5 s), shorter than the timeout
    started = time.monotonic()
    with _locked(db, held):
        mlflow = store.client(cfg)
        store.TrackedRun.create(mlflow, "lenet-mnist")
    assert time.monotonic() - started >= held - 1
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.slow
def test_a_store_locked_for_longer_stops_train_with_one_line(prepared_slice, tmp_path):
    folder = stage_folder(tmp_path, prepared_slice[0], logger__timeout_s=1)
    MlflowClient(folder.db).search_experiments()
    started = time.monotonic()
    with _locked(folder.db):
        done = folder.run("train")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "ERROR mlflow" not in done.stderr  # MLflow's log of each failed try
    banner = ("GPU available", "TPU available")  # Lightning's, as in every training
    lines = [x for x in done.stderr.splitlines() if x.strip() and not x.startswith(banner)]
    assert len(lines) == 1, done.stderr
    (line,) = lines
    assert line.startswith(f"error: the MLflow store {folder.db} is busy (database is locked)")
    assert line.endswith("run again once it is done, or raise logger.timeout_s")
    assert time.monotonic() - started < 60
    assert sorted(x.name for x in folder.data.iterdir()) == ["prepared"]
