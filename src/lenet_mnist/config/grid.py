"""What defines a sweep, from its overrides alone: the key its MLflow parent run and folder
are found by again (a grid: its deciding overrides; a search: space, sampler and goal)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from lenet_mnist.config.identity import decides_result


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
    return defining(merged.values()) + _search(sweeper, objective)


def _search(sweeper: DictConfig | None, objective: DictConfig | None) -> list[str]:
    """An optimizing sweeper's sampler and direction, and the objective; nothing for a grid."""
    if sweeper is None or "direction" not in sweeper:  # a grid sweeper ignores the objective
        return []
    sampler = OmegaConf.to_container(sweeper.sampler, resolve=True)
    name = str(sampler.pop("_target_", "")).rpartition(".")[2]
    args = ", ".join(f"{k}={v}" for k, v in sorted(sampler.items()))
    direction = sweeper.direction  # a list for several objectives
    direction = OmegaConf.to_container(direction) if OmegaConf.is_config(direction) else direction
    goal = OmegaConf.to_container(objective, resolve=True) if objective is not None else {}
    return [
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
        plain_list = not any(c in values for c in "([{")  # not range(...), [a,b] or {...}
        grid.append(
            f"{name}={','.join(sorted(values.split(',')))}" if plain_list else f"{name}={values}"
        )
    return hashlib.sha256(json.dumps(sorted(grid)).encode()).hexdigest()[:16]
