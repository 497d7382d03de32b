"""Every MLflow write goes through here: where runs live, and the TrackedRun that writes one.
Publish finds train's run by the weights' SHA-256, so no run id goes into a file DVC hashes."""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import sqlite3
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import psutil
from filelock import FileLock
from mlflow.entities import Experiment, Metric, Param
from mlflow.tracking import MlflowClient

from lenet_mnist import errors
from lenet_mnist.config.schema import LoggerConfig
from lenet_mnist.tracking import ui

WEIGHTS_TAG = "weights_sha256"
CONFIG_TAG = "config_hash"
PARENT_TAG = "mlflow.parentRunId"  # how the MLflow UI nests a child under its parent
SWEEP_TAG = "sweep_key"  # on a sweep's parent: a hash of the overrides that define it
OVERRIDES_TAG = "sweep_overrides"
JOB_TAG = "sweep_job"  # on a child: its own overrides, the point of the grid it stands for
COMPLETE_TAG = "sweep_job_complete"  # a sweep job's last act: a child without it was cut off
MACHINE_TAG = "machine"  # the CPU or GPU that computed a run (lenet_mnist.tracking.provenance)
HOST_TAG, PID_TAG = "host", "pid"  # the process that writes a run, to tell when it died
SQLITE = "sqlite:///"
T = TypeVar("T")
_answered: set[str] = set()  # tracking servers that answered in this process
_ready: set[str] = set()  # sqlite stores this process has found initialized
_patience_s = [30.0]  # a busy store's wait: logger.timeout_s of this process's client()


def tracking_uri(cfg: LoggerConfig) -> str:
    """MLFLOW_TRACKING_URI wins over the config; a relative sqlite path is taken from DVC_ROOT,
    as `dvc queue` runs stages in a temporary copy whose own mlflow.db would be thrown away."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or cfg.tracking_uri
    root = os.environ.get("DVC_ROOT")
    if root and uri.startswith(SQLITE) and not uri.startswith(SQLITE + "/"):
        return SQLITE + str(Path(root) / uri.removeprefix(SQLITE))
    return uri


def client(cfg: LoggerConfig) -> MlflowClient:
    """A client for the configured store, once a tracking server, if that is what it is,
    has answered: MLflow itself would retry an unreachable server for minutes."""
    uri = tracking_uri(cfg)
    _patience_s[0] = cfg.timeout_s
    if uri.startswith(("http://", "https://")) and uri not in _answered:
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=cfg.timeout_s).close()
        except (OSError, ValueError) as err:
            raise errors.UnavailableError(
                f"MLflow tracking server {uri} did not answer within {cfg.timeout_s:g} s ("
                f"{getattr(err, 'reason', err)}); start it, or unset MLFLOW_TRACKING_URI to "
                f"record in {cfg.tracking_uri} (logger.timeout_s sets the wait)"
            ) from None
        _answered.add(uri)
    return open_store(uri)


def open_store(uri: str) -> MlflowClient:
    """A client whose sqlite store has its tables: two processes that create one at once break
    each other's migration, so the first use takes a lock per database file, and is retried
    while a process that takes no lock (`mlflow ui`) finishes its own."""
    errors.store_uri = uri
    if not uri.startswith(SQLITE) or uri in _ready:
        return MlflowClient(uri)
    path = os.path.abspath(uri.removeprefix(SQLITE))
    if _not_sqlite(path):
        raise sqlite3.DatabaseError("file is not a database")
    name = hashlib.sha256(path.encode()).hexdigest()[:16]
    with FileLock(Path(tempfile.gettempdir()) / f"lenet-mnist-store-{name}.lock"):
        mlflow = _retry(lambda: MlflowClient(uri), _initializing)  # the client opens the store
    _ready.add(uri)
    return mlflow


def _not_sqlite(path: str) -> bool:
    """A folder, or a file neither empty (new) nor sqlite's: MLflow would retry it for
    minutes."""
    if not os.path.isfile(path):
        return os.path.isdir(path)
    with open(path, "rb") as db:
        return db.read(16) not in (b"", b"SQLite format 3\0")


def _initializing(err: Exception) -> bool:
    """Whether an error is what another process's creation of the store looks like."""
    signs = ("database is locked", "already exists", "migration", "no such table")
    return any(sign in str(err) for sign in signs)


def retry_locked(call: Callable[[], T]) -> T:
    """`call` again while sqlite answers "database is locked": sweep jobs, `mlflow gc` and
    the UI share one sqlite file, and sqlite itself waits only 5 s."""
    return _retry(call, lambda err: "database is locked" in str(err))


def _retry(call: Callable[[], T], passing: Callable[[BaseException], bool]) -> T:
    """`call` again, after a growing pause, while it fails in a `passing` way, for up to
    logger.timeout_s; then the error, which the boundary names (lenet_mnist.errors)."""
    deadline = time.monotonic() + _patience_s[0]
    pause = 0.2
    while True:
        try:
            return call()
        except Exception as err:  # MLflow wraps sqlite's OperationalError in its own types
            if not passing(err):
                raise
            if time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(2 * pause, 2.0)


def experiment_id(mlflow: MlflowClient, name: str) -> str:
    """The experiment's id, created on first use, with the saved runs view (lenet_mnist.
    tracking.ui) in its tags, added to one found too, so links work for an older store."""
    experiment = retry_locked(lambda: mlflow.get_experiment_by_name(name))
    if experiment is None:
        experiment = _create_experiment(mlflow, name)
    view = ui.runs_view(experiment.creation_time or 0)
    if experiment.tags.get(ui.VIEW_TAG) != view:
        retry_locked(lambda: mlflow.set_experiment_tag(experiment.experiment_id, ui.VIEW_TAG, view))
    return experiment.experiment_id


