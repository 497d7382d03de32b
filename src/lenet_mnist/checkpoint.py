"""A training checkpoint that resumes bit for bit, written atomically at an epoch's end.

It holds everything the rest of the fit depends on: the weights, the optimizer's and the
schedule's state, the batch order's generator, PyTorch's global random state, the
epochs recorded so far and the MLflow run they went to. Lightning's own resume does not
restore the batch order, so it does not give the same bits; this one does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def save(path: Path, state: dict[str, Any]) -> None:
    """Write `state` beside `path` and rename it into place: a kill leaves the old one whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}-partial-{os.getpid()}")
    torch.save(state, partial)
    os.replace(partial, path)


def load(path: Path | None, key: str) -> dict[str, Any] | None:
    """The checkpoint at `path` if it was written for this config and data (`key`)."""
    if path is None or not path.is_file():
        return None
    state = torch.load(path, weights_only=True)  # tensors and plain values: no code runs
    return state if state.get("key") == key else None


def remove(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)
