"""The download stage's work: the four verified MNIST IDX files from the first source
that delivers them (lenet_mnist.data.sources), the same bytes whichever it is."""

from __future__ import annotations

import sys
from pathlib import Path

from lenet_mnist.config.schema import DataConfig
from lenet_mnist.data.sources import FETCHERS, SourceError
from lenet_mnist.errors import PipelineError
from lenet_mnist.outputs import replacing


def download(cfg: DataConfig, out: Path) -> str:
    """Fill `out` from the first source that delivers all four files; return its name.
    Each source that fails says why on its own line as it happens, so a slow fall-through
    shows progress; the final error repeats every reason in one line."""
    failures = []
    for source, after in zip(cfg.sources, [*cfg.sources[1:], None], strict=True):
        try:
            with replacing(out) as staging:
                FETCHERS[source](cfg, staging)
            return source
        except SourceError as err:
            failures.append(f"{source}: {err}")
            if after:
                print(f"download: {source} failed: {err.brief}; trying {after}", file=sys.stderr)
    raise PipelineError("could not get MNIST from any source; " + " | ".join(failures))
