"""The evaluate stage's figures: training curves and the test confusion matrix, as PNG."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def plot(metrics: dict, history: Path, out: Path) -> None:
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
    fig.tight_layout()
    fig.savefig(out / "training_curves.png", dpi=100)

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
    fig.tight_layout()
    fig.savefig(out / "confusion_matrix.png", dpi=100)
    plt.close("all")
