"""One Hydra job: the train and evaluate stages' own code, into the job's own folder.

A sweep's job is an MLflow child run of the sweep's parent (lenet_mnist.sweep), skipped
when a complete child with the same config hash exists, unless `force=true`.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lenet_mnist import config, evaluate, numerics, prepare, sweep, tracking, train
from lenet_mnist.schema import Config
from lenet_mnist.stage import PipelineError, exit_on_error

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> float | None:
    """One Hydra job; returns test accuracy, the objective an optimizing sweeper reads."""
    train.quiet_lightning()  # a launcher may run the job in a process of its own
    # Hydra reports a job's exception with a traceback; a bad value deserves one line.
    try:
        return exit_on_error(lambda: _job(cfg))
    except SystemExit:  # Hydra catches Exceptions only: on_job_end never sees this one
        sweep.mark_failed(cfg, _job_label())
        raise


def _job(raw: DictConfig) -> float | None:
    out = Path(HydraConfig.get().runtime.output_dir)
    try:
        cfg = config.validate(raw)
        _one_process_per_sweep_job(cfg)
        numerics.pin(cfg.trainer)
        digest = prepare.read_stats(Path(cfg.paths.prepared))["digest"]
    except PipelineError:
        shutil.rmtree(out, ignore_errors=True)  # Hydra made it; a refused job leaves nothing
        raise
    key = config.config_hash(cfg, digest)
    tags = {
        tracking.CONFIG_TAG: key,
        tracking.JOB_TAG: _job_label(),
    }
    if parent := os.environ.get(sweep.PARENT_ENV):
        tags[tracking.PARENT_TAG] = parent
        done = sweep.previous_child(tracking.client(cfg.logger), parent, key)
        if done is not None and not cfg.force:
            log.info("skipped: done before, MLflow run %s (force=true reruns it)", done.info.run_id)
            return done.data.metrics.get("test_acc")
    return fit_and_test(cfg, out, tags)


def _one_process_per_sweep_job(cfg: Config) -> None:
    """Lightning starts DDP's other processes by running the command again, which for a
    sweep would run the whole sweep again in each of them."""
    processes = cfg.trainer.devices * cfg.trainer.num_nodes
    if processes > 1 and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise PipelineError(
            f"trainer.devices={cfg.trainer.devices} with trainer.num_nodes="
            f"{cfg.trainer.num_nodes} is not allowed in a sweep (-m); use 1 process per job, "
            "or run it without -m"
        )


def _job_label() -> str:
    return sweep.job_label(sweep.as_typed(HydraConfig.get().overrides.task))


def fit_and_test(cfg: Config, out: Path, tags: dict[str, str]) -> float:
    """The train and evaluate stages' own code, writing their outputs into the job folder."""
    prepared, history = Path(cfg.paths.prepared), out / "train_history.csv"
    summary = train.train(cfg, prepared, out / "model", history, out / "timings.json", tags)
    outputs = evaluate.Outputs(out / "test.json", out / "test_predictions.csv", out / "figures")
    run_id = summary["run_id"]
    metrics = evaluate.evaluate(cfg, summary["weights"], prepared, history, outputs, run_id)
    tracking.Recorder(tracking.client(cfg.logger), run_id).tag(tracking.COMPLETE_TAG, "true")
    log.info("test accuracy %.4f", metrics["test_acc"])
    log.info("%s", metrics["run"].where("run"))
    return metrics["test_acc"]
