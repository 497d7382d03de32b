"""Stage 2, prepare: the IDX files as normalized, padded arrays (lenet_mnist.data.prepare)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lenet_mnist import outputs
from lenet_mnist.config import parse
from lenet_mnist.data.prepare import prepare
from lenet_mnist.errors import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("raw", type=Path, help="folder with the four IDX files")
    parser.add_argument("out", type=Path, help="folder for the prepared arrays")
    args, cfg = parse.arguments(parser)
    stats = prepare(args.raw, args.out, cfg.data)
    print(f"prepare: {stats['sizes']} images, mean {stats['mean']:.4f}, std {stats['std']:.4f}")


if __name__ == "__main__":
    run_stage(main, on_failure=outputs.restore_deleted)
