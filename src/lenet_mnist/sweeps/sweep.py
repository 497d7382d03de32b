"""A sweep in MLflow: one parent run per grid, one child per point, resumable.

Each point of a `python -m lenet_mnist.run -m ...` grid is one Hydra job and one MLflow
child run under one parent run per sweep. The parent is found again by the sweep's
overrides, so the same command started again after an interruption reuses it, and each
job first looks under it for a complete child with its config hash: finished points are
skipped unless `force=true`. When the sweep ends, the report (lenet_mnist.study.report) is
written to the sweep folder and attached to the parent.

Folders are named the way runs are found again: a sweep's by its sweep key (conf/config.yaml
`sweep_key`), a job's by its grid point (`sweep_point`). So a resumed sweep writes
into the folder of its first start, next to the outputs of the jobs it skips, whatever
order the grid was typed in, and two different sweeps never share a folder.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from lenet_mnist.config.grid import as_typed, defining, search_overrides, sweep_key
from lenet_mnist.config.parse import Config, validate
from lenet_mnist.data import prepare
from lenet_mnist.errors import exit_on_error
from lenet_mnist.study import report
from lenet_mnist.sweeps import stop
from lenet_mnist.sweeps.folders import OutputFolders, writable
from lenet_mnist.tracking import store

log = logging.getLogger(__name__)

# The parent's run id reaches the jobs through the environment, which both the in-process
# launcher and the process-based ones (joblib, submitit) hand on to their jobs.
PARENT_ENV = "LENET_MNIST_SWEEP_PARENT"


def mark_failed(cfg: DictConfig, job: str) -> None:
    """Mark a failed job's unfinished run and its sweep's parent FAILED.

    Hydra ends a sweep with a failed job without calling on_multirun_end, which would
    otherwise leave the parent, and a run cut off by the failure, RUNNING in the MLflow
    UI for good. A run closed as FINISHED before a later step failed lacks the COMPLETE
    tag, so it is marked too. This runs in the job's own process under any launcher, so
    it uses nothing but the config and the environment; the config may be the one that
    failed validation, so only its logger group is read.
    """
    parent = os.environ.get(PARENT_ENV)
    if parent is None:  # a single run, not a sweep: its own run closed itself
        return
    mlflow = store.open_store(store.tracking_uri(cfg.logger))
    for run in store.children(mlflow, parent):  # filtered here: overrides may hold quotes
        tags = run.data.tags
        unfinished = store.COMPLETE_TAG not in tags and run.info.status != "KILLED"
        if tags.get(store.JOB_TAG) == job and unfinished:
            store.TrackedRun(mlflow, run.info.run_id).close("FAILED")
    store.TrackedRun(mlflow, parent).close("FAILED")
    log.error(
        "job %s failed; MLflow parent run %s marked FAILED. Once the cause is fixed, run the "
        "same command again: it resumes the sweep and writes the report",
        job,
        parent,
    )


def previous_child(mlflow: MlflowClient, parent: str, key: str) -> Run | None:
    """The newest complete child with this config, after marking interrupted ones as killed."""
    done = None
    for run in store.children(mlflow, parent, f" and tags.{store.CONFIG_TAG} = '{key}'"):
        if run.data.tags.get(store.COMPLETE_TAG) == "true":
            done = done or run
        elif run.info.status == "RUNNING":
            store.TrackedRun(mlflow, run.info.run_id).close("KILLED")
    return done


def job_label(overrides: Iterable[str]) -> str:
    """A job's point of the grid, as its run's JOB_TAG holds it and the report keys it."""
    return " ".join(defining(overrides))


def sweep_overrides(cfg: DictConfig) -> list[str]:
    """What defines the sweep whose config this is (see `search_overrides`)."""
    sweeper, objective = OmegaConf.select(cfg, "hydra.sweeper"), OmegaConf.select(cfg, "objective")
    return search_overrides(cfg.hydra.overrides.task, sweeper, objective)


def point_folder(overrides: Iterable[str]) -> str:
    """A job's folder name: its grid point, in plain file-name characters."""
    label = ",".join(defining(overrides))
    name = re.sub(r"[^\w.,=+\-\[\]]", "_", label)
    if len(name) > 200:  # a file name holds at most 255 bytes
        return "point-" + hashlib.sha256(label.encode()).hexdigest()[:16]
    return name or "defaults"  # no override that changes a result: the conf/ defaults


