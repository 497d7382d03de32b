"""Batches sliced from tensors already in memory, and the arithmetic of an epoch.

For a model as small as LeNet-5, a DataLoader's per-sample __getitem__ and collate cost
more than the arithmetic. Here one seeded permutation per epoch is drawn on the data's
own device and each batch is a single gather, so the accelerator never waits for data.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

Batch = tuple[torch.Tensor, torch.Tensor]  # (images, labels)


def iterations_per_epoch(num_samples: int, batch_size: int, drop_last: bool = False) -> int:
    """One iteration per batch: ceil(N / batch_size), or floor when the partial one is dropped."""
    if drop_last:
        return num_samples // batch_size
    return math.ceil(num_samples / batch_size)


class TensorBatches:
    """An iterable of (images, labels) batches for Lightning, re-shuffled on each pass.

    The generator lives as long as the iterable, so epoch k always sees the k-th
    permutation of the seed: the batch order is a function of (seed, epoch) only.

    Under DDP every rank draws the same permutation and keeps its shard as
    DistributedSampler does: padded by wrapping around to a multiple of `world_size`
    (so every rank makes the same number of steps), then every `world_size`-th sample
    from position `rank` on. As there, the few padded samples count twice in an epoch.
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

    def __iter__(self) -> Iterator[Batch]:
        bs, order = self.batch_size, self._order()
        for i in range(len(self)):
            if order is None:  # one process, file order: slices are views, no gather
                yield self.images[i * bs : (i + 1) * bs], self.labels[i * bs : (i + 1) * bs]
            else:
                idx = order[i * bs : (i + 1) * bs]
                yield self.images[idx], self.labels[idx]

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
