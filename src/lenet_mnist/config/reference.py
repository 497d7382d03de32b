"""docs/configuration.md's tables, below its own introduction, from the schema's Fields and
conf/ composed; a test holds the page to it: `python -m lenet_mnist.config.reference`."""

from __future__ import annotations

from lenet_mnist.config import identity, parse
from lenet_mnist.config.schema import ENTRIES, allowed, keys, lookup, show
from lenet_mnist.errors import run_stage

OUT = parse.CONF_DIR.parent / "docs" / "configuration.md"


def render() -> str:
    files = parse.compose_node([], with_hydra=True).hydra.runtime.choices  # group: its file
    composed, leaves = parse.compose(), keys()
    lines = [OUT.read_text().partition("\n\n## ")[0]]  # the page's own introduction
    for group in parse.GROUPS:
        where = f"conf/{group}/{files[group]}.yaml" if group in files else "conf/config.yaml"
        about = ENTRIES[group].description or ""
        about = f"{about[:1].upper()}{about[1:]}. " if group not in leaves else ""
        lines += ["", f"## {group}", "", f"{about}Defaults in `{where}`.", ""]
        lines += ["| key | default | allowed | decides | what it does |", "|---|---|---|---|---|"]
        for key in (k for k in leaves if k == group or k.startswith(group + ".")):
            info, value = leaves[key], show(lookup(composed, key))
            decides = "yes" if identity.decides_result(key) else "no"
            row = f"| `{key}` | `{value}` | {allowed(info)} | {decides} | {info.description} |"
            lines.append(row)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    run_stage(lambda: OUT.write_text(render()))
