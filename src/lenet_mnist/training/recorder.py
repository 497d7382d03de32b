"""What each training epoch leaves behind: timings, the history, the best weights, the
probes' readings and the MLflow metrics."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint

from lenet_mnist.config.schema import TrainConfig
from lenet_mnist.tracking import store
from lenet_mnist.training import probes
from lenet_mnist.training.progress import epoch_line

HISTORY_FIELDS = ("epoch", "iteration", "lr", "train_loss", "train_acc", "val_loss", "val_acc")


def clock(device: torch.device) -> float:
    """Wall time once the device has finished its queued work, so intervals are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class EpochRecorder(Checkpoint):
    """Per-epoch timing and metrics for MLflow, the history for DVC plots, the best weights.
    A Checkpoint subclass so that Lightning calls its on_train_epoch_end after the module's
    has logged the epoch's metrics; its `state_dict` goes into Lightning's checkpoint."""

    def __init__(self, cfg: TrainConfig, key: str) -> None:
        self.cfg, self.key = cfg, key
        self.run: store.TrackedRun | None = None  # none on DDP ranks > 0: no records, probes
        self.history: list[dict[str, float]] = []
        self.timings: list[dict[str, float]] = []
        self.readings: list[probes.Reading] = []  # every validation accuracy, for the targets
        self.elapsed_s = 0.0  # training seconds of the finished epochs, probes left out
        self.best_acc, self.best_epoch, self.best_state = -1.0, -1, None

    KEPT = ("history", "timings", "elapsed_s", "best_acc", "best_epoch", "best_state")

    def state_dict(self) -> dict[str, Any]:
        """Plain values and tensors only: a checkpoint loads with torch.load(weights_only)."""
        run_id = self.run.run_id if self.run is not None else None
        kept = {k: getattr(self, k) for k in self.KEPT}
        return kept | {"key": self.key, "run_id": run_id, "readings": [*map(tuple, self.readings)]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self.KEPT:
            setattr(self, name, state[name])
        self.readings = [probes.Reading(*r) for r in state["readings"]]

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.t_start = clock(module.device)
        self.probe_s = 0.0  # the probes' seconds in this epoch, left out of its timings

    def on_train_batch_end(self, trainer, module, outputs, group, batch_idx) -> None:  # noqa: ANN001
        """Validation between epochs' ends, when `train.val_every_n_steps` asks for it."""
        step = trainer.global_step  # after this call's updates, one per batch of the group
        if self.run is None or not probes.due(self.cfg, step - len(group), step, self.readings):
            return
        started = clock(module.device)
        acc = probes.accuracy(module.net, *trainer.datamodule.val_xy)
        seconds = self.elapsed_s + started - self.t_start - self.probe_s
        self.readings.append(probes.Reading(step, trainer.current_epoch + 1, seconds, acc))
        self.run.metrics({"step_val_acc": acc}, step=step)
        self.probe_s += clock(module.device) - started

    def on_validation_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.t_val = clock(module.device)

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        val_s = clock(module.device) - self.t_val
        train_s = self.t_val - self.t_start - self.probe_s
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        epoch, step = trainer.current_epoch + 1, trainer.global_step
        samples_per_s = len(trainer.datamodule.train_xy[1]) / train_s
        timing = {"epoch_time_s": train_s, "samples_per_s": samples_per_s, "val_time_s": val_s}
        self.elapsed_s += train_s + val_s
        self.readings.append(probes.Reading(step, epoch, self.elapsed_s, metrics["val_acc"]))
        self.timings.append({"epoch": epoch, **timing})
        row = {"epoch": epoch, "iteration": step, "lr": lr}
        row |= {k: metrics[k] for k in HISTORY_FIELDS[3:]}
        self.history.append(row)
        if trainer.is_global_zero:
            total = trainer.global_step // (trainer.current_epoch + 1) * self.cfg.epochs
            print(epoch_line(epoch, self.cfg.epochs, step, total, {**row, **timing}), flush=True)
        if self.run is not None:
            started, data = clock(module.device), trainer.datamodule
            metrics |= probes.at_epoch_end(self.cfg, module.net, epoch, data.train_xy, data.test_xy)
            metrics["probe_time_s"] = self.probe_s + clock(module.device) - started
            # MLflow's step axis counts iterations too; `epoch` is logged from 1, as printed.
            self.run.metrics({**metrics, **timing, "lr": lr, "epoch": epoch}, step=step)
        if metrics["val_acc"] > self.best_acc:
            self.best_acc, self.best_epoch = metrics["val_acc"], epoch
            weights = module.net.state_dict().items()  # copied off: training goes on changing them
            self.best_state = {k: v.detach().cpu().clone() for k, v in weights}


def write_history(rows: list[dict], path: Path) -> None:
    """Lines end in `\r\n`, floats have 6 digits: the bytes DVC hashed since the start."""
    table = pd.DataFrame(rows, columns=list(HISTORY_FIELDS))
    table.to_csv(path, index=False, float_format="%.6g", lineterminator="\r\n")
