"""How every entry point ends: one line the user can act on and an exit code that says
the class of failure, or, for a bug, its traceback (docs/pipeline.md, "Exit codes").

The failures are told apart by class, not case by case: an OSError anywhere in an
exception's chain (or the system's error that a library put in its text) is the
environment, so is an MLflow store that cannot be read or written; a PipelineError is the
input or the configuration. The bottom layer: every package may import it, and it imports
nothing of the package, nor MLflow: a store's error is recognized by its module's name.
"""

from __future__ import annotations

import errno
import gc
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TypeVar

T = TypeVar("T")
INPUT, ENVIRONMENT = 2, 1  # exit codes; a signal's is 128 + its number
LINE_MAX = 400  # an echoed value can be any length: longer lines are cut, their length said


class PipelineError(Exception):
    """A problem with the user's input or configuration, as opposed to a bug in this code."""

    exit_code = INPUT


class UnavailableError(PipelineError):
    """The environment failed the work (a busy store, a silent server, no source answered):
    nothing in the input to change, the same command may succeed later."""

    exit_code = ENVIRONMENT


class DivergedError(PipelineError):
    """The loss became NaN or infinite: the rate is too large for the batch. One run fails
    on it; a sweep job records it as a result and the sweep goes on (sweeps.job)."""


class Interrupted(KeyboardInterrupt):
    """A signal stopped the work: SIGINT (Ctrl-C) or SIGTERM (a scheduler's preemption).

    A KeyboardInterrupt, so that what closes on one (an MLflow run, KILLED) closes on both,
    and so that no `except Exception` in a framework between here and the entry point takes
    it for a failure to carry on from. The process ends with 128 + the signal's number, as
    a shell reports a process the signal ended: a scheduler never reads a success.
    """

    def __init__(self, signum: int, what: str) -> None:
        super().__init__(what)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


# What the user can do, by the system's reason; any other errno gets the last line.
ADVICE = {
    errno.ENOSPC: "the disk is full: free space on it, or write elsewhere",
    errno.EDQUOT: "the disk quota is used up: free space, or ask for a larger quota",
    errno.EACCES: "check the permissions of the file and its folder (ls -l)",
    errno.EPERM: "check its permissions and attributes: an immutable file (lsattr, chattr -i)",
    errno.EROFS: "the file system is read-only: write elsewhere, or remount it writable",
    errno.ENOENT: "check the path, or run the stage that makes it",
    None: "check the path and the disk",
}
ERRNOS = {os.strerror(n).lower(): n for n in errno.errorcode}
# The system's error as libraries put it in their own exceptions' text: Rust's io::Error
# (safetensors), PyTorch's file writer, and Python's own.
SYSTEM_TEXT = re.compile(r"\(os error (\d+)\)|strerror: ([^.\n]+)|\[Errno (\d+)\]")
PATH_TEXT = re.compile(r'at path "([^"]+)"')
STORE_MODULES = ("sqlalchemy", "sqlite3", "mlflow")
PACKAGE = os.path.dirname(os.path.abspath(__file__))
_stores: list[str] = []  # the MLflow stores this process opened, the last one named in a line
_held: list[bool] = []  # set once the process has begun to stop: later signals wait


def opened_store(uri: str) -> None:
    """Name the store that a store's error line speaks of (lenet_mnist.tracking.store)."""
    _stores.append(uri)


def describe(err: BaseException) -> tuple[str, int] | None:
    """The line and exit code for a failure of a known class; None for a bug."""
    if isinstance(err, Interrupted):
        return f"stopped: {err}", err.exit_code
    if isinstance(err, KeyboardInterrupt):
        return "stopped: interrupted (SIGINT)", 128 + signal.SIGINT
    if isinstance(err, PipelineError):
        return f"error: {err}", err.exit_code
    for cause in _chain(err):
        if said := _system(cause) or _store(cause):
            return f"error: {said}", ENVIRONMENT
    return None


