"""The config every stage reads: params.yaml (conf/ composed), checked against the schema."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException
from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from lenet_mnist.config.schema import (
    ENTRIES,
    MNIST_TRAIN_SIZE,
    Config,
    allowed,
    keys,
    kind,
    lookup,
    show,
)
from lenet_mnist.errors import PipelineError

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"
SCHEMA = TypeAdapter(Config)
GROUPS = [f.name for f in dataclasses.fields(Config)]


def validate(cfg: DictConfig | dict) -> Config:
    """The typed config, or a PipelineError naming the first bad key and what it allows."""
    try:
        raw = OmegaConf.to_container(cfg) if OmegaConf.is_config(cfg) else cfg
        mine = OmegaConf.create({k: v for k, v in raw.items() if k != "hydra"})  # not Hydra's
        plain = OmegaConf.to_container(mine, resolve=True)  # a ${...} names its key if it fails
        typed = SCHEMA.validate_python(plain)
    except ValidationError as err:  # an unknown key first: a typo also leaves its key missing
        errors = sorted(err.errors(), key=lambda e: e["type"] != "unexpected_keyword_argument")
        raise PipelineError(_refused(errors[0], plain)) from None
    except OmegaConfBaseException as err:
        raise PipelineError(describe(err)) from None
    if typed.data.val_size >= (typed.data.train_limit or MNIST_TRAIN_SIZE):  # two keys' rule
        raise PipelineError(_not_allowed("data.val_size", typed.data.val_size))
    return typed


def load(path: str | Path = "params.yaml") -> Config:
    """Read and validate params.yaml, every stage's one reader; a missing, unparsable or
    oversized file is a user error too."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path} not found; run from the repository root or pass --params")
    cfg = read_yaml(path)  # sized and counted before anything expands it
    if not isinstance(cfg, dict):
        raise PipelineError(f"{path} holds a {type(cfg).__name__}; use {kind(Config)}")
    return validate(cfg)


def arguments(
    parser: argparse.ArgumentParser, params_help: str | None = None
) -> tuple[argparse.Namespace, Config]:
    """A stage's command line, --params last, and the config that file holds."""
    parser.add_argument("--params", default="params.yaml", help=params_help)
    args = parser.parse_args()
    return args, load(args.params)


MAX_BYTES = 256 * 1024  # ~200x the composed file; a list of a thousand mirrors fits
MAX_ALIASES = 20  # a hand edit may name a repeated value; a bomb needs dozens
MAX_VALUES = 10_000  # once aliases are expanded; OmegaConf merges some 10,000 values a second
MAX_DEPTH = 32  # nesting; Python's constructor recurses once per level

# libyaml's parser when PyYAML was built with it (its wheels are): the count costs little.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: Path) -> Any:
    """The file's YAML value, refused in one line when too large or when its aliases (`*a`,
    each the whole node `&a` names) would expand too far ("billion laughs"): libyaml's parse
    events are counted before a Python object is built. The composed file holds no alias."""
    with path.open("rb") as f:
        data = f.read(MAX_BYTES + 1)  # a file that grows while it is read is not read whole
    if len(data) > MAX_BYTES:
        size = max(path.stat().st_size, len(data))
        raise PipelineError(
            f"{path} is {size:,} bytes; a params file may hold at most {MAX_BYTES // 1024} KiB"
        )
    try:
        _count(path, yaml.parse(data, Loader=_LOADER))
        return yaml.load(data, Loader=_LOADER)  # a safe loader, libyaml's or PyYAML's
    except yaml.YAMLError as err:
        raise PipelineError(f"{path} is not valid YAML: {err}".splitlines()[0]) from None


def _count(path: Path, events: Any) -> None:
    """Sum the values each alias stands for, building none."""
    values, aliases = 0, 0
    sizes: dict[str, int] = {}  # each finished anchor: how many values its node expands to
    open_nodes: list[tuple[str | None, int]] = []  # (anchor, values before it) per level
    for event in events:
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise PipelineError(
                    f"{path} uses more than {MAX_ALIASES} YAML aliases (*name); "
                    f"write the values out, or use at most {MAX_ALIASES}"
                )
            if event.anchor not in sizes:  # inside its own anchor, or undefined
                raise PipelineError(
                    f"{path}: the YAML alias *{event.anchor} comes before its anchor's value "
                    "ends; alias only a value defined above it"
                )
            values += sizes[event.anchor]
        elif isinstance(event, yaml.ScalarEvent):
            values += 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.CollectionStartEvent):
            open_nodes.append((event.anchor, values))
            values += 1
            if len(open_nodes) > MAX_DEPTH:
                raise PipelineError(f"{path} nests values deeper than {MAX_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, before = open_nodes.pop()
            if anchor is not None:
                sizes[anchor] = values - before
        if values > MAX_VALUES:
            raise PipelineError(
                f"{path} expands to more than {MAX_VALUES:,} values; "
                "a params file holds a few hundred"
            )


def _refused(error: ErrorDetails, plain: dict[str, Any]) -> str:
    """pydantic's error as one line, about the schema's key (a list's item: its list)."""
    parts = [str(p) for p in error["loc"]]
    if error["type"] == "unexpected_keyword_argument":
        return _unknown(".".join(parts))
    key = next(k for n in range(len(parts), 0, -1) if (k := ".".join(parts[:n])) in ENTRIES)
    if error["type"] == "missing":
        return f"{key} is missing; set it to {kind(ENTRIES[key].annotation)}"
    wrong_type = error["type"].endswith(("_type", "_parsing"))  # a type's words, not its bounds
    return _not_allowed(key, lookup(plain, key), wrong_type)


def _not_allowed(key: str, value: Any, wrong_type: bool = False) -> str:
    words = kind(ENTRIES[key].annotation) if wrong_type else allowed(ENTRIES[key])
    return f"{key}={show(value)} is not allowed; use {words}"


def _unknown(key: str) -> str:
    keys = [k for k in ENTRIES if "." in k] if "." in key else list(ENTRIES)
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else f"the groups are {', '.join(GROUPS)}"
    shown = key if key.isprintable() else repr(key)  # a newline in a key stays on the line
    return f"{shown} is not a config key; {hint}"


def describe(err: BaseException) -> str:
    """One line for an OmegaConf or Hydra error: the key, and what was wrong."""
    cause = err
    while not isinstance(cause, OmegaConfBaseException) and cause.__cause__ is not None:
        cause = cause.__cause__
    key = getattr(cause, "full_key", None)
    if not isinstance(cause, OmegaConfBaseException) or not key:
        return str(err).strip().splitlines()[0]
    if isinstance(cause, ConfigKeyError | ConfigAttributeError) and key not in ENTRIES:
        return _unknown(key)
    return f"{key}: {str(cause.msg).strip().splitlines()[0]}"


def compose(overrides: list[str] | None = None) -> dict[str, Any]:
    """Compose conf/ the way `dvc exp run` does, so the two can be compared."""
    return OmegaConf.to_container(compose_node(overrides or []), resolve=True)


def compose_node(overrides: list[str], with_hydra: bool = False) -> DictConfig:
    """conf/ composed, unresolved; `with_hydra` keeps Hydra's own node (hydra.sweeper...)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose("config", overrides=overrides, return_hydra_config=with_hydra)
    except Exception as err:  # Hydra raises several types; its message names the key
        raise PipelineError(describe(err)) from None


def main() -> None:
    listing = "\n".join(f"  {k}: {allowed(i)}; {i.description}" for k, i in keys().items())
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=f"keys (docs/configuration.md has them with their defaults):\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
