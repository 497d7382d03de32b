"""The contract every stage keeps with its user and with DVC.

A stage fails with one line the user can act on, a non-zero exit and no traceback; and
it writes its output folder whole or not at all, so DVC never hashes a half-written one.
"""

from __future__ import annotations

import errno
import gc
import os
import secrets
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class PipelineError(Exception):
    """A problem with the user's input or environment, as opposed to a bug in this code."""


# Operating-system errors that are the user's environment, not a bug: a missing file, a
# full disk or quota, a folder the user may not write.
USER_ERRNOS = (errno.ENOENT, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS)


def exit_on_error(main: Callable[[], T]) -> T:
    """Run a stage entry point so that a PipelineError, or an OSError of the user's
    environment, ends it with one readable line and exit code 2."""
    try:
        return main()
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:
        if err.errno not in USER_ERRNOS:
            raise
        where = f"{err.filename}: " if err.filename else ""
        print(f"error: {where}{err.strerror}", file=sys.stderr)
        sys.exit(2)


def run_stage(main: Callable[[], object]) -> None:
    """A stage's process entry point: exit_on_error, then skip the interpreter's final sweep.

    At exit CPython garbage-collects every object that torch, MLflow and Lightning made at
    import, which takes about as long as a short stage's own work (docs/benchmarks.md).
    gc.freeze() takes them out of that sweep; the OS frees the memory as the process ends,
    and atexit handlers (MLflow's, for one) still run, but objects in reference cycles are
    not finalized: a stage must have closed its files by then (they all use `with`). Only
    at the very end of a process: frozen objects are never collected, so code that goes on
    working afterwards (a sweep's in-process jobs) must not call it.
    """
    exit_on_error(main)
    gc.freeze()


@contextmanager
def writing(*outs: Path) -> Iterator[list[Path]]:
    """Yield a hidden sibling path for each output, to write a file or a folder at; they
    replace the outputs together when the block succeeds, and vanish when it fails.

    Staging left by a killed run of the same stage is removed first: one run of a stage
    writes its outputs at a time, so any earlier staging is dead.
    """
    stagings = []
    for out in map(Path, outs):
        out.parent.mkdir(parents=True, exist_ok=True)
        for dead in out.parent.glob(f".{out.name}-partial-*"):
            _remove(dead)
        stagings.append(out.parent / f".{out.name}-partial-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        yield stagings
        for staging, out in zip(stagings, map(Path, outs), strict=True):
            if staging.is_dir():
                staging.chmod(0o755)
            _remove(out)
            staging.rename(out)
    finally:
        for staging in stagings:
            _remove(staging)


@contextmanager
def replacing(out: Path) -> Iterator[Path]:
    """Yield an empty hidden folder that replaces `out` only if the block succeeds."""
    with writing(out) as (staging,):
        staging.mkdir()
        yield staging


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
