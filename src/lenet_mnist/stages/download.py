"""Stage 1, download: the four verified MNIST IDX files in one folder (lenet_mnist.data)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lenet_mnist import outputs
from lenet_mnist.config import parse
from lenet_mnist.data.sources import download
from lenet_mnist.errors import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, help="folder for the four IDX files")
    args, cfg = parse.arguments(parser)
    source = download(cfg.data, args.out)
    print(f"download: 4 verified MNIST files in {args.out} (source: {source})")


if __name__ == "__main__":
    run_stage(main, on_failure=outputs.restore_deleted)
