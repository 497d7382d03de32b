"""Stage 3, train: fit the network with PyTorch Lightning and record every epoch in MLflow."""

from __future__ import annotations

import argparse
from pathlib import Path

from lenet_mnist import outputs, process
from lenet_mnist.config import parse
from lenet_mnist.errors import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("prepared", type=Path, help="folder from the prepare stage")
    parser.add_argument("out", type=Path, help="folder for weights.safetensors")
    parser.add_argument("--history", type=Path, required=True, help="per-epoch CSV (DVC plots)")
    parser.add_argument("--timings", type=Path, required=True, help="per-epoch timings JSON")
    parser.add_argument("--checkpoint", type=Path, help="a resumable state, kept until done")
    args, cfg = parse.arguments(parser, "the composed config")
    process.prepare()  # before torch loads (lenet_mnist.process)
    with process.importing():
        from lenet_mnist import numerics
        from lenet_mnist.training.fit import Outputs, quiet_lightning, train

    numerics.pin(cfg.trainer)
    quiet_lightning()
    out = Outputs(args.out, args.history, args.timings, args.checkpoint)
    trained = train(cfg, args.prepared, out)
    print(trained.line())
    print(trained.run.where("train"))


if __name__ == "__main__":
    run_stage(main, on_failure=outputs.restore_deleted)
