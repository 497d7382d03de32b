"""A sweep in MLflow: one parent run per grid, one child per point, resumable.

The parent is found again by the sweep's key (its defining overrides, in any order), so the
same command reopens it, and each job skips a point with a complete child of its config
hash unless `force=true`. Folders are named the same way, a sweep's by its key and a job's
by its point: a resumed sweep writes into its first start's folder. At the end the report
(lenet_mnist.study.report) goes into the sweep's folder and onto the parent.
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

from lenet_mnist.config.identity import as_typed, defining, search_overrides, sweep_key
from lenet_mnist.config.parse import validate
from lenet_mnist.data import prepare
from lenet_mnist.errors import PipelineError, exit_on_error
from lenet_mnist.study import report
from lenet_mnist.sweeps import stop
from lenet_mnist.tracking import store

log = logging.getLogger(__name__)

# The parent's run id reaches the jobs through the environment, which every launcher hands on.
PARENT_ENV = "LENET_MNIST_SWEEP_PARENT"


def previous_child(mlflow: MlflowClient, parent: str, key: str) -> Run | None:
    """The newest complete child with this config. A child its killed sweep left RUNNING is
    marked KILLED when the next run is created (store.close_dead_runs)."""
    query = f" and tags.{store.CONFIG_TAG} = '{key}' and tags.{store.COMPLETE_TAG} = 'true'"
    return next(iter(store.children(mlflow, parent, query)), None)


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
    """Folder names for conf/config.yaml's hydra.sweep. At import: a launcher's worker
    imports this module but runs no main(). `sweep_key` is cached, as `${now:}` is: only the
    sweep's config holds the whole grid, and Hydra copies its cache into each job's config."""
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