def register_resolvers() -> None:
    """Folder names for conf/config.yaml's hydra.sweep, from `${hydra.overrides.task}` etc.

    Registered at import: a launcher's worker process imports this module but runs no
    main(). `sweep_key` takes the sweeper and objective nodes too: a search space may be
    in the config. Only the sweep's own config holds the whole grid (a job's holds its point), so
    `sweep_key` is cached: Hydra copies the sweep's cache into each job's config, as it
    does for `${now:}`, and every job finds the sweep's folder.
    """
    OmegaConf.register_new_resolver(
        "sweep_key",
        lambda *search: sweep_key(search_overrides(*search)),
        use_cache=True,
        replace=True,
    )
    OmegaConf.register_new_resolver(
        "sweep_point", lambda task: point_folder(as_typed(task)), replace=True
    )


register_resolvers()


class ParentRun(OutputFolders):
    """Opens (or reopens) the sweep's parent run before any job, and reports at the end.

    It is the one callback conf/config.yaml names, so it checks a single run's folder too
    (OutputFolders.on_run_start), and a sweep's before its parent run opens.

    Creating the MLflow database, experiment and parent here, once, before a launcher
    starts jobs in parallel, keeps the jobs from racing to create them in one sqlite file.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Hydra turns a callback's exception into a warning and goes on, which here would
        run every job without a parent: a sweep that no later start could resume."""
        try:
            exit_on_error(lambda: self._open(config))
        except Exception as err:
            reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0]}"
            print(
                f"error: the sweep's MLflow parent run could not be opened ({reason})",
                file=sys.stderr,
            )
            sys.exit(1)

    def _open(self, config: DictConfig) -> None:
        # Missing data, and bad values outside the grid, are refused before a parent exists;
        # a bad grid value is found by its own job (Hydra has not expanded the grid yet).
        cfg = _checked(config)
        self.sweep_dir = Path(config.hydra.sweep.dir)
        writable(self.sweep_dir)
        mlflow = store.client(cfg.logger)
        overrides = sweep_overrides(config)
        key = sweep_key(overrides)
        experiment = store.experiment_id(mlflow, cfg.logger.experiment_name)
        query = f"tags.{store.SWEEP_TAG} = '{key}'"
        if found := store.newest(mlflow, experiment, query, limit=1):
            self.parent = store.TrackedRun(mlflow, found[0].info.run_id)
            self.parent.reopen()
        else:
            tags = {store.SWEEP_TAG: key, store.OVERRIDES_TAG: " ".join(overrides)}
            name = ("sweep " + " ".join(overrides))[:250]  # a search's sampler is long
            self.parent = store.TrackedRun.create(mlflow, cfg.logger.experiment_name, name, tags)
        os.environ[PARENT_ENV] = self.parent.run_id
        stop.watch(self.parent, " ".join(overrides), self.sweep_dir)
        state = "resumed" if found else "new"
        log.info(
            "sweep %s: MLflow parent run %s (%s), folder %s",
            " ".join(overrides),
            self.parent.run_id,
            state,
            self.sweep_dir,
        )

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """A job that raised: see mark_failed. Hydra shows the exception once the sweep ends."""
        if job_return.status == JobStatus.FAILED:
            mark_failed(config, job_label(job_return.overrides or []))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ.pop(PARENT_ENV, None)
        out = self.sweep_dir / "report"
        files = exit_on_error(lambda: report.build(self.parent.mlflow, self.parent.run_id, out))
        self.parent.artifacts(*files)
        self.parent.close()
        stop.closed()
        log.info("sweep report: %s", files[-1])


def _checked(raw: DictConfig) -> Config:
    """The sweep's typed config, once its prepared data is known to be there."""
    cfg = validate(raw)
    prepare.read_stats(Path(cfg.paths.prepared))
    return cfg
