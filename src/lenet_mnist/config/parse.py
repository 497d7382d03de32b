"""The config every stage and run reads, checked against one schema (lenet_mnist.config.schema).

conf/ (Hydra) holds the values and params.yaml is their composition, which DVC tracks.
The same schema checks both:

- Hydra merges conf/ onto it (it is the first entry of conf/config.yaml's defaults), so a
  key that does not exist or a value of the wrong type fails at composition, in
  `python -m lenet_mnist.run` and in `dvc exp run` alike;
- a stage reads params.yaml through `load`, which merges it onto the same schema.

Either way, `validate` turns the values into the schema's dataclasses, checks ranges and
choices, and reports the first problem as one line. Stages read params.yaml, never
conf/, so `dvc repro` runs exactly what params.yaml says.

    python -m lenet_mnist.config [--write] [overrides...]   # compose conf/ into params.yaml
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from lenet_mnist.config import bounded
from lenet_mnist.config.hydra_schema import register
from lenet_mnist.config.schema import Config, keys, show
from lenet_mnist.errors import PipelineError, run_stage

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"


def validate(cfg: DictConfig | dict) -> Config:
    """The typed config, or a PipelineError naming the first bad key and what it allows."""
    if OmegaConf.is_config(cfg):  # plain values: a typed node would let added keys through
        cfg = OmegaConf.to_container(cfg)
    plain = {k: v for k, v in cfg.items() if k != "hydra"}  # Hydra's own node is not ours
    try:
        typed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), plain))
    except OmegaConfBaseException as err:
        raise PipelineError(describe(err)) from None
    typed.check()
    return typed


def load(path: str | Path = "params.yaml") -> Config:
    """Read and validate params.yaml; a missing, unparsable or oversized file is a user
    error too (lenet_mnist.config.bounded: every stage reads its params through here)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path} not found; run from the repository root or pass --params")
    cfg = bounded.read_yaml(path)  # sized and counted before anything expands it
    if not isinstance(cfg, dict):
        groups = ", ".join(f.name for f in dataclasses.fields(Config))
        raise PipelineError(f"{path} holds a {type(cfg).__name__}; use a mapping of {groups}")
    return validate(cfg)


def describe(err: BaseException) -> str:
    """One line for an OmegaConf or Hydra error: the key, what was wrong, what is allowed."""
    cause = err
    while not isinstance(cause, OmegaConfBaseException) and cause.__cause__ is not None:
        cause = cause.__cause__
    key = getattr(cause, "full_key", None)
    if not isinstance(cause, OmegaConfBaseException) or not key:
        return str(err).strip().splitlines()[0]
    known = keys()
    if isinstance(cause, MissingMandatoryValue):
        return f"{key} is missing; set it to {_kind(known.get(key))}"
    if isinstance(cause, ConfigKeyError | ConfigAttributeError) and key not in known:
        groups = [f.name for f in dataclasses.fields(Config)]
        candidates = [*known, *groups] if "." not in key else list(known)
        close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else f"the groups are {', '.join(groups)}"
        return f"{key} is not a config key; {hint}"
    if isinstance(cause, ValidationError) and key in known:
        return f"{key}={show(cause.value)} is not allowed; use {_kind(known[key])}"
    return f"{key}: {str(cause.msg).strip().splitlines()[0]}"


def _kind(hint: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    text = str(hint)
    base = next((n for t, n in names.items() if hint is t or f"{t.__name__} |" in text), None)
    if text.startswith("list"):
        return "a list of strings"
    if "None" in text:
        return f"null or {base}"
    return base or text


def compose(overrides: list[str] | None = None) -> dict[str, Any]:
    """Compose conf/ the way `dvc exp run` does, so the two can be compared."""
    return OmegaConf.to_container(compose_node(overrides or []), resolve=True)


def compose_node(overrides: list[str], with_hydra: bool = False) -> DictConfig:
    """conf/ composed, unresolved; `with_hydra` keeps Hydra's own node (hydra.sweeper...)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose("config", overrides=overrides, return_hydra_config=with_hydra)
    except Exception as err:  # Hydra raises several types; its message names the key
        raise PipelineError(describe(err)) from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite params.yaml from conf/")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. train.epochs=3")
    args = parser.parse_args()
    composed = compose(args.overrides)
    validate(composed)
    text = yaml.safe_dump(composed, sort_keys=False)
    if args.write:
        Path(args.params).write_text(text)
    else:
        print(text, end="")


if __name__ == "__main__":
    run_stage(main)
