"""Stage 3, train: fit LeNet-5 with PyTorch Lightning and record every epoch in MLflow.

Outputs that DVC hashes are deterministic (weights, per-epoch history); timings, which
are not, go only to MLflow and to a timings file that no stage declares.

Under DDP (`trainer.devices` > 1) Lightning starts this same command once per further
rank; every rank trains its shard, and only rank 0 records to MLflow and writes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import NoReturn

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint, EarlyStopping
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from lenet_mnist import checkpoint, config, model, numerics, prepare, probes, provenance, tracking
from lenet_mnist.batches import Grouped, TensorBatches
from lenet_mnist.classifier import Classifier
from lenet_mnist.console import IterationBar, on_terminal
from lenet_mnist.epochs import EpochRecorder, save_checkpoint, write_history
from lenet_mnist.numerics import MODES
from lenet_mnist.optimizer import effective_lr
from lenet_mnist.schema import Config, TrainConfig
from lenet_mnist.stage import PipelineError, run_stage, writing

PROGRESS_REFRESH_STEPS = 25
# Metrics are epoch-level; a large interval spares Lightning a per-step look for step metrics.
LOG_EVERY_N_STEPS = 1_000_000


def quiet_lightning() -> None:
    """Hide messages every run would print that concern Lightning itself, not this run:
    its own upgrades, an ad, the step-metrics interval set high on purpose, and the end.

    Process-wide, so only entry points call it: the stage, a Hydra job, the benchmark."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings("ignore", message=r"The number of training batches .* logging")
    # Classifier reduces its epoch metrics over the ranks itself, before it logs them.
    warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\(.*sync_dist")
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_no_ads)


def _no_ads(record: logging.LogRecord) -> bool:
    message = record.getMessage()  # the epoch lines already say that the last epoch ended
    return "litlogger" not in message and "`Trainer.fit` stopped: `max_epochs" not in message


def train_batches(
    x: torch.Tensor, y: torch.Tensor, t: TrainConfig, rank: int = 0, world_size: int = 1
) -> TensorBatches:
    """This rank's shuffled training batches as the `train` group sets them."""
    return TensorBatches(
        x,
        y,
        t.batch_size,
        shuffle=True,
        seed=t.seed,
        drop_last=t.drop_last,
        rank=rank,
        world_size=world_size,
    )


def lightning_batches(
    x: torch.Tensor, y: torch.Tensor, cfg: Config, trainer: pl.Trainer
) -> Grouped:
    """The trainer's rank's training batches, in the groups each training_step receives."""
    batches = train_batches(x, y, cfg.train, trainer.global_rank, trainer.world_size)
    return Grouped(batches, cfg.trainer.batch_group)


def to_tensors(prepared: Path, split: str, device: torch.device) -> tuple[torch.Tensor, ...]:
    x, y = prepare.load(prepared, split)
    return torch.from_numpy(x.copy()).to(device), torch.from_numpy(y.copy()).to(device)


def make_trainer(
    cfg: Config, callbacks: list[pl.Callback], epochs: int | None = None
) -> pl.Trainer:
    """A Trainer from the `trainer` group; epochs come from `train`, the one place they live.

    It has no Lightning logger: EpochRecorder sends each epoch to MLflow itself.
    """
    epochs = epochs or cfg.train.epochs
    if patience := cfg.train.early_stopping.patience:
        # Classifier logs val_acc once per validation, reduced over every rank.
        stop = EarlyStopping("val_acc", patience=patience, mode="max", verbose=False)
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
            deterministic=MODES[cfg.trainer.reproducible].deterministic,
            enable_progress_bar=bar,
            logger=False,
            callbacks=callbacks,
            # EpochRecorder is the only checkpoint: it keeps the best weights in memory.
            enable_checkpointing=any(isinstance(cb, Checkpoint) for cb in callbacks),
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


def fit(
    cfg: Config,
    prepared: Path,
    trainer: pl.Trainer,
    recorder: EpochRecorder,
    resume: dict | None,
    save: Path | None,
) -> dict:
    """Train the seeded network, from a checkpoint's epoch if `resume`; return it with the
    fit's wall time. Every `train.checkpoint_every` epochs the state goes to `save`."""
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    net = model.build(cfg.model.name)  # first draw from the seeded generator: the init
    x, y = to_tensors(prepared, "train", trainer.strategy.root_device)
    vx, vy = to_tensors(prepared, "val", trainer.strategy.root_device)
    batches = lightning_batches(x, y, cfg, trainer)
    steps = len(batches.batches)  # this rank's updates per epoch: its shard's batches
    lr = effective_lr(cfg)
    if resume is None and recorder.run is not None:  # rank 0 alone has a run
        derived = {
            "derived.train_size": recorder.train_size,
            "derived.iterations_per_epoch": steps,
            "derived.total_updates": steps * cfg.train.epochs,
            "derived.lr": lr,
        }
        recorder.run.params({**config.flat(cfg), **derived, **numerics.record(cfg.trainer)})
    val = TensorBatches(
        vx, vy, 1024, shuffle=False, rank=trainer.global_rank, world_size=trainer.world_size
    )
    if trainer.is_global_zero:  # the ranks train alike; rank 0 measures and records
        test = to_tensors(prepared, "test", x.device) if cfg.train.test_every_epoch else None
        recorder.probes = probes.Probes(cfg.train, (x, y), (vx, vy), test)
    classifier = Classifier(net, cfg.optimizer, lr, steps * cfg.train.epochs, cfg.trainer.compile)
    if resume is not None:
        net.load_state_dict(resume["net"])
        batches.batches.generator.set_state(resume["batch_order"])
        torch.set_rng_state(resume["rng"])
        recorder.restore(resume)
        classifier.resume = resume
        if trainer.early_stopping_callback is not None:
            trainer.early_stopping_callback.load_state_dict(resume["early_stopping"])
    if save is not None and cfg.train.checkpoint_every:
        recorder.checkpoint = lambda epoch, step: save_checkpoint(
            cfg, save, recorder, trainer, net, batches, epoch, step
        )
    pinned = cfg.trainer.threads or MODES[cfg.trainer.reproducible].threads
    if trainer.world_size > 1 and pinned:  # else DDP's launcher sets cores / processes
        os.environ.setdefault("OMP_NUM_THREADS", str(pinned))
    started = time.perf_counter()
    trainer.fit(classifier, batches, val)
    return {"net": net, "wall_s": time.perf_counter() - started}


