"""What a user sees while training: a live bar within each epoch, and one permanent line
per epoch, both counting iterations (optimizer updates) and epochs from 1.

The bar is drawn only on a terminal; in CI and in log files only the epoch lines appear.
"""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks.progress.progress_bar import ProgressBar
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def on_terminal() -> bool:
    """Whether a live bar can be redrawn in place: rich's test (a TTY, or TTY_INTERACTIVE=1)."""
    return Console().is_interactive


def epoch_line(epoch: int, epochs: int, iteration: int, iterations: int, row: dict) -> str:
    """The line an epoch leaves on screen: where training is, and how well and fast it goes.

    `row` holds the epoch's history values and timings (losses, accuracies, lr, seconds).
    """
    width = len(str(epochs))
    return (
        f"epoch {epoch:>{width}}/{epochs}  iteration {iteration:,}/{iterations:,}  "
        f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.2%}  "
        f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.2%}  "
        f"lr {row['lr']:.2e}  {row['epoch_time_s']:.1f} s  {row['samples_per_s']:,.0f} img/s"
    )


class IterationBar(ProgressBar):
    """A live bar over the iterations of the current epoch, with the running train loss.

    Lightning hands a training_step several batches at once (`trainer.batch_group`); the
    bar advances by the updates each call made, so the count is always optimizer updates.
    """

    def __init__(self, epochs: int, done_epochs: int, refresh: int) -> None:
        super().__init__()
        self.epochs, self.done_epochs, self.refresh = epochs, done_epochs, refresh
        self.enabled = True
        self.progress: Progress | None = None
        self.task = None

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not (self.enabled and trainer.is_global_zero):
            return
        if self.progress is None:
            self._start()
        epoch = self.done_epochs + trainer.current_epoch + 1
        per_epoch = len(trainer.train_dataloader.batches)  # batches.Grouped of TensorBatches
        fields = {"total": per_epoch, "description": f"epoch {epoch}/{self.epochs}", "loss": "…"}
        if self.task is None:
            self.task = self.progress.add_task(**fields)
        else:
            self.progress.reset(self.task, **fields)

    def _start(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("iterations  loss {task.fields[loss]}"),
            TimeRemainingColumn(),
            transient=True,  # the epoch line replaces it; scrollback keeps only those
            refresh_per_second=4,  # redrawn by a thread of its own, beside the training one
        )
        self.progress.start()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if self.progress is None:
            return
        self.progress.advance(self.task, len(batch))
        if batch_idx % self.refresh == 0:
            loss = module.running_loss("train")  # one host sync per refresh
            self.progress.update(self.task, loss="…" if loss is None else f"{loss:.4f}")

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._stop()

    def on_exception(self, trainer, module, exception) -> None:  # noqa: ANN001
        self._stop()

    def _stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress, self.task = None, None
