"""Stage 5, publish: the trained run's test metrics, dataset, models and registry entry. Its
receipt is git-ignored and uncached, so a fresh clone publishes into its own MLflow store;
publishing is idempotent, so a store that has these weights gets nothing new."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from lenet_mnist import process
from lenet_mnist.config import parse
from lenet_mnist.errors import run_stage
from lenet_mnist.outputs import writing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path, help="folder with weights.safetensors")
    parser.add_argument("prepared", type=Path, help="folder from the prepare stage")
    parser.add_argument("--metrics", type=Path, required=True, help="JSON from evaluate")
    parser.add_argument("--predictions", type=Path, required=True, help="CSV from evaluate")
    parser.add_argument("--figures", type=Path, required=True, help="PNG folder from evaluate")
    parser.add_argument("--receipt", type=Path, required=True, help="JSON: what was published")
    args, cfg = parse.arguments(parser)
    process.prepare()  # before torch loads (lenet_mnist.process)
    with process.importing():
        from lenet_mnist.evaluation.evaluate import Outputs, read_metrics
        from lenet_mnist.model.networks import WEIGHTS
        from lenet_mnist.serving.publish import publish

    outputs = Outputs(args.metrics, args.predictions, args.figures)
    metrics = read_metrics(outputs)
    name = cfg.logger.registered_model
    in_experiment = "DVC_EXP_NAME" in os.environ  # set by `dvc exp run` for its stages
    with writing(args.receipt) as (receipt,):
        weights, files = args.model / WEIGHTS, outputs.files()
        done = publish(cfg, weights, args.prepared, metrics, files, None, not in_experiment)
        receipt.write_text(done.receipt(name, metrics["test_acc"]))
    print("\n".join(done.lines(name)))


if __name__ == "__main__":
    run_stage(main)
