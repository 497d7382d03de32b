"""Lightning's checkpoint of a fit, written atomically, and the check that decides whether
a fit resumes from it (bit-identically: tests/training/test_checkpoint.py)."""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins import TorchCheckpointIO

RECORDER = "EpochRecorder"  # the recorder's key among the checkpoint's callback states


def saver(path: Path, every: int) -> ModelCheckpoint:
    """Lightning's ModelCheckpoint, writing `path` at the end of every `every`-th epoch."""
    saving = ModelCheckpoint(
        dirpath=path.parent,
        filename=path.stem,
        every_n_epochs=every,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    saving.FILE_EXTENSION = path.suffix
    return saving


class AtomicIO(TorchCheckpointIO):
    """Lightning's writer moves the file from the system's temporary folder, a copy where
    that is another file system, which a kill can cut short: here it is renamed into place
    from beside it, so a kill leaves the old checkpoint whole."""

    def save_checkpoint(self, checkpoint: dict, path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}-partial-{os.getpid()}")
        with open(partial, "wb") as file:  # torch's own writer hides the system's error
            torch.save(checkpoint, file)
        os.replace(partial, path)


def recorded(path: Path | None, key: str) -> dict[str, Any] | None:
    """The recorder's state in the checkpoint at `path` if it was written for this config
    and data (`key`). A file that is not such a checkpoint is set aside with one line, and
    the fit starts over: every later run would otherwise fail on it the same way."""
    if path is None or not path.is_file():
        return None
    try:
        state = torch.load(path, weights_only=True)["callbacks"][RECORDER]  # no code runs
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ...
        if isinstance(err, OSError) and err.errno not in (None, errno.EINVAL):
            raise  # the disk or the permissions, not the file's content (EINVAL: truncated)
        aside = path.with_name(path.name + ".unreadable")  # kept to look at
        os.replace(path, aside)
        print(f"train: {path} is not a checkpoint of this pipeline ({_why(err)}); set aside "
              f"as {aside.name}, training starts from epoch 1")  # fmt: skip
        return None
    return state if state["key"] == key else None


def _why(err: Exception) -> str:
    """What was wrong, in words that never suggest loading the file with code execution
    (torch's own text for a refused object does: weights_only=False)."""
    if isinstance(err, pickle.UnpicklingError) and "Unsupported global" in str(err):
        return "it holds objects other than tensors and plain values"
    if isinstance(err, TypeError | KeyError):  # a dict of other fields, or no dict
        return "it holds other fields than a training checkpoint"
    return f"unreadable, {type(err).__name__}: truncated, empty or corrupted"
