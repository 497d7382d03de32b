"""Training with PyTorch Lightning: `train` reads top to bottom, from the config to the
written outputs (docs/architecture.md). Under DDP every rank trains its shard; rank 0 alone
records to MLflow and writes."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint, EarlyStopping
from pytorch_lightning.utilities.exceptions import MisconfigurationException, SIGTERMException
from rich.console import Console

from lenet_mnist import numerics
from lenet_mnist.config import identity
from lenet_mnist.config.schema import Config
from lenet_mnist.data import prepare
from lenet_mnist.errors import Interrupted, PipelineError
from lenet_mnist.model import networks
from lenet_mnist.outputs import writing
from lenet_mnist.tracking import provenance, store
from lenet_mnist.training import checkpoint, probes
from lenet_mnist.training.batches import iterations_per_epoch
from lenet_mnist.training.data import MnistData
from lenet_mnist.training.module import Classifier
from lenet_mnist.training.optimizer import effective_lr
from lenet_mnist.training.progress import UpdatesBar
from lenet_mnist.training.recorder import EpochRecorder, write_history


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

    def line(self) -> str:
        return f"train: kept epoch {self.kept_epoch} (val acc {self.best_val_acc:.4f})"


def quiet_lightning() -> None:
    """Hide what every run would print about Lightning itself rather than this run (an ad,
    accelerators, the fit's end, Ctrl-C: the stage's line says what stopped it) and warnings
    on settings chosen on purpose. Process-wide, so only entry points call it."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings("ignore", message=r"The number of training batches .* logging")
    # Classifier reduces its epoch metrics over the ranks itself, before it logs them.
    warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\(.*sync_dist")
    # A resumed fit writes its checkpoint where the one it resumed from lies.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    for logger in (
        "pytorch_lightning.utilities.rank_zero",
        "lightning_fabric.utilities.rank_zero",
        "pytorch_lightning.accelerators.cuda",
    ):
        logging.getLogger(logger).addFilter(lambda r: not any(t in r.getMessage() for t in _QUIET))


_QUIET = ("litlogger", "`Trainer.fit` stopped: `max_epochs", "Detected KeyboardInterrupt")
_QUIET += ("GPU available:", "TPU available:", "HPU available:", "LOCAL_RANK:", "Tensor Cores")
_QUIET += ("Restoring states from the checkpoint", "Restored all states from the checkpoint")


def make_trainer(cfg: Config, callbacks: list[pl.Callback]) -> pl.Trainer:
    """A Trainer from the `trainer` group, with no logger: EpochRecorder logs to MLflow."""
    rule = cfg.train.early_stopping
    if (rule.patience, rule.stop_at, rule.give_up_below) != (None, None, None):
        # val_acc is reduced over the ranks; no patience leaves the thresholds to stop it
        stop = EarlyStopping(
            "val_acc",
            patience=rule.patience or cfg.train.epochs,
            mode="max",
            stopping_threshold=rule.stop_at,
            divergence_threshold=rule.give_up_below,
            verbose=False,
        )
        callbacks = [*callbacks, stop]
    # rich's test for a live bar (a TTY, or TTY_INTERACTIVE=1); logs get the epoch lines only
    bar = cfg.trainer.enable_progress_bar and Console().is_interactive
    if bar:
        callbacks = [*callbacks, UpdatesBar(cfg.trainer.batch_group, refresh_updates=25)]
    try:
        return pl.Trainer(
            max_epochs=cfg.train.epochs,
            accelerator=cfg.trainer.accelerator,
            devices=cfg.trainer.devices,
            strategy=cfg.trainer.strategy,
            num_nodes=cfg.trainer.num_nodes,
            precision=cfg.trainer.precision,
            deterministic=numerics.MODES[cfg.trainer.reproducible].deterministic,
            enable_progress_bar=bar,
            logger=False,
            callbacks=callbacks,
            # Lightning adds a ModelCheckpoint of its own unless one is given or this is off.
            enable_checkpointing=any(isinstance(c, Checkpoint) for c in callbacks),
            plugins=[checkpoint.AtomicIO()],
            num_sanity_val_steps=0,
            enable_model_summary=False,
            log_every_n_steps=1_000_000,  # metrics are per epoch: no per-step look for them
        )
    except MisconfigurationException as err:  # Lightning's word for a device it cannot find
        t = cfg.trainer
        raise PipelineError(
            f"trainer.accelerator={t.accelerator} with trainer.devices={t.devices} is not "
            f"available here ({str(err).splitlines()[0]}); use auto or cpu"
        ) from None


