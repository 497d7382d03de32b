"""params.yaml refused in one line when too large or when its YAML aliases (`*a`, each the
whole node `&a` names) would expand too far ("billion laughs"): libyaml's parse events are
counted before a Python object is built. The composed file holds no alias."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lenet_mnist.errors import PipelineError

MAX_BYTES = 256 * 1024  # ~200x the composed file; a list of a thousand mirrors fits
MAX_ALIASES = 20  # a hand edit may name a repeated value; a bomb needs dozens
MAX_VALUES = 10_000  # once aliases are expanded; OmegaConf merges some 10,000 values a second
MAX_DEPTH = 32  # nesting; Python's constructor recurses once per level

# libyaml's parser when PyYAML was built with it (its wheels are): the count costs little.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: Path) -> Any:
    """The file's YAML value, or a PipelineError if it is too large or expands too far."""
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
