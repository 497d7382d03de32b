"""Output folders that cannot be written are refused before anything starts.

Hydra creates a run's folder (`hydra.run.dir`, under `paths.runs` by default) just before
the job, and a launcher a sweep's (`hydra.sweep.dir`, under `paths.sweeps`) just after the
sweep's MLflow parent run opened; either failing was a traceback, and a sweep's parent was
left RUNNING. So the sweep callback (lenet_mnist.sweeps.sweep.ParentRun, an OutputFolders)
checks the folder first, in one line and exit code 2, the way every user error ends
(lenet_mnist.errors). `paths.prepared` is read, never written, so it is not checked here.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lenet_mnist.errors import PipelineError, exit_on_error


def writable(folder: Path) -> None:
    """Refuse `folder` unless it can be made (as Hydra makes it) and a file written in it.

    The folders made to find out are removed again, so a refused run leaves nothing; one
    that another run made meanwhile is neither an error nor removed (if still in use).
    """
    chain = [*reversed(folder.parents), folder]
    if blocker := next((p for p in chain if os.path.lexists(p) and not p.is_dir()), None):
        _refuse(blocker, "not a folder")
    made: list[Path] = []
    try:
        for part in (p for p in chain if not os.path.lexists(p)):
            with contextlib.suppress(FileExistsError):  # another run made it meanwhile
                part.mkdir()
                made.append(part)
        with tempfile.TemporaryFile(dir=folder) as probe:
            probe.write(b"\0")
            probe.flush()
    except OSError as err:
        _refuse(Path(err.filename) if err.filename else folder, err.strerror or str(err))
    finally:
        for part in reversed(made):
            with contextlib.suppress(OSError):  # another run may have filled it meanwhile
                part.rmdir()


def _refuse(where: Path, reason: str) -> None:
    raise PipelineError(f"{where}: cannot write here ({reason}); choose a writable folder")


class OutputFolders(Callback):
    """Checks a single run's folder before Hydra makes it; ParentRun checks a sweep's."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Hydra turns a callback's exception into a warning; SystemExit goes through."""
        exit_on_error(lambda: writable(Path(config.hydra.run.dir)))
