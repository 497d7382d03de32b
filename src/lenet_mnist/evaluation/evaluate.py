"""Test-set loss, accuracy, per-class accuracy, the confusion matrix and the figures of saved
weights, with no Lightning and no MLflow: publishing them is lenet_mnist.serving.publish's job."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from lenet_mnist.data import prepare
from lenet_mnist.errors import PipelineError
from lenet_mnist.model import inference, networks
from lenet_mnist.outputs import writing

NUM_CLASSES = 10
PER_CLASS = "per_class_acc"


def score(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """The metrics DVC shows. A class with no test image (a small `data.test_limit`) has a
    null accuracy, not torchmetrics' 0.0, and the keys stay the same ten for `dvc metrics
    diff`. No torchmetrics: importing it takes longer than this one bincount."""
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


@dataclass(frozen=True)
class Outputs:
    metrics: Path  # JSON for `dvc metrics`, committed
    predictions: Path  # CSV for DVC's confusion plot, committed
    figures: Path  # folder of PNGs, a cached DVC output: a fresh clone lacks it, so it reruns

    @property
    def per_class(self) -> Path:
        """Its own file: ten more columns would make `dvc metrics show` too wide."""
        return self.metrics.with_name(f"{self.metrics.stem}_per_class.json")

    def files(self) -> list[Path]:
        """Every file written, as publishing logs them."""
        return [self.metrics, self.per_class, self.predictions, *sorted(self.figures.glob("*.png"))]


def evaluate(
    network: str, weights: Path, prepared: Path, history: Path, out: Outputs
) -> dict[str, Any]:
    """Score `weights` on the test split, write the metrics, predictions and figures, and
    return the metrics with the confusion matrix."""
    net = networks.load(network, weights)
    x, y = prepare.read_split(prepared, "test")
    labels = torch.from_numpy(np.array(y))
    logits = inference.logits(net, x)
    metrics = score(logits, labels)
    shown = {k: v for k, v in metrics.items() if k not in ("confusion", PER_CLASS)}
    if not math.isfinite(metrics["test_loss"]):
        raise PipelineError(f"{weights} gives a test loss of {metrics['test_loss']}; retrain it")
    files = (out.metrics, out.per_class, out.predictions, out.figures)
    with writing(*files) as (metrics_file, per_class_file, rows, figures_dir):
        metrics_file.write_text(json.dumps(shown, indent=2, allow_nan=False) + "\n")
        per_class_file.write_text(json.dumps({PER_CLASS: metrics[PER_CLASS]}, indent=2) + "\n")
        # One row per test image for DVC's confusion plot, CRLF-ended as the hashed file is
        pairs = torch.stack([labels, logits.argmax(1)], 1).numpy()
        np.savetxt(rows, pairs, "%d", ",", "\r\n", "actual,predicted", comments="")
        figures_dir.mkdir()
        plot(metrics, history, figures_dir)
    return metrics


def read_metrics(out: Outputs) -> dict[str, Any]:
    """test.json and its per-class file, refused unless evaluate wrote them."""
    metrics: dict[str, Any] = {}
    for path, needed in ((out.metrics, ("test_loss", "test_acc")), (out.per_class, (PER_CLASS,))):
        try:
            read = json.loads(path.read_text())
        except ValueError:  # UnicodeDecodeError too
            read = None
        if not isinstance(read, dict) or not all(k in read for k in needed):
            raise PipelineError(
                f"{path} is not evaluate's metrics (JSON with {', '.join(needed)}); "
                "rerun the evaluate stage (dvc repro -f evaluate)"
            )
        metrics |= read
    return metrics


def plot(metrics: dict, history: Path, out: Path) -> None:
    """PNG figures for MLflow and `dvc plots`: training curves and the confusion matrix."""
    import matplotlib.pyplot as plt

    plt.switch_backend("Agg")
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
    fig.tight_layout()
    fig.savefig(out / "training_curves.png", dpi=100)

    fig, ax = plt.subplots(figsize=(6, 5))
    matrix = np.array(metrics["confusion"])
    ax.imshow(np.log1p(matrix), cmap="Blues")
    for (i, j), n in np.ndenumerate(matrix):
        color = "white" if n > matrix.max() / 2 else "black"
        ax.text(j, i, n, ha="center", va="center", fontsize=7, color=color)
    ax.set(xlabel="predicted", ylabel="actual", xticks=range(10), yticks=range(10))
    ax.set_title(f"test confusion matrix ({metrics['errors']} errors)")
    fig.tight_layout()
    fig.savefig(out / "confusion_matrix.png", dpi=100)
    plt.close("all")
