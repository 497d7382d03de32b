"""Hydra runs and sweeps of the pipeline's own train and evaluate code, tracked in MLflow.

    python -m lenet_mnist.run train.epochs=3                        # one run
    python -m lenet_mnist.run -m train.batch_size=32,64,128,256     # a sweep, one job each

Each job trains and evaluates with the stages' own code and writes their outputs into
its Hydra folder: `paths.runs` for one run, `paths.sweeps` for a sweep (one folder per
job, and the report). A sweep's jobs are MLflow child runs under one parent, resumable
(lenet_mnist.sweep). Jobs run one after another in this process by default;
`launcher=joblib` runs them side by side, and Hydra's cluster launchers take them to a
cluster without changing a job.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lenet_mnist import config, evaluate, numerics, prepare, sweep, tracking, train
from lenet_mnist.schema import Config, register
from lenet_mnist.stage import PipelineError, exit_on_error, run_stage

log = logging.getLogger(__name__)


def run_job(cfg: DictConfig) -> float | None:
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
    log.info("test accuracy %.4f, MLflow run %s", metrics["test_acc"], run_id)
    return metrics["test_acc"]


def main() -> None:
    """Hydra's command line, with a bad key or value reported as one line."""
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing its own text
    OmegaConf.register_new_resolver("pid", os.getpid, replace=True)  # hydra.run.dir uses it
    register()
    entry = hydra.main(config_path=str(config.CONF_DIR), config_name="config", version_base="1.3")
    try:
        entry(run_job)()
    except (HydraException, OmegaConfBaseException) as err:
        raise PipelineError(config.describe(err)) from None


if __name__ == "__main__":
    run_stage(main)
