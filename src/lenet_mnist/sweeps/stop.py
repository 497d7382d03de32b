"""A sweep ends as one thing: while its parent run is open, SIGINT and SIGTERM raise
Stopped, and `ending`, around Hydra's run, ends a sweep that fails or stops: it kills the
processes the sweep started, whatever the launcher, closes the job runs left unfinished,
and the parent KILLED (a signal) or FAILED. Hydra has no callback for either, and a signal
ends the sweep's process alone (docs/architecture.md, "Hydra sweeps").
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import psutil

from lenet_mnist.errors import Interrupted, hold_signals

if TYPE_CHECKING:  # MLflow loads when a sweep runs: `python -m lenet_mnist.run --help` waits not
    from lenet_mnist.tracking.store import TrackedRun

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(BaseException):
    """A signal's stop on its way to `ending`, with the job runs RUNNING when it came. Not a
    KeyboardInterrupt, which Lightning turns into SystemExit, nor an Exception, which Hydra
    and a job's boundary catch: it reaches `ending` as it is."""

    def __init__(self, signum: int, runs: list[str]) -> None:
        super().__init__(signum, runs)
        self.signum, self.runs = signum, runs


_open: list[tuple[TrackedRun, str, Path]] = []  # this process's sweep: parent, name, folder


def _stop(signum: int, frame: FrameType | None) -> None:
    """The jobs die first, so that none finishes after the runs are read. Only reads here:
    the process may be amid an MLflow write of a job that runs in it."""
    if _open:  # else the sweep has ended, or begun to, and the signal waits
        hold_signals()
        _kill_children()
        raise Stopped(signum, _running(_open[0][0]))


def watch(parent: TrackedRun, name: str, folder: Path) -> None:
    """Stop the sweep on SIGTERM or SIGINT from now on, until `closed`."""
    _open[:] = [(parent, name, folder)]
    for each in SIGNALS:
        signal.signal(each, _stop)


def closed() -> None:
    """The sweep ended well: a signal from now on finds nothing to stop."""
    _open.clear()


def in_job() -> None:
    """A job in a launcher's process leaves Ctrl-C, which a terminal sends to the whole
    process group, to the sweep's process: it stops every job and reports once."""
    if not _open:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def ending() -> Iterator[None]:
    """Around a Hydra run: a sweep that leaves it any way but success ends as one thing."""
    try:
        yield
    except BaseException as err:
        if _open and not (isinstance(err, SystemExit) and not err.code):
            (parent, name, folder) = _open.pop()
            hold_signals()
            _kill_children()
            if not isinstance(err, Stopped):
                _close(parent, [], "FAILED")
                named(folder, err)
                raise
            cut = _close(parent, err.runs, "KILLED")
            by, what = signal.Signals(err.signum).name, f"{cut} job{'s' * (cut != 1)}"
            said = f"sweep {name} ({by}): {what} stopped; run the same command to resume"
            raise Interrupted(err.signum, said) from None
        raise


def named(folder: Path, err: BaseException) -> None:
    """An OSError that names no file (a full disk met by a write) names `folder`, the disk."""
    if isinstance(err, OSError) and err.filename is None:
        err.filename = str(folder)


def _kill_children() -> None:
    """Every process this one started, whatever the launcher, and theirs; but a resource
    tracker (joblib's, multiprocessing's) ends with this process, and, killed, is started
    again with a warning that resources might leak."""
    jobs = [p for p in psutil.Process().children(recursive=True) if not _tracker(p)]
    for job in jobs:
        with contextlib.suppress(psutil.NoSuchProcess):
            job.kill()
    psutil.wait_procs(jobs, timeout=30)


def _tracker(process: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return "resource_tracker" in " ".join(process.cmdline())
    return False


def _running(parent: TrackedRun) -> list[str]:
    from lenet_mnist.tracking import store

    query = " and attributes.status = 'RUNNING'"
    return [run.info.run_id for run in store.children(parent.mlflow, parent.run_id, query)]


def _close(parent: TrackedRun, cut: list[str], status: str) -> int:
    """The job runs cut off KILLED, those that failed after their training closed them
    FAILED (they lack the COMPLETE tag), the parent `status`; the count cut off."""
    from lenet_mnist.tracking import store

    runs = store.children(parent.mlflow, parent.run_id)
    stopped = {*cut, *(r.info.run_id for r in runs if r.info.status == "RUNNING")}
    unfinished = {r.info.run_id for r in runs if r.info.status == "FINISHED"
                  and store.COMPLETE_TAG not in r.data.tags}  # fmt: skip
    for ids, how in ((stopped, "KILLED"), (unfinished - stopped, "FAILED")):
        for job in ids:
            type(parent)(parent.mlflow, job).close(how)
    parent.close(status)
    return len(stopped)
