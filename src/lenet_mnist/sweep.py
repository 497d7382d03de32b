"""Hydra runs and sweeps of the pipeline's own train and evaluate code, tracked in MLflow.

    python -m lenet_mnist.train -m train.batch_size=32,64,128,256 train.epochs=5,10

Each point of the grid is one Hydra job and one MLflow child run under one parent run per
sweep. The parent is found again by the sweep's overrides, so the same command started
again after an interruption reuses it, and each job first looks under it for a complete
child with its config hash: finished points are skipped unless `force=true`. When the
sweep ends, the report (lenet_mnist.report) is written to the sweep folder and attached
to the parent.

Jobs run one after another in this process by default; `launcher=joblib` runs them side
by side, and Hydra's cluster launchers take them to a cluster without changing a job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from lenet_mnist import evaluate, params, report, tracking, train
from lenet_mnist.stage import PipelineError, exit_on_error

log = logging.getLogger(__name__)

# The parent's run id reaches the jobs through the environment, which both the in-process
# launcher and the process-based ones (joblib, submitit) hand on to their jobs.
PARENT_ENV = "LENET_MNIST_SWEEP_PARENT"
# Overrides that choose where or how a sweep runs, not what it computes.
NOT_THE_SWEEP = (
    "hydra.",
    "hydra/",
    "launcher=",
    "force=",
    "paths.",
    "logger.",
    "trainer.enable_progress_bar=",
)


def hydra_main() -> None:
    """`python -m lenet_mnist.train [-m] overrides...`, composed from conf/."""
    entry = hydra.main(config_path=str(params.CONF_DIR), config_name="config", version_base="1.3")
    entry(run_job)()


def run_job(cfg: DictConfig) -> float | None:
    """One Hydra job; returns test accuracy, the objective an optimizing sweeper reads."""
    # Hydra reports a job's exception with a traceback; a bad value deserves one line.
    try:
        return exit_on_error(lambda: _job(cfg))
    except SystemExit:  # Hydra catches Exceptions only: on_job_end never sees this one
        mark_failed(cfg, job_label(HydraConfig.get().overrides.task))
        raise


def mark_failed(cfg: DictConfig, job: str) -> None:
    """Mark a failed job's unfinished run and its sweep's parent FAILED.

    Hydra ends a sweep with a failed job without calling on_multirun_end, which would
    otherwise leave the parent, and a run cut off by the failure, RUNNING in the MLflow
    UI for good. A run Lightning closed as FINISHED before a later step failed lacks the
    COMPLETE tag, so it is marked too. This runs in the job's own process under any
    launcher, so it uses nothing but the config and the environment.
    """
    parent = os.environ.get(PARENT_ENV)
    if parent is None:  # a single run, not a sweep: its own run is Lightning's to close
        return
    client = MlflowClient(tracking.tracking_uri(cfg))
    for run in tracking.children(client, parent):  # filtered here: overrides may hold quotes
        tags = run.data.tags
        unfinished = tracking.COMPLETE_TAG not in tags and run.info.status != "KILLED"
        if tags.get(tracking.JOB_TAG) == job and unfinished:
            tracking.retry_locked(lambda r=run: client.set_terminated(r.info.run_id, "FAILED"))
    tracking.retry_locked(lambda: client.set_terminated(parent, "FAILED"))
    log.error(
        "job %s failed; MLflow parent run %s marked FAILED. Once the cause is fixed, run the "
        "same command again: it resumes the sweep and writes the report",
        job,
        parent,
    )


def checked_inputs(cfg: DictConfig) -> tuple[Path, str]:
    """The prepared data folder and its digest, once the config has passed validation."""
    params.validate(cfg)
    prepared = Path(cfg.paths.prepared)
    if not (prepared / "stats.json").is_file():
        raise PipelineError(
            f"paths.prepared={prepared} holds no prepared data; run `dvc repro prepare` first"
        )
    return prepared, json.loads((prepared / "stats.json").read_text())["digest"]


def _job(cfg: DictConfig) -> float | None:
    out = Path(HydraConfig.get().runtime.output_dir)
    try:
        prepared, digest = checked_inputs(cfg)
    except PipelineError:
        shutil.rmtree(out, ignore_errors=True)  # Hydra made it; a refused job leaves nothing
        raise
    key = tracking.config_hash(cfg, digest)
    tags = {tracking.CONFIG_TAG: key, tracking.JOB_TAG: job_label(HydraConfig.get().overrides.task)}
    client = MlflowClient(tracking.tracking_uri(cfg))
    if parent := os.environ.get(PARENT_ENV):
        tags[tracking.PARENT_TAG] = parent
        done = previous_child(client, parent, key)
        if done is not None and not cfg.force:
            log.info("skipped: done before, MLflow run %s (force=true reruns it)", done.info.run_id)
            return done.data.metrics.get("test_acc")
    return fit_and_test(cfg, prepared, out, tags, client)


def fit_and_test(
    cfg: DictConfig, prepared: Path, out: Path, tags: dict[str, str], client: MlflowClient
) -> float:
    """The train and evaluate stages' own code, writing their outputs into the job folder."""
    history = out / "train_history.csv"
    summary = train.train(cfg, prepared, out / "model", history, out / "timings.json", tags)
    outputs = evaluate.Outputs(out / "test.json", out / "test_predictions.csv", out / "figures")
    run_id = summary["run_id"]
    metrics = evaluate.evaluate(cfg, summary["weights"], prepared, history, outputs, run_id)
    tracking.retry_locked(lambda: client.set_tag(run_id, tracking.COMPLETE_TAG, "true"))
    log.info("test accuracy %.4f, MLflow run %s", metrics["test_acc"], run_id)
    return metrics["test_acc"]


