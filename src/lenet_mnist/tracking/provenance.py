"""Which code, data and machine made a result: the tags every training run carries."""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path

import yaml
from mlflow.utils.git_utils import get_git_commit

from lenet_mnist import numerics
from lenet_mnist.tracking import store


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def dvc_lock_hash(stage: str, out: str, lock: Path = Path("dvc.lock")) -> str:
    """The hash DVC recorded for one stage output; DVC updates dvc.lock after each stage."""
    try:
        stages = yaml.safe_load(lock.read_text())["stages"]
        return next(o["md5"] for o in stages[stage]["outs"] if o["path"] == out)
    except (OSError, KeyError, TypeError, StopIteration):
        return "unknown"


def run_tags(prepared: Path, dataset_digest: str) -> dict[str, str]:
    """Tags that say which code, which data and which machine a run used."""
    tags = {
        "git_commit": get_git_commit(".") or "unknown",  # MLflow's own look-up
        "dvc_data_md5": dvc_lock_hash("prepare", prepared.as_posix()),
        "dataset_digest": dataset_digest,
        store.MACHINE_TAG: machine(),
    }
    if name := os.environ.get("DVC_EXP_NAME"):  # set by `dvc exp run`: the name exp show lists
        tags["dvc_exp_name"] = name
    return tags


def machine() -> str:
    """The GPU, or the CPU model and core count, which the speed figures depend on."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpu = numerics.cpu_info().get("model name") or platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}"
