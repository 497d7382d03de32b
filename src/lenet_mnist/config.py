"""The config every stage and run reads, checked against one schema (lenet_mnist.schema).

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
import hashlib
import json
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

from lenet_mnist.schema import Config, keys, register, show
from lenet_mnist.stage import PipelineError, run_stage

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
# The groups whose values decide what a run learns. Everything else says where data and
# results go or how progress is shown. The config hash (which finds a finished run again)
# and a sweep's identity both follow this list.
DECISIVE = ("model", "optimizer", "train", "trainer")
# Measurements taken beside training (lenet_mnist.probes) change what is logged, never the bits.
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
    """Read and validate params.yaml; a missing or unparsable file is a user error too."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path} not found; run from the repository root or pass --params")
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise PipelineError(f"{path} is not valid YAML: {err}".splitlines()[0]) from err
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
    return {key: _get(plain, key) for key in keys()}


def _get(plain: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        plain = plain[part]
    return plain


def compose(overrides: list[str] | None = None) -> dict[str, Any]:
    """Compose conf/ the way `dvc exp run` does, so the two can be compared."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=overrides or [])
    except Exception as err:  # Hydra raises several types; its message names the key
        raise PipelineError(describe(err)) from None
    return OmegaConf.to_container(cfg, resolve=True)


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
