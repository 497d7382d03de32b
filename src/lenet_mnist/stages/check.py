"""Stage 0, check: refuse a bad params.yaml before DVC removes any stage's outputs. Every
stage depends on its output, the same for every valid params.yaml (docs/pipeline.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lenet_mnist.config import parse
from lenet_mnist.errors import run_stage
from lenet_mnist.outputs import writing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, help="the file every stage depends on")
    args, _ = parse.arguments(parser)
    with writing(args.out) as (verdict,):
        verdict.write_text("params.yaml passed the config schema\n")  # one for every valid file
    print(f"check: {args.params} is valid")


if __name__ == "__main__":
    run_stage(main)
