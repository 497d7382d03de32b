"""What an entry point sets for its process before torch loads: OpenMP's passive waiting,
and quiet framework loggers.

OpenMP's threads spin a while before they sleep: two multi-threaded processes on the same
cores (two sweep jobs, a neighbour's job) then spin against each other, each several times
slower than its share. Passive waiting changes no result. OpenMP reads it once, as torch
loads, so only an entry point can set it; a value the user set is kept.
"""

from __future__ import annotations

import logging
import os
import sys

# cuBLAS needs its workspace setting before CUDA starts, to run matmuls deterministically.
ENV = {"OMP_WAIT_POLICY": "PASSIVE", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}


def prepare() -> None:
    """Set ENV's defaults; refuse to when torch is loaded already, where they would not count."""
    if "torch" in sys.modules:
        raise RuntimeError("lenet_mnist.process.prepare() must run before torch is imported")
    for name, value in ENV.items():
        os.environ.setdefault(name, value)
    # MLflow's store logs each failed query's traceback, then raises: the raised error ends
    # the command, in one line at the error boundary.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
