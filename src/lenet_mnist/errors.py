"""How every entry point ends: one line the user can act on and an exit code, by the failure's
class, not its case (docs/pipeline.md, "Exit codes and error lines"). The bottom layer: it
imports nothing of the package, nor MLflow (a store's error is known by its module's name)."""

from __future__ import annotations

import errno
import gc
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import NoReturn, TypeVar

T = TypeVar("T")
LINE_MAX = 400  # an echoed value can be any length: longer lines are cut, their length said


class PipelineError(Exception):
    """A problem with the user's input or configuration, as opposed to a bug in this code."""

    exit_code = 2


class UnavailableError(PipelineError):
    """The environment failed the work (a busy store, a silent server): try again later."""

    exit_code = 1


class DivergedError(PipelineError):
    """The loss became NaN or infinite: one run fails on it; a sweep records it and goes on."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the work. A KeyboardInterrupt, so that what closes on Ctrl-C
    (an MLflow run, KILLED) closes on both, and no framework's `except Exception` carries on."""

    def __init__(self, signum: int, what: str) -> None:
        super().__init__(what)
        self.signum = signum


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
# The system's error in other exceptions' text: safetensors' (Rust), PyTorch's writer's, Python's.
SYSTEM_TEXT = re.compile(r"\(os error (\d+)\)|strerror: ([^.\n]+)|\[Errno (\d+)\]")
PATH_TEXT = re.compile(r'at path "([^"]+)"')
PACKAGE = os.path.dirname(os.path.abspath(__file__))
store_uri = ""  # the MLflow store this process opened last, which a store's line names
_held: list[bool] = []  # set once the process has begun to stop: later signals wait


def _system(err: BaseException) -> str | None:
    """An OSError, or a library's exception whose text carries one: path, call, reason, advice."""
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
    # The operation: the last public function of another package that the traceback passes.
    codes = [frame.f_code for frame, _ in traceback.walk_tb(err.__traceback__)]
    calls = [c.co_name for c in codes if not c.co_filename.startswith((PACKAGE, "<"))
             and c.co_name[0] not in "_<"]  # fmt: skip
    call = f" in {calls[-1]}()" if calls else ""
    where = f"{path}: " if path is not None else ""
    return f"{where}{reason}{call}; {ADVICE.get(number, ADVICE[None])}"


def _store(err: BaseException) -> str | None:
    """An MLflow store (sqlite through SQLAlchemy) that is unreadable, busy or full."""
    if not type(err).__module__.startswith(("sqlalchemy", "sqlite3", "mlflow")):
        return None
    text, store = str(err).lower(), f"the MLflow store {store_uri}".strip()
    if "locked" in text:
        return (f"{store} is busy (database is locked): another process writes to it (a "
                "sweep, `mlflow ui`, `mlflow gc`); run again once it is done, or raise "
                "logger.timeout_s")  # fmt: skip
    if "is full" in text:
        return f"{store} is full (database or disk is full): free space on its disk"
    if any(s in text for s in ("not a database", "unable to open", "malformed", "readonly")):
        folder = os.path.isdir(store_uri.removeprefix("sqlite:///"))  # an http:// one is not
        what = "a folder" if folder else str(err).strip().splitlines()[0]
        return (f"{store} is unreadable ({what}): move it aside to start a new store, or set "
                "MLFLOW_TRACKING_URI to another")  # fmt: skip
    return None


def one_line(text: str, limit: int = LINE_MAX) -> str:
    """`text` on one line of at most `limit` characters, saying how long it was if cut."""
    line = " ".join(text.split("\n"))
    if len(line) <= limit:
        return line
    return f"{line[:limit]}... (cut: {len(line):,} characters in all)"


def exit_on_error(main: Callable[[], T]) -> T:
    """`main()`, or the process's end: a known class as one line and its exit code, a bug
    as its traceback and exit 1. A SystemExit, which Hydra's jobs and callbacks let through."""
    try:
        return main()
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", signal.SIGINT)  # a KeyboardInterrupt of Python's own
        _exit(f"stopped: {str(err) or 'interrupted (SIGINT)'}", 128 + signum)
    except PipelineError as err:
        _exit(f"error: {err}", err.exit_code)
    except Exception as err:
        cause: BaseException | None = err
        for _ in range(32):  # the chain it was raised from or while handling; a cycle ends
            if cause is None:
                break
            if said := _system(cause) or _store(cause):
                _exit(f"error: {said}", 1)
            cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
        traceback.print_exc()
        sys.exit(1)


def _exit(line: str, code: int) -> NoReturn:
    print(one_line(line), file=sys.stderr)
    sys.exit(code)


def hold_signals() -> None:
    """From now on SIGINT and SIGTERM wait, so that a second Ctrl-C cannot cut short the restore
    of the last good outputs: ignored, not blocked, so the `dvc checkout` inherits it too."""
    _held.append(True)
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)


def _stop(signum: int, frame: object) -> None:
    """The first SIGINT or SIGTERM stops the work; a later one waits (Lightning puts this
    handler back when its fit ends, hence the flag)."""
    if not _held:
        hold_signals()
        raise Interrupted(signum, f"interrupted ({signal.Signals(signum).name})")


def run_stage(main: Callable[[], object], on_failure: Callable[[], None] | None = None) -> None:
    """A process's entry point: exit_on_error, with SIGINT and SIGTERM as Interrupted unless
    started ignoring them (a shell's background job). `on_failure` runs on any failure, signals
    held; gc.freeze() spares the exit collecting what the imports made (docs/benchmarks.md)."""
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    for signum, default in defaults.items():
        if signal.getsignal(signum) is default:
            signal.signal(signum, _stop)
    try:
        exit_on_error(main)
    except BaseException as end:
        hold_signals()
        if on_failure is not None and not (isinstance(end, SystemExit) and not end.code):
            on_failure()
        raise
    gc.freeze()
