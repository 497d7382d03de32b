"""Stage 4, evaluate: test metrics, predictions and figures of the trained weights."""

from __future__ import annotations

import argparse
from pathlib import Path

from lenet_mnist import process
from lenet_mnist.config import parse
from lenet_mnist.errors import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path, help="folder with weights.safetensors")
    parser.add_argument("prepared", type=Path, help="folder from the prepare stage")
    parser.add_argument("--history", type=Path, required=True, help="per-epoch CSV from train")
    parser.add_argument("--metrics", type=Path, required=True, help="JSON for dvc metrics")
    parser.add_argument("--predictions", type=Path, required=True, help="CSV, confusion plot")
    parser.add_argument("--figures", type=Path, required=True, help="folder for PNG figures")
    args, cfg = parse.arguments(parser)
    process.prepare()  # before torch loads (lenet_mnist.process)
    with process.importing():
        from lenet_mnist import numerics
        from lenet_mnist.evaluation.evaluate import Outputs, evaluate
        from lenet_mnist.model.networks import WEIGHTS

    numerics.pin(cfg.trainer)  # the test logits are computed with the training's kernels
    outputs = Outputs(args.metrics, args.predictions, args.figures)
    m = evaluate(cfg.model.name, args.model / WEIGHTS, args.prepared, args.history, outputs)
    print(
        f"evaluate: test accuracy {m['test_acc']:.4f} ({m['errors']} errors), "
        f"loss {m['test_loss']:.4f}"
    )


if __name__ == "__main__":
    run_stage(main)
