"""Rebuild offline.html, the page template that `dvc plots show` fills (see .dvc/config).

DVC's own page loads vega, vega-lite and vega-embed from a CDN, so without internet it
stays blank. This script packs the pinned npm releases (`npm pack`, which checks each
tarball against the registry's integrity hash), takes their minified browser builds and
inlines them into one HTML file, so the page works from any folder and with no network.

The majors match the CDN tags in dvc_render's VegaRenderer.SCRIPTS (vega 5, vega-lite 5,
vega-embed 6): DVC's templates declare vega-lite v5 specs. To move a version, edit PINS
and run `python .dvc/plots/make_offline_template.py` from the repository root.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
OUT = HERE / "offline.html"


class Pin(NamedTuple):
    package: str
    version: str
    build: str  # the minified UMD build inside the tarball; it sets a browser global


PINS = (
    Pin("vega", "5.33.1", "package/build/vega.min.js"),
    Pin("vega-lite", "5.23.0", "package/build/vega-lite.min.js"),
    Pin("vega-embed", "6.29.0", "package/build/vega-embed.min.js"),
)

# dvc_render substitutes these by plain string replacement over the whole file, the
# inlined libraries included, so none may occur there by accident. The scripts one is
# left out of the page on purpose: DVC fills it with the CDN <script src> tags.
PLACEHOLDERS = ("{scripts}", "{plot_divs}", "{refresh_tag}")


class Vendored(NamedTuple):
    pin: Pin
    integrity: str
    sha256: str
    code: str
    license: str | None


def fetch(pin: Pin, workdir: Path) -> Vendored:
    """One pinned build and its LICENSE, read from the tarball that `npm pack` verified."""
    packed = subprocess.run(
        ["npm", "pack", f"{pin.package}@{pin.version}", "--json", "--pack-destination", workdir],
        check=True,
        capture_output=True,
        text=True,
    )
    meta = json.loads(packed.stdout)[0]
    with tarfile.open(workdir / meta["filename"]) as tar:
        code = tar.extractfile(pin.build).read().decode("utf-8")  # type: ignore[union-attr]
        names = tar.getnames()
        license_text = (
            tar.extractfile("package/LICENSE").read().decode("utf-8")  # type: ignore[union-attr]
            if "package/LICENSE" in names
            else None
        )
    sha256 = hashlib.sha256(code.encode("utf-8")).hexdigest()
    return Vendored(pin, meta["integrity"], sha256, code, license_text)


def check_inlinable(item: Vendored) -> None:
    """Refuse a build that would end its <script> early or be rewritten by dvc_render."""
    lowered = item.code.lower()
    for bad in ("</script", "<!--", *PLACEHOLDERS):
        if bad in lowered:
            sys.exit(f"{item.pin.package}: its build contains {bad!r}; it cannot be inlined")


def header(items: list[Vendored]) -> str:
    """The comment that says what is inlined, from where, and under which license."""
    lines = [
        "Offline page template for `dvc plots show` (picked up through plots.html_template",
        "in .dvc/config). It inlines vega, vega-lite and vega-embed, so the plots render",
        "with no network access, drawn as SVG rather than canvas. Built by",
        ".dvc/plots/make_offline_template.py; do not edit by hand.",
        "",
        "Inlined, in this order (npm package name, exact version, file in the tarball):",
    ]
    for it in items:
        lines += [
            f"  npm package {it.pin.package}@{it.pin.version}: {it.pin.build}",
            f"    tarball integrity {it.integrity}",
            f"    sha256 of the inlined file {it.sha256}",
        ]
    lines += [
        "",
        "All three are BSD-3-Clause (the vega tarball ships no LICENSE file; its",
        "package.json declares BSD-3-Clause). The vega-embed build bundles its own",
        "dependencies; their notices stay in the inlined code. The LICENSE files shipped:",
    ]
    for it in items:
        if it.license:
            lines += ["", f"{it.pin.package}:", *it.license.strip().splitlines()]
    text = "\n".join(lines)
    assert "-->" not in text and not any(p in text for p in PLACEHOLDERS)
    return f"<!--\n{text}\n-->"


# DVC's plot divs call vegaEmbed(id, spec) with no options, which draws on a <canvas>.
# SVG keeps axis titles as text: selectable, sharp when zoomed, and checkable by a test.
SVG_BY_DEFAULT = """<script>
var vegaEmbed = (function (embed) {
    return function (el, spec, opts) {
        return embed(el, spec, Object.assign({ renderer: "svg" }, opts));
    };
})(vegaEmbed);
</script>"""


def page(items: list[Vendored]) -> str:
    """The template: DVC's default page layout, with the libraries inlined in <head>."""
    scripts = "\n".join(
        f"<script>/* {it.pin.package} {it.pin.version} */\n{it.code}\n</script>" for it in items
    )
    scripts += "\n" + SVG_BY_DEFAULT
    return f"""<!DOCTYPE html>
{header(items)}
<html>
<head>
    <meta charset="utf-8">
    {{refresh_tag}}
    <title>DVC Plot</title>
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        items = [fetch(pin, Path(tmp)) for pin in PINS]
    for item in items:
        check_inlinable(item)
    OUT.write_text(page(items), encoding="utf-8")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
