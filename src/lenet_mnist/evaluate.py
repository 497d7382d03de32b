"""Stage 4, evaluate: test-set loss, accuracy, per-class accuracy and the confusion matrix.

It imports no Lightning: the weights are a safetensors file and the network a plain
nn.Module. The numbers go to a DVC metrics file and into the MLflow run that trained
these exact weights, with the plots as artifacts.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from lenet_mnist import config, model, numerics, prepare, provenance, publish, tracking
from lenet_mnist.schema import Config
from lenet_mnist.stage import PipelineError, run_stage, writing

NUM_CLASSES = 10


@torch.inference_mode()
def predict(net: torch.nn.Module, x: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """Logits for every image, in batches small enough to stay in the CPU's caches.

    The batch size changes the speed, not the logits (tested)."""
    net.eval()
    return torch.cat(
        [
            net(torch.from_numpy(np.array(x[i : i + batch_size])))
            for i in range(0, len(x), batch_size)
        ]
    )


def score(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """The metrics DVC shows; per-class accuracy is the confusion matrix's diagonal share.

    A class with no test image (a small `data.test_limit`) has no accuracy: null, not the
    0.0 torchmetrics gives, and the keys stay the same ten for `dvc metrics diff`.

    Counted by hand, not with torchmetrics: importing torchmetrics (which imports
    scipy.signal) takes longer than this whole computation, one bincount.
    """
    predicted = logits.argmax(1)
    pairs = labels * NUM_CLASSES + predicted  # row = actual class, column = predicted
    confusion = torch.bincount(pairs, minlength=NUM_CLASSES**2).view(NUM_CLASSES, NUM_CLASSES)
    per_class = confusion.diag() / confusion.sum(1)  # NaN for a class with no test image
    return {
        "test_loss": round(F.cross_entropy(logits, labels).item(), 6),
        "test_acc": round((predicted == labels).float().mean().item(), 6),
        "per_class_acc": {
            str(c): None if a.isnan() else round(a.item(), 6) for c, a in enumerate(per_class)
        },
        "errors": int((predicted != labels).sum()),
        "confusion": confusion.tolist(),
    }


def write_predictions(labels: torch.Tensor, logits: torch.Tensor, path: Path) -> None:
    """One row per test image: the shape DVC's confusion template expects."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["actual", "predicted"])
        writer.writerows(zip(labels.tolist(), logits.argmax(1).tolist(), strict=True))


