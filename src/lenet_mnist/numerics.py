"""Which kernels, and how many threads, compute a result: a CPU build of PyTorch picks its
kernels by the CPU's instruction set and splits reductions by its threads (docs/determinism.md).
MODES is the table `trainer.reproducible` chooses from."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch

from lenet_mnist import process
from lenet_mnist.errors import PipelineError

if TYPE_CHECKING:
    from lenet_mnist.config.schema import TrainerConfig

# Every source of numeric variation of a CPU build of PyTorch, pinned to x86-64-v3 (AVX2, FMA).
PORTABLE_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",  # ATen's kernel dispatch, and torch.compile's vector ISA
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN's convolution kernels
    # MKL's conditional numerical reproducibility, on its SSE2 branch: MKL's AVX2, SSE4_2
    # and AVX512 branches follow the CPU's vendor, COMPATIBLE does not (docs/determinism.md).
    "MKL_CBWR": "COMPATIBLE",
    "TORCHINDUCTOR_CPP_MARCH": "x86-64-v3",  # torch.compile's C++, instead of -march=native
}
# A fixed thread count, so a reduction's order depends on no machine's core count. One: more
# did not train LeNet-5 faster and slowed sweep jobs that share the cores (docs/benchmarks.md).
PORTABLE_THREADS = 1
ISA_FLAGS = ("sse4", "avx", "fma", "f16c", "amx")  # the CPU flags that decide which kernels run


class Mode(NamedTuple):
    env: dict[str, str] = {}  # set before the first kernel runs (read, never changed)
    threads: int | None = None  # when `trainer.threads` is null; None: one per core
    deterministic: bool = True  # PyTorch's deterministic algorithms (Lightning's flag)


MODES: dict[str, Mode] = {
    "portable": Mode(PORTABLE_ENV, PORTABLE_THREADS),  # the same bits on any x86-64-v3 CPU
    "machine": Mode(),  # the widest ISA and every core: the same bits on this machine only
    "none": Mode(deterministic=False),  # no promise ("off" would read as false in YAML)
}
_applied: list[str] = []  # the mode this process computes in, once set


def pin(trainer: TrainerConfig) -> None:
    """Put this process in `mode` before it computes anything: process-wide, and once, so
    only entry points call it, and a sweep over `trainer.reproducible` needs a process per job."""
    mode = trainer.reproducible
    if _applied and _applied[0] != mode:
        raise PipelineError(
            f"trainer.reproducible={mode} after {_applied[0]} in one process is not allowed; "
            "use a launcher that runs each job in its own process (launcher=joblib)"
        )
    _applied[:1] = [mode]
    settings = MODES[mode]
    os.environ.update(settings.env)
    inductor = sys.modules.get("torch._inductor.config")  # it reads -march when first imported
    if inductor is not None and hasattr(inductor.cpp, "march"):  # a GPU image's torch has none
        inductor.cpp.march = os.environ.get("TORCHINDUCTOR_CPP_MARCH")
    count = trainer.threads or settings.threads
    if count is not None:
        torch.set_num_threads(count)
        if trainer.devices * trainer.num_nodes > 1:  # Lightning's DDP would set cores / ranks
            os.environ.setdefault("OMP_NUM_THREADS", str(count))


def record(trainer: TrainerConfig) -> dict[str, str]:
    """What computed this run's numbers: CPU, ISA flags, threads, libraries, pinned settings."""
    cpu = cpu_info()
    isa = sorted(f for f in cpu.get("flags", "").split() if f.startswith(ISA_FLAGS))
    return {
        "numerics.mode": trainer.reproducible,
        "numerics.cpu": cpu.get("model name", "unknown"),
        "numerics.cpu_family_model": f"{cpu.get('cpu family', '?')}/{cpu.get('model', '?')}",
        "numerics.isa_flags": " ".join(isa),
        "numerics.aten_capability": torch.backends.cpu.get_cpu_capability(),
        "numerics.threads": str(torch.get_num_threads()),
        "numerics.torch": torch.__version__,
        "numerics.mkl": _library(r"Math Kernel Library Version (\S+)"),
        "numerics.onednn": _library(r"MKL-DNN (v[\d.]+)"),
        **{f"numerics.env.{k}": os.environ.get(k, "") for k in (*PORTABLE_ENV, *process.ENV)},
    }


def _library(version: str) -> str:
    found = re.search(version, torch.__config__.show())
    return found[1] if found else "not in this build"


def cpu_info() -> dict[str, str]:
    """The first processor's fields from /proc/cpuinfo; empty where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        return {}
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs}
