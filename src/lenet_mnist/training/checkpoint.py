"""A training checkpoint that resumes bit for bit, written atomically at an epoch's end.

It holds everything the rest of the fit depends on: the weights, the optimizer's and the
schedule's state, the batch order's generator, PyTorch's global random state, the
epochs recorded so far and the MLflow run they went to. Lightning's own checkpoint and
resume do not restore the batch order of an iterable that is not a DataLoader, so they
do not give the same bits; this one does (docs/architecture.md).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class Checkpoint:
    """What the rest of the fit needs; tensors and plain values, for torch.load(weights_only)."""

    key: str  # the config hash it was written for: another config does not resume from it
    run_id: str
    epoch: int
    step: int
    net: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    batch_order: torch.Tensor
    rng: torch.Tensor
    recorder: dict[str, Any]
    early_stopping: dict[str, Any] | None


def save(path: Path, state: Checkpoint) -> None:
    """Write `state` beside `path` and rename it into place: a kill leaves the old one whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}-partial-{os.getpid()}")
    torch.save({f.name: getattr(state, f.name) for f in dataclasses.fields(state)}, partial)
    os.replace(partial, path)


def read(path: Path | None, key: str) -> Checkpoint | None:
    """The checkpoint at `path` if it was written for this config and data (`key`)."""
    if path is None or not path.is_file():
        return None
    state = torch.load(path, weights_only=True)  # tensors and plain values: no code runs
    return Checkpoint(**state) if state.get("key") == key else None


def remove(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)
