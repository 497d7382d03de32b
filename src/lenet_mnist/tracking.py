"""Where runs are recorded in MLflow, and how a run is tied to the code and data behind it.

Train opens the run and evaluate finds it again through the SHA-256 of the weights it
evaluates, so no run id ever has to be written into a file that DVC hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

WEIGHTS_TAG = "weights_sha256"


def tracking_uri(cfg: DictConfig) -> str:
    """MLFLOW_TRACKING_URI (a server, say) wins over the embedded sqlite default."""
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg.logger.tracking_uri


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
    return {
        "git_commit": git_commit(),
        "dvc_data_md5": dvc_lock_hash("prepare", prepared.as_posix()),
        "dataset_digest": stats["digest"],
    }


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
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.{WEIGHTS_TAG} = '{weights_sha256}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None