def train(cfg: Config, prepared: Path, out: Outputs, tags: dict[str, str] | None = None) -> Trained:
    """Fit, keep the chosen weights, write the outputs, record the run (with `tags`); a fit
    killed after a checkpoint resumes from `out.checkpoint`, under the same MLflow run."""
    stats = prepare.read_stats(prepared)
    probes.check(cfg.train, stats["sizes"]["train"])
    key = identity.config_hash(cfg, stats["digest"])
    saved = checkpoint.recorded(out.checkpoint, key)
    recorder = EpochRecorder(cfg.train, key)
    callbacks: list[pl.Callback] = [recorder]  # before the saver: it saves what this records
    if out.checkpoint is not None and cfg.train.checkpoint_every > 0:
        callbacks.append(checkpoint.saver(out.checkpoint, cfg.train.checkpoint_every))
    trainer = make_trainer(cfg, callbacks)  # refuses a missing device before a run opens
    shard = -(-stats["sizes"]["train"] // trainer.world_size)  # this rank's training images
    steps = iterations_per_epoch(shard, cfg.train.batch_size, cfg.train.drop_last)
    lr = effective_lr(cfg)
    # Rank 0 alone records to MLflow (known now: a DDP launcher set this process's rank).
    if trainer.is_global_zero and saved is not None:  # the checkpoint's run, RUNNING again
        recorder.run = store.TrackedRun(store.client(cfg.logger), saved["run_id"])
        recorder.run.reopen()
        print(f"train: resuming after epoch {len(saved['history'])}")
    elif trainer.is_global_zero:  # a new run, with the provenance tags
        run_tags = {**provenance.run_tags(prepared, stats["digest"]), **(tags or {})}
        name = f"bs{cfg.train.batch_size}-ep{cfg.train.epochs}"
        recorder.run = store.TrackedRun.create(
            store.client(cfg.logger), cfg.logger.experiment_name, name, run_tags
        )
    with recorder.run or contextlib.nullcontext():
        if saved is None and recorder.run is not None:
            derived = {
                "derived.train_size": stats["sizes"]["train"],
                "derived.iterations_per_epoch": steps,
                "derived.total_updates": steps * cfg.train.epochs,
                "derived.lr": lr,
            }
            recorder.run.params({**identity.flat(cfg), **derived, **numerics.record(cfg.trainer)})
        pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
        net = networks.build(cfg.model.name)  # first draw from the seeded generator: the init
        data = MnistData(prepared, cfg.train, cfg.trainer.batch_group)
        module = Classifier(net, cfg.optimizer, lr, steps * cfg.train.epochs, cfg.trainer.compile)
        started = time.perf_counter()
        try:
            resume = out.checkpoint if saved is not None else None
            trainer.fit(module, datamodule=data, ckpt_path=resume, weights_only=True)
        except SystemExit as stop:  # how Lightning ends a fit that a signal stopped
            raise _interrupted(stop, out.checkpoint) from None
        except PipelineError:
            if recorder.run is not None:
                raise
            # Metrics are reduced over all ranks, so rank 0 meets this too and reports it;
            # a non-zero exit here would make Lightning's launcher kill rank 0 first.
        if recorder.run is None:  # a DDP rank other than 0: rank 0 alone writes
            sys.stdout.flush()
            sys.exit(0)
        wall_s = time.perf_counter() - started
        run, last_epoch = recorder.run, recorder.history[-1]["epoch"]  # early stopping: < epochs
        kept_epoch = recorder.best_epoch if cfg.train.keep_best else last_epoch
        if cfg.train.keep_best:
            net.load_state_dict(recorder.best_state)
        record = {"train_wall_s": wall_s, "epochs": recorder.timings}
        record["numerics"] = numerics.record(cfg.trainer)
        with writing(out.model, out.history, out.timings) as (model_dir, history, timings):
            networks.save(net, model_dir, cfg.model.name, kept_epoch)
            write_history(recorder.history, history)
            timings.write_text(json.dumps(record, indent=2) + "\n")
        if out.checkpoint is not None:
            out.checkpoint.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # its folder too, unless something else is there
                out.checkpoint.parent.rmdir()
        weights = out.model / networks.WEIGHTS
        run.tag(store.WEIGHTS_TAG, provenance.sha256(weights))
        reached = probes.first_reached(recorder.readings, cfg.train.targets)
        run.metrics({"kept_epoch": kept_epoch, "train_wall_s": wall_s, **reached})
        if last_epoch < cfg.train.epochs:
            run.metrics({"stopped_epoch": last_epoch})
            print(f"train: early stopping after epoch {last_epoch} of {cfg.train.epochs}")
        run.artifacts(weights, out.history)
    return Trained(run, weights, kept_epoch, recorder.best_acc)


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
