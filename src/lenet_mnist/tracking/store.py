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
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import psutil
from filelock import FileLock
from mlflow.entities import Metric, Param, RunTag
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
INITIALIZING = ("already exists", "migration", "no such table")  # another's store creation


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
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=cfg.timeout_s).close()
        except (OSError, ValueError) as err:
            raise errors.UnavailableError(
                f"MLflow tracking server {uri} did not answer within {cfg.timeout_s:g} s ("
                f"{getattr(err, 'reason', err)}); start it, or unset MLFLOW_TRACKING_URI to "
                f"record in {cfg.tracking_uri} (logger.timeout_s sets the wait)"
            ) from None
    return open_store(uri, cfg.timeout_s)


def open_store(uri: str, timeout_s: float = 30.0) -> MlflowClient:
    """A client whose sqlite store has its tables and whose sqlite waits up to `timeout_s` for
    another writer (sweep jobs, `mlflow gc`, the UI). Two processes that create a store at
    once break each other's migration, so opening takes a lock per database file, and is
    retried while a process that takes no lock (`mlflow ui`) finishes its own."""
    errors.store_uri = uri
    if not uri.startswith(SQLITE):
        return MlflowClient(uri)
    path = os.path.abspath(uri.removeprefix(SQLITE))
    if _not_sqlite(path):
        raise sqlite3.DatabaseError("file is not a database")
    name = hashlib.sha256(path.encode()).hexdigest()[:16]
    deadline = time.monotonic() + timeout_s
    with FileLock(Path(tempfile.gettempdir()) / f"lenet-mnist-store-{name}.lock"):
        while True:
            try:  # SQLAlchemy hands the URI's timeout to sqlite3.connect: its busy wait
                return MlflowClient(f"{uri}?timeout={timeout_s:g}")
            except Exception as err:  # MLflow wraps sqlite's errors in its own types
                if not any(s in str(err) for s in INITIALIZING) or time.monotonic() > deadline:
                    raise
            time.sleep(0.5)


def _not_sqlite(path: str) -> bool:
    """A folder, or a file neither empty (new) nor sqlite's: MLflow would retry it for minutes."""
    if not os.path.isfile(path):
        return os.path.isdir(path)
    with open(path, "rb") as db:
        return db.read(16) not in (b"", b"SQLite format 3\0")


@contextmanager
def made_meanwhile() -> Iterator[None]:
    """MLflow looks a name up, then creates it: another process's create in between is let be."""
    try:
        yield
    except Exception as err:  # MLflow's words, or sqlite's IntegrityError wrapped in its types
        if not any(s in str(err) for s in ("already exists", "UNIQUE constraint failed")):
            raise


def experiment_id(mlflow: MlflowClient, name: str) -> str:
    """The experiment's id, created on first use, with the saved runs view (lenet_mnist.
    tracking.ui) in its tags, added to one found too, so links work for an older store."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        # A sqlite store keeps artifacts in mlruns/ beside its file, not in MLflow's default
        # mlruns/ of the current folder (for `dvc queue`, a copy deleted afterwards).
        uri, location = mlflow.tracking_uri, None
        if uri.startswith(SQLITE):  # past open_store's ?timeout=
            path = Path(uri.removeprefix(SQLITE).partition("?")[0])
            location = (path.resolve().parent / "mlruns" / name).as_uri()
        with made_meanwhile():  # another process created it first: use theirs
            mlflow.create_experiment(name, artifact_location=location)
        experiment = mlflow.get_experiment_by_name(name)
    view = ui.runs_view(experiment.creation_time or 0)
    if experiment.tags.get(ui.VIEW_TAG) != view:
        mlflow.set_experiment_tag(experiment.experiment_id, ui.VIEW_TAG, view)
    return experiment.experiment_id


class TrackedRun(AbstractContextManager):
    """One MLflow run; a context manager that closes it FINISHED, or FAILED (KILLED on a signal)."""

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
        run = mlflow.create_run(experiment, run_name=run_name, tags=tags)
        return cls(mlflow, run.info.run_id)

    def params(self, values: dict[str, Any]) -> None:
        self.mlflow.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in values.items()])

    def metrics(self, values: dict[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in values.items()]
        self.mlflow.log_batch(self.run_id, metrics=metrics)

    def tag(self, key: str, value: str) -> None:
        self.mlflow.set_tag(self.run_id, key, value)

    def artifacts(self, *paths: Path) -> None:
        for path in paths:
            self.mlflow.log_artifact(self.run_id, str(path))

    def status(self) -> str:
        return self.mlflow.get_run(self.run_id).info.status

    @functools.cached_property  # asked once: a run never moves to another experiment
    def experiment(self) -> str:
        return self.mlflow.get_run(self.run_id).info.experiment_id

    def where(self, stage: str) -> str:
        return ui.where(stage, self.mlflow.tracking_uri, self.experiment, self.run_id)

    def reopen(self) -> None:
        """RUNNING again, now written by this process."""
        self.mlflow.update_run(self.run_id, "RUNNING")
        self.mlflow.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in writer_tags().items()])

    def close(self, status: str = "FINISHED") -> None:
        self.mlflow.set_terminated(self.run_id, status)

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self.close()
        else:
            self.close("KILLED" if issubclass(kind, KeyboardInterrupt) else "FAILED")


def close_dead_runs(mlflow: MlflowClient, experiment: str) -> None:
    """Mark KILLED the RUNNING runs whose process on this host is gone (`kill -9`, a crash)."""
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


def newest_run(mlflow: MlflowClient, experiment_name: str, query: str) -> str | None:
    """The id of the newest run of the experiment that matches `query`, or None."""
    experiment = mlflow.get_experiment_by_name(experiment_name)
    runs = experiment and newest(mlflow, experiment.experiment_id, query, limit=1)
    return runs[0].info.run_id if runs else None


def newest(mlflow: MlflowClient, experiment: str, query: str, limit: int = 10_000) -> list[Any]:
    """The experiment's runs that match an MLflow filter string, newest first."""
    return mlflow.search_runs(
        [experiment], query, order_by=["attributes.start_time DESC"], max_results=limit
    )


def children(mlflow: MlflowClient, parent: str, extra: str = "") -> list[Any]:
    """The parent's children, newest first; `extra` adds conditions to the filter."""
    experiment = TrackedRun(mlflow, parent).experiment
    return newest(mlflow, experiment, f"tags.`{PARENT_TAG}` = '{parent}'{extra}")
