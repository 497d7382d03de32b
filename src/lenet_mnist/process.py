"""What an entry point sets before torch loads, which reads it once: OpenMP's passive
waiting, as spinning threads of two processes on the same cores slow each other several
times over (no result changes), and quiet framework loggers."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
from collections.abc import Iterator

# cuBLAS needs its workspace setting before CUDA starts, to run matmuls deterministically.
ENV = {"OMP_WAIT_POLICY": "PASSIVE", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}


def prepare() -> None:
    """Set ENV's defaults; refuse to when torch is loaded already, where they would not count."""
    if "torch" in sys.modules:
        raise RuntimeError("lenet_mnist.process.prepare() must run before torch is imported")
    for name, value in ENV.items():
        os.environ.setdefault(name, value)
    # MLflow's store logs each failed query's traceback before it raises the error we report.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


@contextlib.contextmanager
def importing() -> Iterator[None]:
    """The collector off while torch, Lightning and MLflow load, their objects then kept out of
    every later collection (gc.freeze): each collection would scan their million objects
    again, a sixth of a training stage's start (docs/benchmarks.md). A block that loads
    nothing new (a sweep's later job) freezes nothing: the last job's garbage stays freeable."""
    loaded = len(sys.modules)
    gc.disable()
    try:
        yield
    finally:
        if len(sys.modules) > loaded:
            gc.freeze()
        gc.enable()