def _chain(err: BaseException | None) -> Iterator[BaseException]:
    """The exception and those it was raised from or while handling, innermost last."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)


def _system(err: BaseException) -> str | None:
    """An OSError, or a library's exception whose text carries one, as path, call, reason
    and what to do."""
    if isinstance(err, OSError) and err.errno is not None:
        number, reason, path = err.errno, err.strerror or os.strerror(err.errno), err.filename
        if err.filename2 is not None:
            path = f"{err.filename} -> {err.filename2}"
    elif found := SYSTEM_TEXT.search(str(err)):
        number = int(found[1] or found[3] or 0) or ERRNOS.get((found[2] or "").strip().lower())
        if number is None:
            return None
        reason, path = os.strerror(number), (m[1] if (m := PATH_TEXT.search(str(err))) else None)
    else:
        return None
    calls = list(_library_calls(err.__traceback__))
    call = f" in {calls[-1]}()" if calls else ""  # the operation, where a library's call says it
    where = f"{path}: " if path is not None else ""
    return f"{where}{reason}{call}; {ADVICE.get(number, ADVICE[None])}"


def _library_calls(tb: TracebackType | None) -> Iterator[str]:
    """The public functions of other packages that a traceback passes through."""
    while tb is not None:
        code = tb.tb_frame.f_code
        if not code.co_filename.startswith((PACKAGE, "<")) and code.co_name[0] not in "_<":
            yield code.co_name
        tb = tb.tb_next


def _store(err: BaseException) -> str | None:
    """An MLflow store (sqlite through SQLAlchemy) that is unreadable, busy or full."""
    if not type(err).__module__.startswith(STORE_MODULES):
        return None
    text, uri = str(err).lower(), _stores[-1] if _stores else ""
    store = f"the MLflow store {uri}".strip()
    if "locked" in text:
        return (f"{store} is busy (database is locked): another process writes "
                "to it (a sweep, `mlflow ui`, `mlflow gc`); run again once it is done, or raise "
                "logger.timeout_s")  # fmt: skip
    if "is full" in text:
        return f"{store} is full (database or disk is full): free space on its disk"
    if any(s in text for s in ("not a database", "unable to open", "malformed", "readonly")):
        path = uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else ""
        what = "a folder" if os.path.isdir(path) else str(err).strip().splitlines()[0]
        return (f"{store} is unreadable ({what}): move it aside to start a "
                "new store, or set MLFLOW_TRACKING_URI to another")  # fmt: skip
    return None


def one_line(text: str) -> str:
    """`text` on one line of at most LINE_MAX characters, saying how long it was if cut."""
    line = " ".join(text.split("\n"))
    if len(line) <= LINE_MAX:
        return line
    return f"{line[:LINE_MAX]}... (cut: {len(line):,} characters in all)"


def exit_on_error(main: Callable[[], T]) -> T:
    """Run `main` so that a failure of a known class (describe) ends it with one line on
    stderr and its exit code; a bug keeps its traceback."""
    try:
        return main()
    except (Exception, KeyboardInterrupt) as err:
        said = describe(err)
        if said is None:
            raise
        print(one_line(said[0]), file=sys.stderr)
        sys.exit(said[1])


def hold_signals() -> None:
    """From now on SIGINT and SIGTERM wait: a second Ctrl-C must not cut short the putting
    back of the last good outputs. Ignored, not blocked: a disposition is the process's,
    whatever thread the kernel picks, and `dvc checkout`, started to restore, inherits it."""
    _held.append(True)
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)


def _stop(signum: int, frame: object) -> None:
    """The first SIGINT or SIGTERM stops the work; any later one waits (hold_signals).

    Lightning puts back the handler it found when its fit ends, so this one may be called
    again after the hold: it then does nothing."""
    if not _held:
        hold_signals()
        raise Interrupted(signum, f"interrupted ({signal.Signals(signum).name})")


def run_stage(main: Callable[[], object], on_failure: Callable[[], None] | None = None) -> None:
    """A process's entry point: exit_on_error, with SIGINT and SIGTERM as Interrupted, then
    skip the interpreter's final sweep.

    `on_failure` runs when the stage fails, whatever the cause (a signal included), after
    its error line, with signals held: the stages with cached outputs put back their last
    good ones there. A signal the process was started ignoring (a shell's background job)
    stays ignored.

    At exit CPython garbage-collects every object that torch, MLflow and Lightning made at
    import, which takes about as long as a short stage's own work (docs/benchmarks.md).
    gc.freeze() takes them out of that sweep; the OS frees the memory as the process ends,
    and atexit handlers (MLflow's, for one) still run, but objects in reference cycles are
    not finalized: a stage must have closed its files by then (they all use `with`). Only
    at the very end of a process: frozen objects are never collected, so code that goes on
    working afterwards (a sweep's in-process jobs) must not call it.
    """
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    for signum, default in defaults.items():
        if signal.getsignal(signum) is default:
            signal.signal(signum, _stop)
    try:
        exit_on_error(main)
    except BaseException as err:
        hold_signals()
        if on_failure is not None and not (isinstance(err, SystemExit) and not err.code):
            on_failure()
        raise
    gc.freeze()
