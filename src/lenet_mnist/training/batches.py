"""Batches sliced from tensors on the training device: for LeNet-5 a DataLoader's
per-sample __getitem__ and collate cost more than the arithmetic (docs/architecture.md)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import torch

Batch = tuple[torch.Tensor, torch.Tensor]  # (images, labels)


def iterations_per_epoch(num_samples: int, batch_size: int, drop_last: bool = False) -> int:
    return num_samples // batch_size if drop_last else math.ceil(num_samples / batch_size)


class TensorBatches:
    """(images, labels) batches, one seeded permutation per pass: epoch k sees the k-th
    permutation of the seed. Under DDP every rank draws the same one and keeps its shard as
    DistributedSampler does (wrapped around to a multiple of `world_size`, then every
    `world_size`-th sample from `rank` on)."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size <= len(labels):
            raise ValueError(f"rank={rank} of world_size={world_size} for {len(labels)} samples")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.rank, self.world_size = rank, world_size
        self.per_rank = math.ceil(len(labels) / world_size)
        self.generator = torch.Generator(device=images.device).manual_seed(seed)

    def __len__(self) -> int:
        return iterations_per_epoch(self.per_rank, self.batch_size, self.drop_last)

    def __iter__(self) -> Iterator[Batch]:
        """A generator: Lightning calls `iter` to check the loader, which must draw nothing."""
        order, size = self._order(), self.batch_size
        if order is None:  # one process, file order: slices are views, no gather
            views = zip(self.images.split(size), self.labels.split(size), strict=True)
            yield from itertools.islice(views, len(self))
        else:
            yield from ((self.images[i], self.labels[i]) for i in order.split(size)[: len(self)])

    def _order(self) -> torch.Tensor | None:
        """This rank's sample indices for the next epoch; None for all of them in order."""
        n, device = len(self.labels), self.images.device
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator, device=device)
        elif self.world_size == 1:
            return None
        else:
            order = torch.arange(n, device=device)
        if self.world_size > 1:
            padded = torch.cat([order, order[: self.per_rank * self.world_size - n]])
            order = padded[self.rank :: self.world_size]
        return order


class Grouped:
    """Lists of `size` consecutive batches: Lightning's fixed cost per training_step is paid
    once per group, for the same updates in the same order."""

    def __init__(self, batches: TensorBatches, size: int) -> None:
        self.batches, self.size = batches, size

    def __len__(self) -> int:
        return math.ceil(len(self.batches) / self.size)

    def __iter__(self) -> Iterator[list[Batch]]:
        batches = iter(self.batches)
        return iter(lambda: list(itertools.islice(batches, self.size)), [])
