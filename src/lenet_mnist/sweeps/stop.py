"""A sweep ends as one thing: its job processes with it, and no run of it left RUNNING.

A signal to a sweep's process (SIGTERM from a scheduler or `kill`, SIGINT from Ctrl-C) ended
that process alone: the launcher's job processes (joblib's workers, submitit's) ran on and
registered their models, and the parent run stayed RUNNING until the next start; so did a
sweep that failed in its own process (a full disk under its folder). Hydra calls no callback
on the way out. So from the moment the parent run opens (sweeps.sweep.ParentRun) until it
closes, either signal raises Stopped in the sweep's process, and `ending`, around Hydra's
whole run (lenet_mnist.run), ends the sweep on any way out but success: it kills every
process the sweep started, whatever the launcher, marks the runs they left RUNNING KILLED,
and the parent KILLED (a signal) or FAILED (an error). The entry point then says why in
one line, as every stage does (lenet_mnist.errors); the same command resumes the sweep.
"""

from __future__ import annotations

import contextlib
import re
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TypeVar

import psutil

from lenet_mnist.errors import Interrupted

if TYPE_CHECKING:  # MLflow loads when a sweep runs: `python -m lenet_mnist.run --help` waits not
    from lenet_mnist.tracking.store import TrackedRun

T = TypeVar("T")
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(BaseException):
    """A signal's stop on its way from the sweep's handler to `ending`, with the runs that
    were RUNNING then. Neither an Exception nor a KeyboardInterrupt, so that Lightning (in
    a job that runs in the sweep's process), Hydra and a job's one-line errors let it
    through as it is: only `ending` reports it, with the signal that came."""

    def __init__(self, signum: int, runs: list[str]) -> None:
        super().__init__(signum, runs)
        self.signum, self.runs = signum, runs


@dataclass
class _Open:
    parent: TrackedRun
    name: str
    folder: Path
    handlers: dict[int, object]  # what SIGNALS did before


_open: list[_Open] = []  # the sweep this process runs, while its parent run is open


def watch(parent: TrackedRun, name: str, folder: Path) -> None:
    """Stop the sweep on SIGTERM or SIGINT from now on, until `closed`.

    The jobs die first, so none finishes after the runs are read. Only reads happen here:
    the process may be amid an MLflow write of a job that runs in it; `ending` writes.
    """

    def stop(signum: int, frame: FrameType | None) -> None:
        _hold()
        _kill_children()
        raise Stopped(signum, _running(parent))

    _open[:] = [_Open(parent, name, folder, {s: signal.getsignal(s) for s in SIGNALS})]
    for each in SIGNALS:
        signal.signal(each, stop)


def closed() -> None:
    """The sweep ended well: signals act as they did before it."""
    for sweep in _open:
        for each, handler in sweep.handlers.items():
            signal.signal(each, handler)
    _open.clear()


def in_job() -> None:
    """A sweep's job leaves Ctrl-C to the sweep's process, unless it runs there: a terminal
    sends SIGINT to every process of its group, and each job of a launcher's worker
    processes would report a stop of its own before the sweep kills it."""
    if not _open:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def ending() -> Iterator[None]:
    """Around a Hydra run: a sweep that leaves it any way but success ends as one thing."""
    try:
        yield
    except BaseException as err:
        if _open and not (isinstance(err, SystemExit) and not err.code):
            (sweep,) = _open
            _open.clear()
            _hold()
            _kill_children()
            # A job that ran in this process closed its run as FAILED on its way out.
            jobs = {*_running(sweep.parent), *(err.runs if isinstance(err, Stopped) else ())}
            killed = isinstance(err, Stopped | KeyboardInterrupt)
            _close(sweep.parent, jobs, "KILLED" if killed else "FAILED")
            if isinstance(err, Stopped):
                by = signal.Signals(err.signum).name
                what = f"{len(jobs)} job{'s' * (len(jobs) != 1)} stopped"
                raise Interrupted(
                    err.signum,
                    f"sweep {sweep.name} ({by}): {what}; run the same command to resume",
                ) from None
            _name(sweep.folder, err)
        raise


def _hold() -> None:
    """The sweep ends once: a second Ctrl-C, or a signal amid an error's end, does not cut
    its ending short."""
    for each in SIGNALS:
        signal.signal(each, signal.SIG_IGN)


def named(folder: Path, work: Callable[[], T]) -> T:
    """`work()`; an OSError that names no file (a full disk met by a write or a flush)
    names `folder`, so that its one line (lenet_mnist.errors) says which disk."""
    try:
        return work()
    except OSError as err:
        _name(folder, err)
        raise


def _name(folder: Path, err: BaseException) -> None:
    if isinstance(err, OSError) and err.filename is None:
        err.filename = str(folder)


def _kill_children() -> None:
    """Every process this one started, whatever the launcher that started it, and theirs,
    but those that ignore SIGTERM: helpers that end when this process ends, such as
    multiprocessing's resource tracker under joblib, whose owner starts another, with a
    warning and a traceback, when one is killed."""
    jobs = [job for job in psutil.Process().children(recursive=True) if not _ignores_sigterm(job)]
    for job in jobs:
        with contextlib.suppress(psutil.NoSuchProcess):
            job.kill()
    psutil.wait_procs(jobs, timeout=30)


def _ignores_sigterm(process: psutil.Process) -> bool:
    try:  # Linux's list of the signals a process ignores, a hexadecimal mask
        status = Path(f"/proc/{process.pid}/status").read_text()
    except OSError:
        return False
    mask = re.search(r"^SigIgn:\s*([0-9a-f]+)$", status, re.MULTILINE)
    return bool(mask and int(mask[1], 16) >> (signal.SIGTERM - 1) & 1)


def _running(parent: TrackedRun) -> list[str]:
    """The ids of the sweep's job runs still RUNNING."""
    from lenet_mnist.tracking import store

    query = " and attributes.status = 'RUNNING'"
    return [run.info.run_id for run in store.children(parent.mlflow, parent.run_id, query)]


def _close(parent: TrackedRun, jobs: set[str], status: str) -> None:
    """The jobs' runs KILLED, the parent's `status`: where a sweep that did not finish ends."""
    for job in jobs:
        type(parent)(parent.mlflow, job).close("KILLED")
    parent.close(status)
