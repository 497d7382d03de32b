"""Training: fit LeNet-5 with PyTorch Lightning, record every epoch, keep the best weights.

Read top to bottom: `train` opens the MLflow run (or reopens a checkpoint's), `fit` seeds
and builds the network and fits it, and `train` writes the weights, history and timings
together. Outputs that DVC hashes are deterministic (weights, per-epoch history); timings,
which are not, go only to MLflow and to a timings file that no stage declares.

Under DDP (`trainer.devices` > 1) Lightning starts this same command once per further
rank; every rank trains its shard, and only rank 0 records to MLflow and writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping
from pytorch_lightning.utilities.exceptions import MisconfigurationException, SIGTERMException

from lenet_mnist import numerics
from lenet_mnist.config import identity
from lenet_mnist.config.schema import Config
from lenet_mnist.data import prepare
from lenet_mnist.errors import Interrupted, PipelineError
from lenet_mnist.model import networks
from lenet_mnist.outputs import writing
from lenet_mnist.tracking import provenance, store
from lenet_mnist.training import checkpoint, probes
from lenet_mnist.training.data import MnistData
from lenet_mnist.training.module import Classifier
from lenet_mnist.training.optimizer import effective_lr
from lenet_mnist.training.progress import IterationBar, on_terminal
from lenet_mnist.training.recorder import EpochRecorder, write_history

PROGRESS_REFRESH_STEPS = 25
# Metrics are epoch-level; a large interval spares Lightning a per-step look for step metrics.
LOG_EVERY_N_STEPS = 1_000_000


@dataclass(frozen=True)
class Outputs:
    model: Path  # folder for weights.safetensors
    history: Path  # per-epoch CSV, a DVC plot
    timings: Path  # per-epoch seconds, declared by no stage
    checkpoint: Path | None = None  # resumable state, removed once the outputs are written


@dataclass(frozen=True)
class Trained:
    run: store.TrackedRun
    weights: Path
    kept_epoch: int
    best_val_acc: float
    wall_s: float  # the fit, compilation, validation and Lightning included

    def line(self) -> str:
        return f"train: kept epoch {self.kept_epoch} (val acc {self.best_val_acc:.4f})"


def quiet_lightning() -> None:
    """Hide messages every run would print that concern Lightning itself, not this run:
    its own upgrades, an ad, which accelerators exist and how to use a GPU's tensor cores,
    the step-metrics interval set high on purpose, the end, and its note on Ctrl-C (the
    stage's own line says what stopped it).

    Process-wide, so only entry points call it: the stage, a Hydra job, the benchmark."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings("ignore", message=r"The number of training batches .* logging")
    # Classifier reduces its epoch metrics over the ranks itself, before it logs them.
    warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\(.*sync_dist")
    for logger in (
        "pytorch_lightning.utilities.rank_zero",
        "lightning_fabric.utilities.rank_zero",
        "pytorch_lightning.accelerators.cuda",
    ):
        logging.getLogger(logger).addFilter(_no_ads)


_QUIET = ("litlogger", "`Trainer.fit` stopped: `max_epochs", "Detected KeyboardInterrupt")
_QUIET += ("GPU available:", "TPU available:", "HPU available:", "LOCAL_RANK:", "Tensor Cores")


def _no_ads(record: logging.LogRecord) -> bool:
    message = record.getMessage()  # the epoch lines already say that the last epoch ended
    return not any(text in message for text in _QUIET)


def make_trainer(
    cfg: Config, callbacks: list[pl.Callback] | None = None, epochs: int | None = None
) -> pl.Trainer:
    """A Trainer from the `trainer` group; epochs come from `train`, the one place they live.

    It has no Lightning logger: EpochRecorder sends each epoch to MLflow itself (see
    docs/architecture.md), and it comes to the fit with the module (configure_callbacks).
    """
    epochs = epochs or cfg.train.epochs
    callbacks = callbacks or []
    rule = cfg.train.early_stopping
    if (rule.patience, rule.stop_at, rule.give_up_below) != (None, None, None):
        # Classifier logs val_acc once per validation, reduced over every rank. Without a
        # patience, a patience of the run's own length leaves the thresholds to stop it.
        stop = EarlyStopping(
            "val_acc",
            patience=rule.patience or cfg.train.epochs,
            mode="max",
            stopping_threshold=rule.stop_at,
            divergence_threshold=rule.give_up_below,
            verbose=False,
        )
        callbacks = [*callbacks, stop]
    bar = cfg.trainer.enable_progress_bar and on_terminal()  # logs get the epoch lines only
    if bar:
        # Redrawing on every one of ~900 iterations per epoch costs more than it shows.
        refresh = max(1, PROGRESS_REFRESH_STEPS // cfg.trainer.batch_group)
        callbacks = [*callbacks, IterationBar(cfg.train.epochs, cfg.train.epochs - epochs, refresh)]
    try:
        return pl.Trainer(
            max_epochs=epochs,
            accelerator=cfg.trainer.accelerator,
            devices=cfg.trainer.devices,
            strategy=cfg.trainer.strategy,
            num_nodes=cfg.trainer.num_nodes,
            precision=cfg.trainer.precision,
            deterministic=numerics.MODES[cfg.trainer.reproducible].deterministic,
            enable_progress_bar=bar,
            logger=False,
            callbacks=callbacks,
            # EpochRecorder is the only checkpoint: it keeps the best weights in memory.
            enable_checkpointing=False,
            num_sanity_val_steps=0,
            enable_model_summary=False,
            log_every_n_steps=LOG_EVERY_N_STEPS,
        )
    except MisconfigurationException as err:  # Lightning's word for a device it cannot find
        t = cfg.trainer
        raise PipelineError(
            f"trainer.accelerator={t.accelerator} with trainer.devices={t.devices} is not "
            f"available here ({str(err).splitlines()[0]}); use auto or cpu"
        ) from None


def train(cfg: Config, prepared: Path, out: Outputs, tags: dict[str, str] | None = None) -> Trained:
    """Fit, keep the chosen weights, write outputs, record the run.

    `tags` go onto the MLflow run, such as a sweep's parent run id and the config hash. A
    fit killed after a checkpoint resumes from `out.checkpoint`, under the same MLflow run.
    """
    # cuBLAS needs this before CUDA starts to run its matmuls deterministically.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    stats = prepare.read_stats(prepared)
    key = identity.config_hash(cfg, stats["digest"])
    resume = checkpoint.read(out.checkpoint, key)
    epochs = cfg.train.epochs - (resume.epoch if resume else 0)
    trainer = make_trainer(cfg, epochs=epochs)  # refuses a missing device before a run
    if not trainer.is_global_zero:  # known now: a DDP launcher set this process's rank
        share_of_fit(cfg, prepared, trainer, key, resume)
    run = open_run(cfg, prepared, stats["digest"], resume, tags)
    with run:
        recorder = EpochRecorder(cfg.train, key, run, resume, out.checkpoint)
        net, wall_s = fit(cfg, prepared, trainer, recorder, resume)
        last_epoch = recorder.last_epoch
        kept_epoch = recorder.best_epoch if cfg.train.keep_best else last_epoch
        if cfg.train.keep_best:
            net.load_state_dict(recorder.best_state)
        record = {
            "train_wall_s": wall_s,
            "epochs": recorder.timings,
            "numerics": numerics.record(cfg.trainer),
        }
        with writing(out.model, out.history, out.timings) as (model_dir, history, timings):
            networks.save(net, model_dir, cfg.model.name, kept_epoch)
            write_history(recorder.history, history)
            timings.write_text(json.dumps(record, indent=2) + "\n")
        checkpoint.remove(out.checkpoint)
        weights = out.model / networks.WEIGHTS
        run.tag(store.WEIGHTS_TAG, provenance.sha256(weights))
        run.metrics({"kept_epoch": kept_epoch, "train_wall_s": wall_s})
        run.metrics(probes.first_reached(recorder.readings, cfg.train.targets))
        if last_epoch < cfg.train.epochs:
            run.metrics({"stopped_epoch": last_epoch})
            print(f"train: early stopping after epoch {last_epoch} of {cfg.train.epochs}")
        run.artifacts(weights, out.history)
    return Trained(run, weights, kept_epoch, recorder.best_acc, wall_s)


def open_run(
    cfg: Config,
    prepared: Path,
    digest: str,
    resume: checkpoint.Checkpoint | None,
    tags: dict[str, str] | None,
) -> store.TrackedRun:
    """The checkpoint's MLflow run, RUNNING again, or a new one with the provenance tags."""
    mlflow = store.client(cfg.logger)
    if resume is not None:
        run = store.TrackedRun(mlflow, resume.run_id)
        run.reopen()
        print(f"train: resuming after epoch {resume.epoch}")
        return run
    run_tags = {**provenance.run_tags(prepared, digest), **(tags or {})}
    run_name = f"bs{cfg.train.batch_size}-ep{cfg.train.epochs}"
    return store.TrackedRun.create(mlflow, cfg.logger.experiment_name, run_name, run_tags)


def fit(
    cfg: Config,
    prepared: Path,
    trainer: pl.Trainer,
    recorder: EpochRecorder,
    resume: checkpoint.Checkpoint | None,
) -> tuple[torch.nn.Module, float]:
    """Train the seeded network, from the checkpoint's epoch if `resume`; return it with the
    fit's wall time."""
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    net = networks.build(cfg.model.name)  # first draw from the seeded generator: the init
    data = MnistData(
        prepared,
        cfg.train,
        cfg.trainer.batch_group,
        rank=trainer.global_rank,
        world_size=trainer.world_size,
        with_test=cfg.train.test_every_epoch and trainer.is_global_zero,
        order=resume.batch_order if resume else None,
    )
    steps = data.updates_per_epoch()
    lr = effective_lr(cfg)
    if resume is None and recorder.run is not None:  # rank 0 alone has a run
        derived = {
            "derived.train_size": data.train_size,
            "derived.iterations_per_epoch": steps,
            "derived.total_updates": steps * cfg.train.epochs,
            "derived.lr": lr,
        }
        recorder.run.params({**identity.flat(cfg), **derived, **numerics.record(cfg.trainer)})
    total = steps * cfg.train.epochs
    module = Classifier(net, cfg.optimizer, lr, total, cfg.trainer.compile, [recorder], resume)
    if resume is not None:
        net.load_state_dict(resume.net)
        torch.set_rng_state(resume.rng)
        if trainer.early_stopping_callback is not None:
            trainer.early_stopping_callback.load_state_dict(resume.early_stopping)
    pinned = cfg.trainer.threads or numerics.MODES[cfg.trainer.reproducible].threads
    if trainer.world_size > 1 and pinned:  # else DDP's launcher sets cores / processes
        os.environ.setdefault("OMP_NUM_THREADS", str(pinned))
    started = time.perf_counter()
    try:
        trainer.fit(module, datamodule=data)
    except SystemExit as stop:  # how Lightning ends a fit that a signal stopped
        raise _interrupted(stop, recorder.save_to) from None
    return net, time.perf_counter() - started


def _interrupted(stop: SystemExit, saved: Path | None) -> BaseException:
    """Lightning's exit after a signal, as Interrupted: on SIGTERM it raises a SystemExit
    with no code, which a shell or a scheduler reads as success, and on Ctrl-C exit 1."""
    if isinstance(stop, SIGTERMException):
        signum = signal.SIGTERM
    elif isinstance(stop.__context__, KeyboardInterrupt):  # SIGTERM too, by the stage's handler
        signum = getattr(stop.__context__, "signum", signal.SIGINT)
    else:
        return stop
    by = f"training stopped by {signal.Signals(signum).name}"
    if saved is not None and saved.is_file():
        return Interrupted(signum, f"{by}; the same command resumes it from the checkpoint {saved}")
    return Interrupted(signum, f"{by}, before any checkpoint")


def share_of_fit(
    cfg: Config,
    prepared: Path,
    trainer: pl.Trainer,
    key: str,
    resume: checkpoint.Checkpoint | None,
) -> NoReturn:
    """A DDP rank other than 0: compute its shard of every step, then end the process.

    Rank 0 alone records to MLflow and writes. Ending here keeps any caller (the stage, a
    Hydra job that evaluates next) from writing or printing a second time. A PipelineError
    comes from metrics reduced over all ranks, so rank 0 meets it too and reports it; a
    non-zero exit here would make Lightning's launcher kill rank 0 before it could.
    """
    with contextlib.suppress(PipelineError):
        fit(cfg, prepared, trainer, EpochRecorder(cfg.train, key, None, resume), resume)
    sys.stdout.flush()
    sys.exit(0)