def plot(metrics: dict, history: Path, out: Path) -> list[Path]:
    """PNG figures for MLflow and `dvc plots`: training curves and the confusion matrix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(history.read_text().splitlines()))
    epochs = [int(r["epoch"]) for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "val"):
        ax_loss.plot(epochs, [float(r[f"{split}_loss"]) for r in rows], "o-", label=split)
        ax_acc.plot(epochs, [float(r[f"{split}_acc"]) for r in rows], "o-", label=split)
    ax_acc.axhline(metrics["test_acc"], color="k", ls="--", label="test (kept weights)")
    for ax, name in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set(xlabel="epoch", ylabel=name, title=f"{name} per epoch")
        ax.legend()
    curves = out / "training_curves.png"
    fig.tight_layout()
    fig.savefig(curves, dpi=100)

    fig, ax = plt.subplots(figsize=(6, 5))
    matrix = np.array(metrics["confusion"])
    ax.imshow(np.log1p(matrix), cmap="Blues")
    for (i, j), n in np.ndenumerate(matrix):
        color = "white" if n > matrix.max() / 2 else "black"
        ax.text(j, i, n, ha="center", va="center", fontsize=7, color=color)
    ax.set(
        xlabel="predicted",
        ylabel="actual",
        xticks=range(10),
        yticks=range(10),
        title=f"test confusion matrix ({metrics['errors']} errors)",
    )
    confusion = out / "confusion_matrix.png"
    fig.tight_layout()
    fig.savefig(confusion, dpi=100)
    plt.close("all")
    return [curves, confusion]


def log_to_mlflow(
    cfg: Config,
    weights: Path,
    prepared: Path,
    metrics: dict,
    files: list[Path],
    run_id: str | None,
) -> tuple[tracking.Recorder, publish.Published]:
    """Add the test numbers and the models to the run that trained these weights (or to a
    new run if none did), and register the served model (lenet_mnist.publish).

    Without `run_id` (the DVC stage) the run is the newest one tagged with these weights.
    """
    mlflow = tracking.client(cfg.logger)
    digest = provenance.sha256(weights)
    run_id = run_id or tracking.find_run(mlflow, cfg.logger.experiment_name, digest)
    if run_id is None:  # e.g. DVC restored the weights from its cache without training
        tags = {tracking.WEIGHTS_TAG: digest, "note": "weights restored, not trained"}
        run = tracking.Recorder.create(mlflow, cfg.logger.experiment_name, tags=tags)
    else:
        run = tracking.Recorder(mlflow, run_id)
    run.metrics(
        {
            "test_loss": metrics["test_loss"],
            "test_acc": metrics["test_acc"],
            **{
                f"test_acc_class_{c}": a
                for c, a in metrics["per_class_acc"].items()
                if a is not None
            },
        }
    )
    run.artifacts(*files)
    published = publish.publish(run, cfg, weights, prepared, metrics["test_acc"])
    if run.status() != "FINISHED":
        run.close()
    return run, published


class Outputs(NamedTuple):
    metrics: Path  # JSON for `dvc metrics`, committed
    predictions: Path  # CSV for DVC's confusion plot, committed
    figures: Path  # folder of PNGs, a cached DVC output: a fresh clone lacks it, so it reruns


def evaluate(
    cfg: Config,
    weights: Path,
    prepared: Path,
    history: Path,
    out: Outputs,
    run_id: str | None = None,
) -> dict:
    if not weights.is_file():
        raise PipelineError(f"{weights} not found; run the train stage first (dvc repro)")
    net = model.load(cfg.model.name, weights)
    x, y = prepare.load(prepared, "test")
    labels = torch.from_numpy(np.array(y))
    logits = predict(net, x)
    metrics = score(logits, labels)
    shown = {k: v for k, v in metrics.items() if k != "confusion"}
    if not math.isfinite(metrics["test_loss"]):
        raise PipelineError(f"{weights} gives a test loss of {metrics['test_loss']}; retrain it")
    with writing(out.metrics, out.predictions, out.figures) as (metrics_file, rows, figures_dir):
        metrics_file.write_text(json.dumps(shown, indent=2, allow_nan=False) + "\n")
        write_predictions(labels, logits, rows)
        figures_dir.mkdir()
        plot(metrics, history, figures_dir)
    figures = sorted(out.figures.glob("*.png"))
    files = [out.metrics, out.predictions, *figures]
    run, published = log_to_mlflow(cfg, weights, prepared, metrics, files, run_id)
    return {**metrics, "run": run, "published": published}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="folder with weights.safetensors")
    parser.add_argument("prepared", type=Path, help="folder from the prepare stage")
    parser.add_argument("--history", type=Path, required=True, help="per-epoch CSV from train")
    parser.add_argument("--metrics", type=Path, required=True, help="JSON for dvc metrics")
    parser.add_argument("--predictions", type=Path, required=True, help="CSV, confusion plot")
    parser.add_argument("--figures", type=Path, required=True, help="folder for PNG figures")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    cfg = config.load(args.params)
    numerics.pin(cfg.trainer)  # the test logits are computed with the training's kernels
    weights = args.model / "weights.safetensors"
    outputs = Outputs(args.metrics, args.predictions, args.figures)
    m = evaluate(cfg, weights, args.prepared, args.history, outputs)
    print(
        f"evaluate: test accuracy {m['test_acc']:.4f} ({m['errors']} errors), "
        f"loss {m['test_loss']:.4f}"
    )
    print(m["run"].where("evaluate"))
    if (published := m["published"]).version is not None:
        holder = "now the champion" if published.champion else "the champion stays"
        name = cfg.logger.registered_model
        print(f"evaluate: registered {name} version {published.version} ({holder})")


if __name__ == "__main__":
    run_stage(main)
