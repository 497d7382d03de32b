"""A sweep ends as one thing: while its parent run is open, SIGINT and SIGTERM raise
Stopped, and `ending` kills the processes the sweep started, whatever the launcher, closes
its unfinished job runs, and the parent KILLED or FAILED (docs/architecture.md)."""

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


class Stopped(BaseException):
    """A signal's stop on its way to `ending`; args: signum, the job runs RUNNING then. Neither
    a KeyboardInterrupt (Lightning makes it SystemExit) nor an Exception (Hydra catches it)."""


_open: list[tuple[TrackedRun, str, Path]] = []  # this process's sweep: parent, name, folder


def _stop(signum: int, frame: FrameType | None) -> None:
    """The jobs die first, so that none finishes after the runs are read; only reads here, as
    the process may be amid an MLflow write."""
    if _open:  # else the sweep has ended, or begun to, and the signal waits
        from lenet_mnist.tracking import store

        hold_signals()
        _kill_children()
        parent = _open[0][0]
        running = store.children(parent.mlflow, parent.run_id, " and attributes.status = 'RUNNING'")
        raise Stopped(signum, [run.info.run_id for run in running])


def watch(parent: TrackedRun, name: str, folder: Path) -> None:
    """Stop the sweep on SIGTERM or SIGINT from now on, until `closed`."""
    _open[:] = [(parent, name, folder)]
    for each in (signal.SIGTERM, signal.SIGINT):
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
            signum, running = err.args
            cut = _close(parent, running, "KILLED")
            by, what = signal.Signals(signum).name, f"{cut} job{'s' * (cut != 1)}"
            said = f"sweep {name} ({by}): {what} stopped; run the same command to resume"
            raise Interrupted(signum, said) from None
        raise


def named(folder: Path, err: BaseException) -> None:
    """An OSError that names no file (a full disk met by a write) names `folder`, the disk."""
    if isinstance(err, OSError) and err.filename is None:
        err.filename = str(folder)


def _kill_children() -> None:
    """Every process this one started, and theirs, but a resource tracker (joblib's,
    multiprocessing's): killed, it is started again with a warning that resources leak."""
    jobs = [p for p in psutil.Process().children(recursive=True) if not _tracker(p)]
    for job in jobs:
        with contextlib.suppress(psutil.NoSuchProcess):
            job.kill()
    psutil.wait_procs(jobs, timeout=30)


def _tracker(process: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return "resource_tracker" in " ".join(process.cmdline())
    return False


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
