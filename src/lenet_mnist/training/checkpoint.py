"""A training checkpoint that resumes bit for bit, written atomically at an epoch's end.

It holds everything the rest of the fit depends on: the weights, the optimizer's and the
schedule's state, the batch order's generator, PyTorch's global random state, the
epochs recorded so far and the MLflow run they went to. Lightning's own checkpoint and
resume do not restore the batch order of an iterable that is not a DataLoader, so they
do not give the same bits; this one does (docs/architecture.md).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import pickle
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
    with open(partial, "wb") as file:  # torch's own writer hides the system's error
        torch.save({f.name: getattr(state, f.name) for f in dataclasses.fields(state)}, file)
    os.replace(partial, path)


SET_ASIDE = ".unreadable"  # suffix of a checkpoint that could not be read, kept to look at


def read(path: Path | None, key: str) -> Checkpoint | None:
    """The checkpoint at `path` if it was written for this config and data (`key`).

    A file that is not one of this pipeline's checkpoints (truncated by a full disk, empty,
    corrupted, or another program's) is set aside beside it with one line, and the fit
    starts from the beginning: every later run would otherwise fail on it the same way.
    """
    if path is None or not path.is_file():
        return None
    try:
        state = torch.load(path, weights_only=True)  # tensors and plain values: no code runs
        found = Checkpoint(**state)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ...
        if isinstance(err, OSError) and err.errno not in (None, errno.EINVAL):
            raise  # the disk or the permissions, not the file's content (EINVAL: truncated)
        aside = path.with_name(path.name + SET_ASIDE)
        os.replace(path, aside)
        print(f"train: {path} is not a checkpoint of this pipeline ({_why(err)}); set aside "
              f"as {aside.name}, training starts from epoch 1")  # fmt: skip
        return None
    return found if found.key == key else None


def _why(err: Exception) -> str:
    """What was wrong, in words that never suggest loading the file with code execution
    (torch's own text for a refused object does: weights_only=False)."""
    if isinstance(err, pickle.UnpicklingError) and "Unsupported global" in str(err):
        return "it holds objects other than tensors and plain values"
    if isinstance(err, TypeError | AttributeError):  # a dict of other fields, or no dict
        return "it holds other fields than a training checkpoint"
    return f"unreadable, {type(err).__name__}: truncated, empty or corrupted"


def remove(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)
