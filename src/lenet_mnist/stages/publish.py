"""Stage 5, publish: the trained run's test metrics, dataset, models and registry entry."""

from __future__ import annotations

import argparse
from pathlib import Path

from lenet_mnist.config import parse
from lenet_mnist.errors import run_stage
from lenet_mnist.evaluation.evaluate import Outputs, read_metrics
from lenet_mnist.model.networks import WEIGHTS
from lenet_mnist.serving.publish import publish


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path, help="folder with weights.safetensors")
    parser.add_argument("prepared", type=Path, help="folder from the prepare stage")
    parser.add_argument("--metrics", type=Path, required=True, help="JSON from evaluate")
    parser.add_argument("--predictions", type=Path, required=True, help="CSV from evaluate")
    parser.add_argument("--figures", type=Path, required=True, help="PNG folder from evaluate")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    cfg = parse.load(args.params)
    outputs = Outputs(args.metrics, args.predictions, args.figures)
    metrics = read_metrics(args.metrics)
    done = publish(cfg, args.model / WEIGHTS, args.prepared, metrics, outputs.files())
    print("\n".join(done.lines(cfg.logger.registered_model)))


if __name__ == "__main__":
    run_stage(main)