def previous_child(client: MlflowClient, parent: str, key: str) -> Run | None:
    """The newest complete child with this config, after marking interrupted ones as killed."""
    done = None
    for run in tracking.children(client, parent, f" and tags.{tracking.CONFIG_TAG} = '{key}'"):
        if run.data.tags.get(tracking.COMPLETE_TAG) == "true":
            done = done or run
        elif run.info.status == "RUNNING":
            tracking.retry_locked(lambda r=run: client.set_terminated(r.info.run_id, "KILLED"))
    return done


def defining(overrides: Iterable[str]) -> list[str]:
    """The overrides that say what is computed, not where or how, in a stable order."""
    return sorted(o for o in overrides if not o.startswith(NOT_THE_SWEEP))


def job_label(overrides: Iterable[str]) -> str:
    """A job's point of the grid, as its run's JOB_TAG holds it and the report keys it."""
    return " ".join(defining(overrides))


def sweep_overrides(config: DictConfig) -> list[str]:
    """The command line's overrides that define the grid."""
    return defining(config.hydra.overrides.task)


def sweep_key(overrides: list[str]) -> str:
    """The same grid gives the same key, whatever order its values were typed in."""
    grid = []
    for name, _, values in (o.partition("=") for o in overrides):
        plain_list = not any(c in values for c in "([{")  # not range(...), [a,b] or {...}
        grid.append(
            f"{name}={','.join(sorted(values.split(',')))}" if plain_list else f"{name}={values}"
        )
    return hashlib.sha256(json.dumps(sorted(grid)).encode()).hexdigest()[:16]


class ParentRun(Callback):
    """Opens (or reopens) the sweep's parent run before any job, and reports at the end.

    Creating the MLflow database, experiment and parent here, once, before a launcher
    starts jobs in parallel, keeps the jobs from racing to create them in one sqlite file.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Missing data, and bad values outside the grid, are refused before a parent exists;
        # a bad grid value is found by its own job (Hydra has not expanded the grid yet).
        exit_on_error(lambda: checked_inputs(config))
        self.client = MlflowClient(tracking.tracking_uri(config))
        self.sweep_dir = Path(config.hydra.sweep.dir)
        experiment = tracking.experiment_id(self.client, config.logger.experiment_name)
        overrides = sweep_overrides(config)
        key = sweep_key(overrides)
        found = tracking.newest(
            self.client, experiment, f"tags.{tracking.SWEEP_TAG} = '{key}'", limit=1
        )
        if found:
            self.parent = found[0].info.run_id
            tracking.retry_locked(lambda: self.client.update_run(self.parent, "RUNNING"))
        else:
            self.parent = tracking.retry_locked(
                lambda: self.client.create_run(
                    experiment,
                    run_name="sweep " + " ".join(overrides),
                    tags={tracking.SWEEP_TAG: key, tracking.OVERRIDES_TAG: " ".join(overrides)},
                )
            ).info.run_id
        os.environ[PARENT_ENV] = self.parent
        state = "resumed" if found else "new"
        log.info("sweep %s: MLflow parent run %s (%s)", " ".join(overrides), self.parent, state)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """A job that raised: see mark_failed. Hydra shows the exception once the sweep ends."""
        if job_return.status == JobStatus.FAILED:
            mark_failed(config, job_label(job_return.overrides or []))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ.pop(PARENT_ENV, None)
        out = self.sweep_dir / "report"
        files = exit_on_error(lambda: report.build(self.client, self.parent, out))
        for path in files:
            tracking.retry_locked(lambda p=path: self.client.log_artifact(self.parent, str(p)))
        tracking.retry_locked(lambda: self.client.set_terminated(self.parent))
        log.info("sweep report: %s", files[-1])
