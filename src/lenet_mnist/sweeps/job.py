"""One Hydra job: the train, evaluate and publish stages' own code, into the job's folder;
in a sweep, an MLflow child of its parent, skipped when a complete child of its config exists."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lenet_mnist import process
from lenet_mnist.config import identity, parse
from lenet_mnist.config.identity import as_typed, defining
from lenet_mnist.config.schema import Config, ObjectiveConfig
from lenet_mnist.data import prepare
from lenet_mnist.errors import DivergedError, PipelineError, exit_on_error
from lenet_mnist.sweeps import stop, sweep

log = logging.getLogger(__name__)

# A miss of objective.target costs this, plus this per percentage point short, plus its seconds:
# behind any hit under 10^6 s, a wider miss behind a narrower; finite, as Optuna ranks no inf.
MISSED_S = 1e6


def objective(cfg: ObjectiveConfig, metrics: Mapping[str, float]) -> float:
    """The value a job returns to an optimizing sweeper, from its MLflow run's recorded
    metrics alone: a child found again on resume gives the sampler the same value."""
    if cfg.metric == "test_acc":
        return metrics["test_acc"]
    wall_s, shortfall = metrics["train_wall_s"], cfg.target - metrics["test_acc"]
    return wall_s + (0.0 if shortfall <= 0 else MISSED_S * (1 + 100 * shortfall))


def run(cfg: DictConfig) -> float | None:
    """One Hydra job; returns `objective`, the value an optimizing sweeper reads."""
    if os.environ.get(sweep.PARENT_ENV):
        stop.in_job()
    out = Path(HydraConfig.get().runtime.output_dir)
    return exit_on_error(lambda: _job(cfg, out))  # Hydra would catch the error and go on


def _job(raw: DictConfig, out: Path) -> float | None:
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        cfg = parse.validate(raw)
        if cfg.trainer.devices * cfg.trainer.num_nodes > 1 and multirun:
            # Lightning starts DDP's other processes by running the command (the sweep) again.
            raise PipelineError(
                f"trainer.devices={cfg.trainer.devices} with trainer.num_nodes="
                f"{cfg.trainer.num_nodes} is not allowed in a sweep (-m); use 1 process per "
                "job, or run it without -m"
            )
        # torch, Lightning and MLflow load for a valid job only: a refused value answers at once
        with process.importing():
            from lenet_mnist import numerics
            from lenet_mnist.tracking import store
            from lenet_mnist.training import fit

        fit.quiet_lightning()  # a launcher may run the job in a process of its own
        numerics.pin(cfg.trainer)
        digest = prepare.read_stats(Path(cfg.paths.prepared))["digest"]
    except PipelineError:
        shutil.rmtree(out, ignore_errors=True)  # Hydra made it; a refused job leaves nothing
        raise
    key = identity.config_hash(cfg, digest)
    point = " ".join(defining(as_typed(HydraConfig.get().overrides.task)))  # as the report keys it
    tags = {store.CONFIG_TAG: key, store.JOB_TAG: point}
    if parent := os.environ.get(sweep.PARENT_ENV):
        tags[store.PARENT_TAG] = parent
        # The newest complete child of this config (store.close_dead_runs closes a dead one).
        query = f" and tags.{store.CONFIG_TAG} = '{key}' and tags.{store.COMPLETE_TAG} = 'true'"
        done = next(iter(store.children(store.client(cfg.logger), parent, query)), None)
        if done is not None and not cfg.force:
            log.info("skipped: done before, MLflow run %s (force=true reruns it)", done.info.run_id)
            return objective(cfg.objective, done.data.metrics)
    try:
        return fit_and_test(cfg, out, tags)
    except DivergedError as err:
        if not multirun:
            raise
        # In a sweep, a rate too large for its batch size is an outcome: the run stays
        # FAILED, a resumed sweep tries it again, and the sweep goes on.
        log.warning("%s; the sweep goes on without this point", err)
        return objective(cfg.objective, {"train_wall_s": 0.0, "test_acc": 0.0})
    except OSError as err:
        stop.named(out, err)
        raise


def fit_and_test(cfg: Config, out: Path, tags: dict[str, str]) -> float:
    """The stages' own code into the job folder; the objective from the metrics as MLflow
    stored them, as a skipped job reads them."""
    from lenet_mnist.evaluation import evaluate
    from lenet_mnist.serving.publish import publish
    from lenet_mnist.tracking import store
    from lenet_mnist.training import fit

    prepared, history = Path(cfg.paths.prepared), out / "train_history.csv"
    outputs = fit.Outputs(out / "model", history, out / "timings.json")
    trained = fit.train(cfg, prepared, outputs, tags)
    tested = evaluate.Outputs(out / "test.json", out / "test_predictions.csv", out / "figures")
    metrics = evaluate.evaluate(cfg.model.name, trained.weights, prepared, history, tested)
    run = publish(cfg, trained.weights, prepared, metrics, tested.files(), trained.run.run_id).run
    run.tag(store.COMPLETE_TAG, "true")
    value = objective(cfg.objective, run.mlflow.get_run(run.run_id).data.metrics)
    log.info("test accuracy %.4f, %s %.6g", metrics["test_acc"], cfg.objective.metric, value)
    log.info("%s", trained.run.where("run"))
    return value
