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
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from lenet_mnist.config.grid import as_typed, defining, search_overrides, sweep_key
from lenet_mnist.config.parse import validate
from lenet_mnist.data import prepare
from lenet_mnist.errors import PipelineError, exit_on_error
from lenet_mnist.study import report
from lenet_mnist.sweeps import stop
from lenet_mnist.tracking import store

log = logging.getLogger(__name__)

# The parent's run id reaches the jobs through the environment, which both the in-process
# launcher and the process-based ones (joblib, submitit) hand on to their jobs.
PARENT_ENV = "LENET_MNIST_SWEEP_PARENT"


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


def writable(folder: Path) -> None:
    """Refuse, as the input's error, a folder that cannot be made and written: Hydra makes
    it after the sweep's parent run opened (or just before a run), with a traceback."""
    existing = next(p for p in (folder, *folder.parents) if os.path.lexists(p))
    reason = None if existing.is_dir() else "not a folder"
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as err:
        reason = reason or err.strerror or str(err)
    if reason:
        raise PipelineError(f"{existing}: cannot write here ({reason}); choose a writable folder")


class ParentRun(Callback):
    """The one callback conf/config.yaml names: checks a run's or a sweep's folder, opens
    (or reopens) the sweep's parent run before any job, and reports at the end.

    Each goes through the boundary (exit_on_error): Hydra turns a callback's exception into
    a warning and goes on, which would run every job without a parent. The database, the
    experiment and the parent are made here, once, so parallel jobs do not race to make them.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        exit_on_error(lambda: writable(Path(config.hydra.run.dir)))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        exit_on_error(lambda: self._open(config))

    def _open(self, config: DictConfig) -> None:
        # Missing data and bad values outside the grid are refused before a parent exists;
        # a bad grid value is found by its own job (Hydra has not expanded the grid yet).
        cfg = validate(config)
        prepare.read_stats(Path(cfg.paths.prepared))
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
        log.info("sweep %s: MLflow parent run %s (%s), folder %s", " ".join(overrides),
                 self.parent.run_id, "resumed" if found else "new", self.sweep_dir)  # fmt: skip

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        exit_on_error(self._report)

    def _report(self) -> None:
        files = report.build(self.parent.mlflow, self.parent.run_id, self.sweep_dir / "report")
        self.parent.artifacts(*files)
        self.parent.close()
        stop.closed()
        log.info("sweep report: %s", files[-1])
