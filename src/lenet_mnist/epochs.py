"""What each training epoch leaves behind: timings, the history, the best weights, and
every `train.checkpoint_every` epochs a checkpoint to resume from."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint

from lenet_mnist import checkpoint, tracking
from lenet_mnist.console import epoch_line

HISTORY_FIELDS = ("epoch", "iteration", "lr", "train_loss", "train_acc", "val_loss", "val_acc")


def clock(device: torch.device) -> float:
    """Wall time once the device has finished its queued work, so intervals are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def cpu_copy(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights as they are now, copied off the device: training goes on changing them."""
    return {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}


class EpochRecorder(Checkpoint):
    """Per-epoch timing and metrics for MLflow, the history for DVC plots, the best weights.

    A Checkpoint subclass because it keeps the best weights, and so that Lightning calls
    its on_train_epoch_end after the module's, when the epoch's metrics are logged.
    """

    def __init__(self, train_size: int, epochs: int, key: str) -> None:
        # key: the config hash a checkpoint keeps
        self.train_size, self.epochs, self.key = train_size, epochs, key
        self.run: tracking.Recorder | None = None
        self.history: list[dict[str, float]] = []
        self.timings: list[dict[str, float]] = []
        self.best_acc, self.best_epoch, self.best_state = -1.0, -1, None
        self.done_epochs, self.done_steps = 0, 0  # before this fit: a resumed checkpoint's
        self.checkpoint: Callable[[int, int], None] | None = None  # (epoch, step) -> save

    def state(self) -> dict:
        keys = ("history", "timings", "best_acc", "best_epoch", "best_state")
        return {k: getattr(self, k) for k in keys}

    def restore(self, state: dict) -> None:
        for key, value in state["recorder"].items():
            setattr(self, key, value)
        self.done_epochs, self.done_steps = state["epoch"], state["step"]

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.t_start = clock(module.device)

    def on_validation_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.t_val = clock(module.device)

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        now = clock(module.device)
        train_s = self.t_val - self.t_start
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        epoch = self.done_epochs + trainer.current_epoch + 1
        step = self.done_steps + trainer.global_step
        timing = {
            "epoch_time_s": train_s,
            "samples_per_s": self.train_size / train_s,
            "val_time_s": now - self.t_val,
        }
        self.timings.append({"epoch": epoch, **timing})
        row = {
            "epoch": epoch,
            "iteration": step,
            "lr": lr,
            **{k: metrics[k] for k in HISTORY_FIELDS[3:]},
        }
        self.history.append(row)
        if trainer.is_global_zero:
            total = trainer.global_step // (trainer.current_epoch + 1) * self.epochs
            print(epoch_line(epoch, self.epochs, step, total, {**row, **timing}), flush=True)
        if self.run is not None:
            # MLflow's step axis counts iterations too; `epoch` is logged from 1, as printed.
            self.run.metrics({**metrics, **timing, "lr": lr, "epoch": epoch}, step=step)
        if metrics["val_acc"] > self.best_acc:
            self.best_acc, self.best_epoch = metrics["val_acc"], epoch
            self.best_state = cpu_copy(module.net)
        if self.checkpoint is not None:
            self.checkpoint(epoch, step)


def save_checkpoint(cfg, path, recorder, trainer, net, batches, epoch, step) -> None:  # noqa: ANN001
    """Save what the rest of the fit needs, at the end of every `checkpoint_every`-th epoch."""
    if epoch % cfg.train.checkpoint_every or epoch == cfg.train.epochs:
        return
    schedulers = trainer.lr_scheduler_configs
    checkpoint.save(
        path,
        {
            "key": recorder.key,
            "run_id": recorder.run.run_id,
            "epoch": epoch,
            "step": step,
            "net": cpu_copy(net),
            "optimizer": trainer.optimizers[0].state_dict(),
            "scheduler": schedulers[0].scheduler.state_dict() if schedulers else None,
            "batch_order": batches.batches.generator.get_state(),
            "rng": torch.get_rng_state(),
            "recorder": recorder.state(),
        },
    )
