"""What a user sees while training: Lightning's bar, counting optimizer updates, on a
terminal only, and one permanent line per epoch."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar


def epoch_line(epoch: int, epochs: int, iteration: int, iterations: int, row: dict) -> str:
    """`row` holds the epoch's history values and timings."""
    width = len(str(epochs))
    return (
        f"epoch {epoch:>{width}}/{epochs}  iteration {iteration:,}/{iterations:,}  "
        f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.2%}  "
        f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.2%}  "
        f"lr {row['lr']:.2e}  {row['epoch_time_s']:.1f} s  {row['samples_per_s']:,.0f} img/s"
    )


class UpdatesBar(TQDMProgressBar):
    """Lightning's bar, counting optimizer updates rather than training_step calls (each
    takes `batch_group` batches), with the epoch's running train loss."""

    def __init__(self, batch_group: int, refresh_updates: int) -> None:
        # Redrawn at every multiple of the refresh rate: a multiple of the group size.
        super().__init__(max(1, refresh_updates // batch_group) * batch_group, leave=True)
        self.batch_group = batch_group

    @property
    def total_train_batches(self) -> int:
        return len(self.trainer.train_dataloader.batches)  # batches.Grouped of TensorBatches

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        total = self.train_progress_bar.total
        super().on_train_batch_end(
            trainer, module, outputs, batch, min((batch_idx + 1) * self.batch_group, total) - 1
        )

    def get_metrics(self, trainer: pl.Trainer, module: pl.LightningModule) -> dict[str, str]:
        loss = module.running_loss("train")  # one host sync per refresh
        return {"loss": "…" if loss is None else f"{loss:.4f}"}
