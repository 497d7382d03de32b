"""A sweep in MLflow: one parent run per grid, found again by the sweep's key (its defining
overrides, in any order), so that the same command resumes it in the same folder; the
report goes into that folder and onto the parent (docs/launchers.md)."""

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
from omegaconf import DictConfig, OmegaConf

from lenet_mnist.config.identity import as_typed, defining, search_overrides, sweep_key
from lenet_mnist.config.parse import validate
from lenet_mnist.data import prepare
from lenet_mnist.errors import PipelineError, exit_on_error
from lenet_mnist.sweeps import stop

log = logging.getLogger(__name__)

# The parent's run id reaches the jobs through the environment, which every launcher hands on.
PARENT_ENV = "LENET_MNIST_SWEEP_PARENT"


def point_folder(overrides: Iterable[str]) -> str:
    """A job's folder name: its grid point, in plain file-name characters."""
    label = ",".join(defining(overrides))
    name = re.sub(r"[^\w.,=+\-\[\]]", "_", label)
    if len(name) > 200:  # a file name holds at most 255 bytes
        return "point-" + hashlib.sha256(label.encode()).hexdigest()[:16]
    return name or "defaults"  # no override that changes a result: the conf/ defaults


# Folder names for conf/config.yaml's hydra.sweep, at import, as a launcher's worker runs no
# main(). `sweep_key` is cached, as `${now:}` is: only the sweep's config holds the whole grid.
OmegaConf.register_new_resolver(
    "sweep_key", lambda *search: sweep_key(search_overrides(*search)), use_cache=True, replace=True
)
OmegaConf.register_new_resolver(
    "sweep_point", lambda task: point_folder(as_typed(task)), replace=True
)


def sweep_overrides(cfg: DictConfig) -> list[str]:
    """What defines the sweep whose config this is (see `search_overrides`)."""
    sweeper, objective = OmegaConf.select(cfg, "hydra.sweeper"), OmegaConf.select(cfg, "objective")
    return search_overrides(cfg.hydra.overrides.task, sweeper, objective)


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
    """Checks a run's or a sweep's folder, opens (or reopens) the sweep's parent run before
    any job, once, so that parallel jobs do not race to make it, and reports at the end. Each
    ends through exit_on_error: Hydra would turn an exception into a warning and go on."""

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
        from lenet_mnist.tracking import store  # MLflow loads for a sweep that will run only

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
        from lenet_mnist.study import report

        files = report.build(self.parent.mlflow, self.parent.run_id, self.sweep_dir / "report")
        self.parent.artifacts(*files)
        self.parent.close()
        stop.closed()
        log.info("sweep report: %s", files[-1])
