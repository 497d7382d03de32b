"""Batches sliced from tensors already in memory, and the arithmetic of an epoch.

For a model as small as LeNet-5, a DataLoader's per-sample __getitem__ and collate cost
more than the arithmetic. Here one seeded permutation per epoch is drawn on the data's
own device and each batch is a single gather, so the accelerator never waits for data.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

# (images, labels), or (images, labels, real) where only the first `real` samples count
# in the epoch's metrics: the rest repeat samples that another rank holds.
Batch = tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, int]


def iterations_per_epoch(num_samples: int, batch_size: int, drop_last: bool = False) -> int:
    """One iteration per batch: ceil(N / batch_size), or floor when the partial one is dropped."""
    if drop_last:
        return num_samples // batch_size
    return math.ceil(num_samples / batch_size)


def batch_sizes(num_samples: int, batch_size: int, drop_last: bool = False) -> list[int]:
    """The size of every batch in an epoch; only the last one can be smaller."""
    n = iterations_per_epoch(num_samples, batch_size, drop_last)
    return [min(batch_size, num_samples - i * batch_size) for i in range(n)]


class TensorBatches:
    """An iterable of (images, labels) batches for Lightning, re-shuffled on each pass.

    The generator lives as long as the iterable, so epoch k always sees the k-th
    permutation of the seed: the batch order is a function of (seed, epoch) only.

    Under DDP every rank builds this with its own `rank` and the same seed: each draws the
    same permutation and keeps every `world_size`-th sample from position `rank` on, so
    the shards are disjoint and together cover the set. As DistributedSampler does, the
    permutation is first padded by wrapping around, so that every rank makes the same
    number of steps (DDP would hang on a rank with one batch fewer). A padded sample
    still trains, as under DistributedSampler, but the batch that holds it says how many
    of its samples are real, so the epoch's loss and accuracy count every sample once.
    """

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

    @property
    def real(self) -> int:
        """How many leading positions of this rank's shard hold samples of its own.

        Padding takes global positions N and on, so it is the tail of a shard, and with
        fewer than `world_size` positions added no shard holds more than one of it.
        """
        return len(range(self.rank, len(self.labels), self.world_size))

    def __iter__(self) -> Iterator[Batch]:
        """Each batch as (images, labels); the one that holds padding as (images, labels,
        how many of its leading samples are real), so that the epoch's sums can skip the
        rest. One process never pads, so its batches stay (images, labels)."""
        bs, order = self.batch_size, self._order()
        for i in range(len(self)):
            start, stop = i * bs, (i + 1) * bs
            if order is None:  # one process, file order: slices are views, no gather
                x, y = self.images[start:stop], self.labels[start:stop]
            else:
                idx = order[start:stop]
                x, y = self.images[idx], self.labels[idx]
            yield (x, y) if min(stop, self.per_rank) <= self.real else (x, y, self.real - start)

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
    """Lists of `size` consecutive batches, for several optimizer updates per Lightning step.

    Lightning spends a fixed time on its hooks at every training_step; handing it groups
    of batches pays that once per group. The updates and their order stay the same.
    """

    def __init__(self, batches: TensorBatches, size: int) -> None:
        self.batches, self.size = batches, size

    def __len__(self) -> int:
        return math.ceil(len(self.batches) / self.size)

    def __iter__(self) -> Iterator[list[Batch]]:
        group = []
        for batch in self.batches:
            group.append(batch)
            if len(group) == self.size:
                yield group
                group = []
        if group:
            yield group
