"""The schema as Hydra sees it: its keys in Hydra's ConfigStore, without its types.

conf/config.yaml's defaults list names it first, so composing refuses an unknown key. Its
types stay out: a value of the wrong type would fail Hydra's merge with a message of
Hydra's, which `dvc exp run` prints as six lines of its own. Composed as given, the value
meets `parse.validate` (the check stage, every job), whose one line names the key and what
it allows.
"""

from __future__ import annotations

from dataclasses import MISSING, field, fields, is_dataclass, make_dataclass
from typing import Any, get_type_hints

from lenet_mnist.config.schema import SCHEMA, Config


def register() -> None:
    """Put the untyped schema in Hydra's ConfigStore. Hydra's plugin scan calls this through
    hydra_plugins/lenet_mnist_schema.py, so any process that composes conf/ (DVC's
    included) finds it; storing it again is harmless."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=SCHEMA, node=untyped(Config))


def untyped(schema: type) -> type:
    """A dataclass with `schema`'s keys, groups and defaults, every value of any type."""
    hints = get_type_hints(schema)
    keys: list[tuple[str, Any, Any]] = []
    for f in fields(schema):
        if is_dataclass(hints[f.name]):
            group = untyped(hints[f.name])
            keys.append((f.name, group, field(default_factory=group)))
        elif f.default_factory is not MISSING:
            keys.append((f.name, Any, field(default_factory=f.default_factory)))
        else:
            keys.append((f.name, Any, field(default=f.default)))
    return make_dataclass(schema.__name__, keys)
