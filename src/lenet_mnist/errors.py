"""How the pipeline fails: one line the user can act on, a non-zero exit, no traceback.

The bottom layer: every package may import it, and it imports nothing of the package.
"""

from __future__ import annotations

import errno
import gc
import signal
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class PipelineError(Exception):
    """A problem with the user's input or environment, as opposed to a bug in this code."""


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


# Operating-system errors that are the user's environment, not a bug: a missing file, a
# full disk or quota, a folder the user may not write.
USER_ERRNOS = (errno.ENOENT, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS)


def exit_on_error(main: Callable[[], T]) -> T:
    """Run a stage entry point so that a PipelineError, or an OSError of the user's
    environment, ends it with one readable line and exit code 2, and a signal that stopped
    it (Interrupted) with one line and 128 + the signal's number."""
    try:
        return main()
    except Interrupted as err:
        print(f"stopped: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:  # Ctrl-C outside the work that says what it stopped
        print("stopped: interrupted (SIGINT)", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:
        if err.errno not in USER_ERRNOS:
            raise
        where = f"{err.filename}: " if err.filename else ""
        print(f"error: {where}{err.strerror}", file=sys.stderr)
        sys.exit(2)


def run_stage(main: Callable[[], object], on_failure: Callable[[], None] | None = None) -> None:
    """A stage's process entry point: exit_on_error, then skip the interpreter's final sweep.

    `on_failure` runs when the stage fails, whatever the cause (a signal included), after
    its error line: the stages with cached outputs put back their last good ones there.

    At exit CPython garbage-collects every object that torch, MLflow and Lightning made at
    import, which takes about as long as a short stage's own work (docs/benchmarks.md).
    gc.freeze() takes them out of that sweep; the OS frees the memory as the process ends,
    and atexit handlers (MLflow's, for one) still run, but objects in reference cycles are
    not finalized: a stage must have closed its files by then (they all use `with`). Only
    at the very end of a process: frozen objects are never collected, so code that goes on
    working afterwards (a sweep's in-process jobs) must not call it.
    """
    try:
        exit_on_error(main)
    except BaseException as err:
        if on_failure is not None and not (isinstance(err, SystemExit) and not err.code):
            on_failure()
        raise
    gc.freeze()
