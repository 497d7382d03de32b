"""What decides a run's result (the schema's `decides` marks): the config hash by which a
sweep skips a finished job and a checkpoint resumes only its own run; and what defines a
sweep, from its overrides alone: the key its MLflow parent run and folder are found by again
(a grid: its deciding overrides; a search: space, sampler and goal)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from lenet_mnist.config.schema import ENTRIES, Config, keys, lookup


def decides_result(key: str) -> bool:
    """Whether an override's key (`group.key`, a group, a preset) can change what is learned:
    its and its groups' marks; a key the schema lacks goes by its group."""
    parts = key.lstrip("+~").split(".")
    if parts == ["experiment"]:  # a group of presets: choosing one changes decisive values
        return True
    marks = [ENTRIES.get(".".join(parts[:n])) for n in range(1, len(parts) + 1)]
    return marks[0] is not None and all(m.json_schema_extra["decides"] for m in marks if m)


def config_hash(cfg: Config, dataset_digest: str) -> str:
    """The deciding keys and the prepared data's digest: a sweep resumed with another
    tracking server or folder still finds its finished runs."""
    decisive = {**_deciding(dataclasses.asdict(cfg)), "dataset_digest": dataset_digest}
    return hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()[:16]


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


def _key(override: str) -> str:
    return override.partition("=")[0]


def defining(overrides: Iterable[str]) -> list[str]:
    """The overrides that say what is computed, not where or how, in a stable order."""
    return sorted(o for o in overrides if decides_result(_key(o)))


def search_overrides(
    task: ListConfig, sweeper: DictConfig | None = None, objective: DictConfig | None = None
) -> list[str]:
    """A grid, or a search space (the command line's value of a key wins over the config's,
    as in the sweepers) and its goal; not n_trials, so that more trials resume a search."""
    space = OmegaConf.select(sweeper, "params") if sweeper is not None else None
    merged = {k: f"{k}={v}" for k, v in (as_typed(space) if space else {}).items()}
    merged |= {_key(o): o for o in as_typed(task)}
    overrides = defining(merged.values())
    if sweeper is None or "direction" not in sweeper:  # a grid sweeper ignores the objective
        return overrides
    sampler = OmegaConf.to_container(sweeper.sampler, resolve=True)
    name = str(sampler.pop("_target_", "")).rpartition(".")[2]
    args = ", ".join(f"{k}={v}" for k, v in sorted(sampler.items()))
    direction = sweeper.direction  # a list for several objectives
    direction = OmegaConf.to_container(direction) if OmegaConf.is_config(direction) else direction
    goal = OmegaConf.to_container(objective, resolve=True) if objective is not None else {}
    return [
        *overrides,
        f"hydra.sweeper.sampler={name}({args})",
        f"hydra.sweeper.direction={direction}",
        *(f"objective.{k}={v}" for k, v in sorted(goal.items())),
    ]


def as_typed(overrides: ListConfig | DictConfig) -> Any:
    """The overrides as the user typed them: `a=${b}` stays text, never resolved."""
    return OmegaConf.to_container(overrides, resolve=False)


def sweep_key(overrides: list[str]) -> str:
    """The same grid gives the same key, whatever order its values were typed in."""
    grid = []
    for name, _, values in (o.partition("=") for o in overrides):
        if not any(c in values for c in "([{"):  # a plain list, not range(...), [a,b] or {...}
            values = ",".join(sorted(values.split(",")))
        grid.append(f"{name}={values}")
    return hashlib.sha256(json.dumps(sorted(grid)).encode()).hexdigest()[:16]
