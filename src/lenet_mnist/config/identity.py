"""What decides a run's result, and the hash that finds a finished run again.

A sweep skips a job whose config hash a finished child already has, and a checkpoint
resumes only for the hash it was written for; both follow DECISIVE and NOT_DECISIVE.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from lenet_mnist.config.schema import Config, keys, lookup

# The groups whose values decide what a run learns. Everything else says where data and
# results go or how progress is shown. The config hash (which finds a finished run again)
# and a sweep's identity both follow this list.
DECISIVE = ("model", "optimizer", "train", "trainer")
# Measurements taken beside training (lenet_mnist.training.probes) change what is logged,
# never the bits.
NOT_DECISIVE = frozenset(
    {
        "trainer.enable_progress_bar",
        "train.checkpoint_every",
        "train.val_every_n_steps",
        "train.targets",
        "train.test_every_epoch",
        "train.noise_probe",
    }
)
PRESETS = "experiment"  # a group of presets: choosing one changes decisive values


def decides_result(key: str) -> bool:
    """Whether an override's key (`group.key`, or a group's name) can change what is learned."""
    key = key.lstrip("+~")
    measured = any(key == k or key.startswith(f"{k}.") for k in NOT_DECISIVE)
    return key == PRESETS or (key.split(".")[0] in DECISIVE and not measured)


def config_hash(cfg: Config, dataset_digest: str) -> str:
    """What decides a run's result: the DECISIVE groups and the prepared data's digest.

    Where results are logged, where files go and whether a bar is drawn do not count, so
    a sweep resumed with another tracking server still finds its finished runs.
    """
    plain = dataclasses.asdict(cfg)
    decisive: dict[str, Any] = {
        group: {k: v for k, v in plain[group].items() if f"{group}.{k}" not in NOT_DECISIVE}
        for group in DECISIVE
    }
    decisive["dataset_digest"] = dataset_digest
    text = json.dumps(decisive, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def flat(cfg: Config) -> dict[str, Any]:
    """Every config value as `group.key`, the same spelling as a Hydra override."""
    plain = dataclasses.asdict(cfg)
    return {key: lookup(plain, key) for key in keys()}
