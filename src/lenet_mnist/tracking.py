"""Where runs are recorded in MLflow, and how a run is tied to the code and data behind it.

Train opens the run and evaluate finds it again through the SHA-256 of the weights it
evaluates, so no run id ever has to be written into a file that DVC hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf

WEIGHTS_TAG = "weights_sha256"
CONFIG_TAG = "config_hash"
PARENT_TAG = "mlflow.parentRunId"  # how the MLflow UI nests a child under its parent
SWEEP_TAG = "sweep_key"  # on a sweep's parent: a hash of the overrides that define it
OVERRIDES_TAG = "sweep_overrides"
JOB_TAG = "sweep_job"  # on a child: its own overrides, the point of the grid it stands for
MACHINE_TAG = "machine"
COMPLETE_TAG = "sweep_job_complete"  # a sweep job's last act: a child without it was cut off
SQLITE = "sqlite:///"
T = TypeVar("T")


def tracking_uri(cfg: DictConfig) -> str:
    """MLFLOW_TRACKING_URI (a server, say) wins over the embedded sqlite default.

    A relative sqlite path is taken from the repository root that DVC names in DVC_ROOT:
    `dvc queue` runs stages in a temporary copy, whose own mlflow.db would be thrown away.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or cfg.logger.tracking_uri
    root = os.environ.get("DVC_ROOT")
    if root and uri.startswith(SQLITE) and not uri.startswith(SQLITE + "/"):
        return SQLITE + str(Path(root) / uri.removeprefix(SQLITE))
    return uri


def retry_locked(call: Callable[[], T], attempts: int = 8) -> T:
    """Run an MLflow call again while sqlite answers "database is locked".

    Parallel sweep jobs share one sqlite file; its writers queue for a lock and give up
    after sqlite's timeout, which a burst of run creations can exceed.
    """
    for attempt in range(attempts):
        try:
            return call()
        except Exception as err:  # MLflow wraps sqlite's OperationalError in its own types
            if "database is locked" not in str(err) or attempt == attempts - 1:
                raise
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def experiment_id(client: Any, name: str) -> str:
    """The experiment's id, created on first use.

    With a sqlite store, artifacts go to mlruns/ beside the database file. MLflow's own
    default is mlruns/ in the current folder, which for a `dvc queue` job is a temporary
    copy of the repository that is deleted afterwards.
    """
    experiment = retry_locked(lambda: client.get_experiment_by_name(name))
    if experiment is not None:
        return experiment.experiment_id
    uri = client.tracking_uri
    location = None
    if uri.startswith(SQLITE):
        db = Path(uri.removeprefix(SQLITE)).resolve()
        location = (db.parent / "mlruns" / name).as_uri()
    try:
        return retry_locked(lambda: client.create_experiment(name, artifact_location=location))
    except Exception as err:  # another process created it first: use theirs
        if "already exists" not in str(err):
            raise
        return retry_locked(lambda: client.get_experiment_by_name(name)).experiment_id


def config_hash(cfg: DictConfig, dataset_digest: str) -> str:
    """What decides a run's result: the training groups and the prepared data's digest.

    Where results are logged, where files go and whether a bar is drawn do not count, so
    a sweep resumed with another tracking server still finds its finished runs.
    """
    plain = OmegaConf.to_container(cfg, resolve=True)
    decisive = {group: plain[group] for group in ("model", "optimizer", "train", "trainer")}
    decisive["trainer"] = {
        k: v for k, v in decisive["trainer"].items() if k != "enable_progress_bar"
    }
    decisive["dataset_digest"] = dataset_digest
    text = json.dumps(decisive, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def git_commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        )
        return done.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def dvc_lock_hash(stage: str, out: str, lock: Path = Path("dvc.lock")) -> str:
    """The hash DVC recorded for one stage output; DVC updates dvc.lock after each stage."""
    try:
        stages = yaml.safe_load(lock.read_text())["stages"]
        entry = next(o for o in stages[stage]["outs"] if o["path"] == out)
        return entry["md5"]
    except (OSError, KeyError, TypeError, StopIteration):
        return "unknown"


def run_tags(prepared: Path) -> dict[str, str]:
    """Tags that say which code and which data a run used."""
    stats = json.loads((prepared / "stats.json").read_text())
    tags = {
        "git_commit": git_commit(),
        "dvc_data_md5": dvc_lock_hash("prepare", prepared.as_posix()),
        "dataset_digest": stats["digest"],
        MACHINE_TAG: machine(),
    }
    if name := os.environ.get("DVC_EXP_NAME"):  # set by `dvc exp run`: the name exp show lists
        tags["dvc_exp_name"] = name
    return tags


def machine() -> str:
    """The CPU model (or GPU) and core count, which the speed figures depend on."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or what `platform` knows where there is none."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def flat_params(cfg: DictConfig) -> dict[str, Any]:
    """Every config value as `group.key`, the same spelling as a Hydra override."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


def find_run(client: Any, experiment_name: str, weights_sha256: str) -> str | None:
    """The newest run that trained exactly these weights, or None."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    query = f"tags.{WEIGHTS_TAG} = '{weights_sha256}'"
    runs = newest(client, experiment.experiment_id, query, limit=1)
    return runs[0].info.run_id if runs else None


def newest(client: Any, experiment: str, query: str, limit: int = 10_000) -> list[Any]:
    """The experiment's runs that match an MLflow filter string, newest first."""
    return retry_locked(
        lambda: client.search_runs(
            [experiment], query, order_by=["attributes.start_time DESC"], max_results=limit
        )
    )


def children(client: Any, parent: str, extra: str = "") -> list[Any]:
    """The parent's children, newest first; `extra` adds conditions to the filter."""
    experiment = retry_locked(lambda: client.get_run(parent)).info.experiment_id
    return newest(client, experiment, f"tags.`{PARENT_TAG}` = '{parent}'{extra}")