def train(
    cfg: Config,
    prepared: Path,
    out: Path,
    history: Path,
    timings: Path,
    tags: dict[str, str] | None = None,
    resumable: Path | None = None,
) -> dict:
    """Fit, keep the chosen weights, write outputs, record the run; return a summary.

    `tags` go onto the MLflow run, such as a sweep's parent run id and the config hash.
    `resumable` is the checkpoint file: a fit killed after one resumes from it, under
    the same MLflow run, and it is removed once the outputs are written.
    """
    # cuBLAS needs this before CUDA starts to run its matmuls deterministically.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    stats = prepare.read_stats(prepared)
    key = config.config_hash(cfg, stats["digest"])
    recorder = EpochRecorder(stats["sizes"]["train"], cfg.train.epochs, key)
    resume = checkpoint.load(resumable, recorder.key)
    epochs = cfg.train.epochs - (resume["epoch"] if resume else 0)
    trainer = make_trainer(cfg, [recorder], epochs)  # refuses a missing device before a run
    if not trainer.is_global_zero:  # known now: a DDP launcher set this process's rank
        share_of_fit(cfg, prepared, trainer, recorder, resume)
    mlflow = tracking.client(cfg.logger)
    if resume is not None:
        run = tracking.Recorder(mlflow, resume["run_id"])
        run.reopen()
        print(f"train: resuming after epoch {resume['epoch']} from {resumable}")
    else:
        run_tags = {**provenance.run_tags(prepared, stats["digest"]), **(tags or {})}
        run_name = f"bs{cfg.train.batch_size}-ep{cfg.train.epochs}"
        run = tracking.Recorder.create(mlflow, cfg.logger.experiment_name, run_name, run_tags)
    with run:
        recorder.run = run
        done = fit(cfg, prepared, trainer, recorder, resume, resumable)
        last_epoch = recorder.history[-1]["epoch"]  # before train.epochs if stopped early
        kept_epoch = recorder.best_epoch if cfg.train.keep_best else last_epoch
        if cfg.train.keep_best:
            done["net"].load_state_dict(recorder.best_state)
        record = {
            "train_wall_s": done["wall_s"],
            "epochs": recorder.timings,
            "numerics": numerics.record(cfg.trainer),
        }
        with writing(out, history, timings) as (model_dir, history_file, timings_file):
            model.save(done["net"], model_dir, cfg.model.name, kept_epoch)
            write_history(recorder.history, history_file)
            timings_file.write_text(json.dumps(record, indent=2) + "\n")
        checkpoint.remove(resumable)
        weights = out / model.WEIGHTS
        run.tag(tracking.WEIGHTS_TAG, provenance.sha256(weights))
        # Compilation, validation and Lightning included: the time a user waits for the fit.
        run.metrics({"kept_epoch": kept_epoch, "train_wall_s": done["wall_s"]})
        run.metrics(probes.first_reached(recorder.readings, cfg.train.targets))
        if last_epoch < cfg.train.epochs:
            run.metrics({"stopped_epoch": last_epoch})
            print(f"train: early stopping after epoch {last_epoch} of {cfg.train.epochs}")
        run.artifacts(weights, history)
    return {
        "run": run,
        "run_id": run.run_id,
        "weights": weights,
        "kept_epoch": kept_epoch,
        "best_val_acc": recorder.best_acc,
    }


def share_of_fit(
    cfg: Config, prepared: Path, trainer: pl.Trainer, recorder: EpochRecorder, resume: dict | None
) -> NoReturn:
    """A DDP rank other than 0: compute its shard of every step, then end the process.

    Rank 0 alone records to MLflow and writes. Ending here keeps any caller (the stage, a
    Hydra job that evaluates next) from writing or printing a second time. A PipelineError
    comes from metrics reduced over all ranks, so rank 0 meets it too and reports it; a
    non-zero exit here would make Lightning's launcher kill rank 0 before it could.
    """
    with contextlib.suppress(PipelineError):
        fit(cfg, prepared, trainer, recorder, resume, save=None)
    sys.stdout.flush()
    sys.exit(0)


def main() -> None:
    """The DVC stage: paths from the command line, every value from params.yaml."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prepared", type=Path, help="folder from the prepare stage")
    parser.add_argument("out", type=Path, help="folder for weights.safetensors")
    parser.add_argument("--history", type=Path, required=True, help="per-epoch CSV (DVC plots)")
    parser.add_argument("--timings", type=Path, required=True, help="per-epoch timings JSON")
    parser.add_argument("--checkpoint", type=Path, help="a resumable state, kept until done")
    parser.add_argument("--params", default="params.yaml", help="the composed config")
    args = parser.parse_args()
    cfg = config.load(args.params)
    numerics.pin(cfg.trainer)
    quiet_lightning()
    summary = train(
        cfg, args.prepared, args.out, args.history, args.timings, resumable=args.checkpoint
    )
    print(f"train: kept epoch {summary['kept_epoch']} (val acc {summary['best_val_acc']:.4f})")
    print(summary["run"].where("train"))


if __name__ == "__main__":
    run_stage(main)
