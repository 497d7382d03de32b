"""What decides a run's result (the schema's `decides` marks), and the config hash by which
a sweep skips a finished job and a checkpoint resumes only its own run."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from lenet_mnist.config.schema import ENTRIES, Config, keys, lookup

PRESETS = "experiment"  # a group of presets: choosing one changes decisive values


def decides_result(key: str) -> bool:
    """Whether an override's key (`group.key`, a group, a preset) can change what is learned:
    its and its groups' marks; a key the schema lacks goes by its group."""
    parts = key.lstrip("+~").split(".")
    marks = [ENTRIES.get(".".join(parts[:n])) for n in range(1, len(parts) + 1)]
    if parts == [PRESETS]:
        return True
    return marks[0] is not None and all(m.json_schema_extra["decides"] for m in marks if m)


def config_hash(cfg: Config, dataset_digest: str) -> str:
    """The deciding keys and the prepared data's digest: a sweep resumed with another
    tracking server or folder still finds its finished runs."""
    decisive: dict[str, Any] = _deciding(dataclasses.asdict(cfg))
    decisive["dataset_digest"] = dataset_digest
    text = json.dumps(decisive, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _deciding(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    return {
        k: _deciding(v, f"{prefix}{k}.") if isinstance(v, dict) else v
        for k, v in tree.items()
        if decides_result(prefix + k)
    }


def flat(cfg: Config) -> dict[str, Any]:
    """Every config value as `group.key`, the same spelling as a Hydra override."""
    plain = dataclasses.asdict(cfg)
    return {key: lookup(plain, key) for key in keys()}
