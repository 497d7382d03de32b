"""The prepared splits as a LightningDataModule, moved whole to the training device, in
seeded batches (lenet_mnist.training.batches)."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch

from lenet_mnist.config.schema import TrainConfig
from lenet_mnist.data import prepare
from lenet_mnist.training.batches import Grouped, TensorBatches

VAL_BATCH = 1024


def to_tensors(prepared: Path, split: str, device: torch.device) -> tuple[torch.Tensor, ...]:
    x, y = prepare.read_split(prepared, split)
    return torch.from_numpy(x.copy()).to(device), torch.from_numpy(y.copy()).to(device)


def train_batches(
    x: torch.Tensor, y: torch.Tensor, t: TrainConfig, rank: int = 0, world_size: int = 1
) -> TensorBatches:
    """A rank's shuffled training batches as the `train` group sets them."""
    return TensorBatches(
        x, y, t.batch_size, shuffle=True, seed=t.seed, drop_last=t.drop_last,
        rank=rank, world_size=world_size,
    )  # fmt: skip


class MnistData(pl.LightningDataModule):
    """Training batches in groups of `batch_group` per Lightning step; validation in order."""

    def __init__(self, prepared: Path, train: TrainConfig, batch_group: int) -> None:
        super().__init__()
        self.prepared, self.cfg, self.batch_group = prepared, train, batch_group

    def setup(self, stage: str) -> None:
        """Once Lightning knows the device and the rank: the splits, moved there whole."""
        device, t = self.trainer.strategy.root_device, self.trainer
        self.train_xy = to_tensors(self.prepared, "train", device)
        self.val_xy = to_tensors(self.prepared, "val", device)
        with_test = self.cfg.test_every_epoch and t.is_global_zero  # for a probe on rank 0
        self.test_xy = to_tensors(self.prepared, "test", device) if with_test else None
        self.batches = train_batches(*self.train_xy, self.cfg, t.global_rank, t.world_size)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The batch order's generator, which Lightning saves in a checkpoint and restores on
        resume. Lightning also saves a training iterable's own `state_dict`, but loads it
        only when resuming mid-epoch, never from a checkpoint at an epoch's end."""
        return {"batch_order": self.batches.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.batches.generator.set_state(state["batch_order"])

    def transfer_batch_to_device(self, batch, device, dataloader_idx):  # noqa: ANN001, ANN201
        return batch  # already slices of tensors on the training device

    def train_dataloader(self) -> Grouped:
        return Grouped(self.batches, self.batch_group)

    def val_dataloader(self) -> TensorBatches:
        t = self.trainer
        return TensorBatches(
            *self.val_xy, VAL_BATCH, shuffle=False, rank=t.global_rank, world_size=t.world_size
        )
