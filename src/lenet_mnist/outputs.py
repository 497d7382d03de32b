"""Outputs written whole or not at all, so DVC never hashes a half-written one, and a
failed stage that leaves the last good ones in place."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def writing(*outs: Path) -> Iterator[list[Path]]:
    """Yield a hidden sibling path per output, for a file or a folder: they replace the outputs
    together when the block succeeds, vanish when it fails; a killed run's are removed first."""
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


def restore_deleted() -> None:
    """Put back with `dvc checkout` the outputs `dvc repro` deleted before it ran this failed
    stage (not `persist`: docs/architecture.md). DVC_STAGE is set only where DVC runs it."""
    stage = os.environ.get("DVC_STAGE")
    if not stage:
        return
    checkout = [sys.executable, "-m", "dvc", "checkout", "--quiet", stage]
    if subprocess.run(checkout, capture_output=True, cwd=os.environ.get("DVC_ROOT")).returncode:
        print(f"note: DVC could not restore the last outputs of {stage}; `dvc checkout {stage}` "
              "puts back what dvc.lock records", file=sys.stderr)  # fmt: skip
