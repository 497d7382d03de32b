"""The LightningModule around a plain nn.Module (lenet_mnist.model.networks), so that
evaluation and export never import Lightning."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F  # noqa: N812

from lenet_mnist.config.schema import OptimizerConfig
from lenet_mnist.errors import DivergedError
from lenet_mnist.training.batches import Batch
from lenet_mnist.training.optimizer import make_optimizer


def forward_loss(
    net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The part of a step that torch.compile fuses: forward, loss and the epoch-sum stats
    [loss summed over the batch, correct predictions]."""
    logits = net(x)
    loss = F.cross_entropy(logits, y)
    return loss, torch.stack((loss.detach() * len(y), (logits.argmax(1) == y).sum()))


class Classifier(pl.LightningModule):
    """Trains `net` with one optimizer update per batch. Loss and accuracy are summed on the
    device and reduced once per epoch: Lightning's per-step `self.log` costs more than LeNet-5."""

    def __init__(
        self,
        net: torch.nn.Module,
        optimizer: OptimizerConfig,
        lr: float,
        total_updates: int,
        compile: bool,
    ) -> None:
        super().__init__()
        self.net, self.optimizer_cfg = net, optimizer
        self.lr, self.total_updates = lr, total_updates
        self.forward_loss = torch.compile(forward_loss) if compile else forward_loss
        self.automatic_optimization = False
        self.sums: dict[str, torch.Tensor] = {}  # split -> [loss * n, correct]
        self.counts: dict[str, int] = {}

    def _step(self, batch: Batch, split: str) -> torch.Tensor:
        x, y = batch
        loss, stats = self.forward_loss(self.net, x, y)
        self.sums[split] = self.sums.get(split, 0) + stats
        self.counts[split] = self.counts.get(split, 0) + len(y)
        return loss

    def running_loss(self, split: str) -> float | None:
        """The mean loss of the epoch so far on this device, for the progress bar."""
        return float(self.sums[split][0]) / self.counts[split] if split in self.sums else None

    def training_step(self, group: list[Batch], _: int) -> None:
        """One optimizer update per batch of the group (see `trainer.batch_group`)."""
        # Manual optimization: a hand-written loop's steps, without automatic's closures.
        opt, scheduler = self.optimizers(), self.lr_schedulers()
        for batch in group:
            opt.zero_grad(set_to_none=True)
            self.manual_backward(self._step(batch, "train"))
            opt.step()
            if scheduler is not None:
                scheduler.step()

    def validation_step(self, batch: Batch, _: int) -> None:
        self._step(batch, "val")

    def _log_epoch(self, split: str) -> None:
        """The epoch's mean loss and accuracy over all devices: the one sync per epoch."""
        if split not in self.sums:
            return
        sums = self.sums.pop(split)
        mine = torch.cat((sums, sums.new_tensor([float(self.counts.pop(split))])))
        # [loss * n, correct, n], summed over the ranks in one collective call
        total = self.trainer.strategy.reduce(mine, reduce_op="sum")
        loss, acc = total[0] / total[2], total[1] / total[2]
        if not torch.isfinite(loss):  # one host sync per epoch, as the logging makes anyway
            raise DivergedError(
                f"training diverged: the {split} loss was {loss.item()} in epoch "
                f"{self.current_epoch + 1} (after {self.global_step} optimizer updates); "
                f"no weights or metrics were written. Lower optimizer.lr (now {self.lr:g})"
            )
        self.log_dict({f"{split}_loss": loss, f"{split}_acc": acc})

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def configure_optimizers(self):  # noqa: ANN201 - Lightning accepts several shapes
        opt, sched = make_optimizer(
            self.optimizer_cfg, self.lr, self.net.parameters(), self.total_updates
        )
        return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}
