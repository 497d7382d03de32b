"""What an entry point sets for its process before torch loads: OpenMP's waiting, and
the frameworks' log lines about themselves rather than the run.

OpenMP's threads, which PyTorch's CPU kernels run on, spin while they wait for work, by
default for a while before they sleep. Two multi-threaded processes on the same cores (two
sweep jobs, or a neighbour's job) then spend their time spinning against each other, and
each runs several times slower than its fair share. Passive waiting ends that, and
changes no result. OpenMP reads the setting once, when torch loads it, so only an entry
point can set it, before anything imports torch: a stage's `main`, `lenet_mnist.run` and
the benchmark. A value the user set is kept.
"""

from __future__ import annotations

import logging
import os
import sys

# cuBLAS needs its workspace setting before CUDA starts, to run matmuls deterministically.
ENV = {"OMP_WAIT_POLICY": "PASSIVE", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
# MLflow's store module logs its own set-up ("Creating initial MLflow database tables") and
# each failed query with its traceback, then raises: the raised error is what ends the
# command, in one line at the error boundary (or, for a bug, with its traceback).
QUIET_LOGGERS = ("mlflow.store.db.utils",)


def prepare() -> None:
    """Set ENV's defaults; refuse to when torch is loaded already, where they would not count."""
    if "torch" in sys.modules:
        raise RuntimeError("lenet_mnist.process.prepare() must run before torch is imported")
    for name, value in ENV.items():
        os.environ.setdefault(name, value)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