def _create_experiment(mlflow: MlflowClient, name: str) -> Experiment:
    """With a sqlite store, artifacts go to mlruns/ beside the database file, not MLflow's
    default mlruns/ in the current folder (for `dvc queue`, a copy deleted afterwards)."""
    uri, location = mlflow.tracking_uri, None
    if uri.startswith(SQLITE):
        location = (Path(uri.removeprefix(SQLITE)).resolve().parent / "mlruns" / name).as_uri()
    try:
        made = retry_locked(lambda: mlflow.create_experiment(name, artifact_location=location))
        return retry_locked(lambda: mlflow.get_experiment(made))
    except Exception as err:  # another process created it first: use theirs
        if "already exists" not in str(err):
            raise
        return retry_locked(lambda: mlflow.get_experiment_by_name(name))


class TrackedRun:
    """One MLflow run, each write retried; as a context manager it closes the run FINISHED,
    or FAILED (KILLED on Ctrl-C or a signal) when the block raises."""

    def __init__(self, mlflow: MlflowClient, run_id: str) -> None:
        self.mlflow, self.run_id = mlflow, run_id

    @classmethod
    def create(
        cls, mlflow: MlflowClient, experiment_name: str, run_name: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> TrackedRun:  # fmt: skip
        experiment = experiment_id(mlflow, experiment_name)
        close_dead_runs(mlflow, experiment)
        tags = {**(tags or {}), **writer_tags()}
        run = retry_locked(lambda: mlflow.create_run(experiment, run_name=run_name, tags=tags))
        return cls(mlflow, run.info.run_id)

    def params(self, values: dict[str, Any]) -> None:
        params = [Param(k, str(v)) for k, v in values.items()]
        retry_locked(lambda: self.mlflow.log_batch(self.run_id, params=params))

    def metrics(self, values: dict[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in values.items()]
        retry_locked(lambda: self.mlflow.log_batch(self.run_id, metrics=metrics))

    def tag(self, key: str, value: str) -> None:
        retry_locked(lambda: self.mlflow.set_tag(self.run_id, key, value))

    def artifacts(self, *paths: Path) -> None:
        for path in paths:
            retry_locked(lambda p=path: self.mlflow.log_artifact(self.run_id, str(p)))

    def status(self) -> str:
        return retry_locked(lambda: self.mlflow.get_run(self.run_id)).info.status

    @functools.cached_property  # asked once: a run never moves to another experiment
    def experiment(self) -> str:
        return retry_locked(lambda: self.mlflow.get_run(self.run_id)).info.experiment_id

    def where(self, stage: str) -> str:
        return ui.where(stage, self.mlflow.tracking_uri, self.experiment, self.run_id)

    def reopen(self) -> None:
        """RUNNING again, now written by this process."""
        retry_locked(lambda: self.mlflow.update_run(self.run_id, "RUNNING"))
        for key, value in writer_tags().items():
            self.tag(key, value)

    def close(self, status: str = "FINISHED") -> None:
        retry_locked(lambda: self.mlflow.set_terminated(self.run_id, status))

    def __enter__(self) -> TrackedRun:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.close("KILLED" if issubclass(kind, KeyboardInterrupt) else "FAILED")


def close_dead_runs(mlflow: MlflowClient, experiment: str) -> None:
    """Mark KILLED the RUNNING runs whose process on this host is gone (`kill -9`, a crash),
    which could not close its own run."""
    query = f"attributes.status = 'RUNNING' and tags.{HOST_TAG} = '{socket.gethostname()}'"
    for run in newest(mlflow, experiment, query):
        if writer_gone(run.data.tags):
            TrackedRun(mlflow, run.info.run_id).close("KILLED")


def writer_tags() -> dict[str, str]:
    """The process that writes a run or a model, for `writer_gone`."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def writer_gone(tags: dict[str, str]) -> bool:
    """Whether the writer that `tags` name ran on this host and no longer exists."""
    pid = tags.get(PID_TAG, "")
    here = tags.get(HOST_TAG) == socket.gethostname()
    return here and pid.isdigit() and int(pid) > 0 and not psutil.pid_exists(int(pid))


def find_run(mlflow: MlflowClient, experiment_name: str, weights_sha256: str) -> str | None:
    """The newest run that trained exactly these weights, or None."""
    experiment = retry_locked(lambda: mlflow.get_experiment_by_name(experiment_name))
    if experiment is None:
        return None
    query = f"tags.{WEIGHTS_TAG} = '{weights_sha256}'"
    runs = newest(mlflow, experiment.experiment_id, query, limit=1)
    return runs[0].info.run_id if runs else None


def newest(mlflow: MlflowClient, experiment: str, query: str, limit: int = 10_000) -> list[Any]:
    """The experiment's runs that match an MLflow filter string, newest first."""
    return retry_locked(
        lambda: mlflow.search_runs(
            [experiment], query, order_by=["attributes.start_time DESC"], max_results=limit
        )
    )


def children(mlflow: MlflowClient, parent: str, extra: str = "") -> list[Any]:
    """The parent's children, newest first; `extra` adds conditions to the filter."""
    experiment = TrackedRun(mlflow, parent).experiment
    return newest(mlflow, experiment, f"tags.`{PARENT_TAG}` = '{parent}'{extra}")
