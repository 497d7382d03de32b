"""The study report's figures: accuracy and speed against batch size, time and epochs."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lenet_mnist.report import Row

OVERVIEW = "overview.png"


def plural(count: int, word: str) -> str:
    """`1 epoch`, `2 epochs`: counts in the report read as written English."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _points(count: int) -> dict[str, Any]:
    """A line through several points; a lone point (one epoch) as a marker big enough to see.

    A one-point line draws nothing but its marker, so a small one all but vanishes.
    """
    if count > 1:
        return {"marker": "o", "markersize": 3, "linestyle": "-"}
    return {"marker": "o", "markersize": 8, "linestyle": "none"}


def _others(row: Row, rows: list[Row]) -> list[str]:
    """The row's overrides of keys other than batch size that not every row shares."""
    shared = set.intersection(*(set(r.overrides.split()) for r in rows))
    return [
        o
        for o in row.overrides.split()
        if o not in shared and not o.startswith("train.batch_size=")
    ]


def _lines(rows: list[Row]) -> dict[str, list[Row]]:
    """One line per setting of the sweep's other keys (epochs, say), across batch sizes."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        name = " ".join(_others(row, rows)) or plural(row.epochs, "epoch")
        groups.setdefault(name, []).append(row)
    return groups


def _colors(rows: list[Row]) -> dict[str, Any]:
    """One colour per run, from small batches (dark) to large (light)."""
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("viridis")
    n = max(len(rows) - 1, 1)
    order = sorted(rows, key=lambda r: (r.batch_size, r.epochs))
    return {r.run_id: cmap(0.9 * i / n) for i, r in enumerate(order)}


def _label(row: Row, rows: list[Row]) -> str:
    return " ".join([f"batch {row.batch_size}", *_others(row, rows)])


def accuracy_vs_batch_size(ax: Any, rows: list[Row]) -> None:
    for name, group in _lines(rows).items():
        sizes, accs = [r.batch_size for r in group], [100 * r.test_acc for r in group]
        ax.plot(sizes, accs, "o-", label=name)
    ax.set(
        xscale="log",
        xlabel="batch size",
        ylabel="test accuracy (%)",
        title="Test accuracy against batch size",
    )
    _batch_ticks(ax, rows)
    ax.legend()


def speed_vs_batch_size(ax: Any, rows: list[Row]) -> None:
    """Speed depends on the batch size alone, so runs of one size share a point (median)."""
    sizes = sorted({r.batch_size for r in rows})
    same = [[r for r in rows if r.batch_size == size] for size in sizes]
    seconds = [statistics.median(r.s_per_epoch for r in group) for group in same]
    samples = [statistics.median(r.samples_per_s for r in group) for group in same]
    ax.plot(sizes, seconds, "o-", color="C0", label="seconds per epoch")
    right = ax.twinx()
    right.plot(sizes, samples, "s--", color="C1", label="samples per second")
    ax.set(
        xscale="log",
        xlabel="batch size",
        ylabel="seconds per epoch (median)",
        title="Speed against batch size",
        ylim=(0, None),
    )
    right.set(ylabel="training samples per second", ylim=(0, None))
    _batch_ticks(ax, rows)
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="center right", fontsize="small")


def accuracy_vs_time(ax: Any, rows: list[Row]) -> None:
    colors = _colors(rows)
    for r in rows:
        ax.plot(
            r.elapsed_s,
            [100 * a for a in r.val_acc],
            **_points(len(r.val_acc)),
            color=colors[r.run_id],
            label=_label(r, rows),
        )
    ax.set(
        xlabel="seconds of training and validation (compilation included)",
        ylabel="validation accuracy (%)",
        title="Accuracy against wall-clock time",
    )
    ax.legend(fontsize="small")


def learning_curves(ax: Any, rows: list[Row]) -> None:
    colors = _colors(rows)
    for r in rows:
        epochs = range(1, len(r.val_acc) + 1)
        ax.plot(
            epochs,
            [100 * a for a in r.val_acc],
            **_points(len(r.val_acc)),
            color=colors[r.run_id],
            label=_label(r, rows),
        )
    ax.set(xlabel="epoch", ylabel="validation accuracy (%)", title="Learning curves")
    _epoch_ticks(ax, max(len(r.val_acc) for r in rows))
    ax.legend(fontsize="small")


def _epoch_ticks(ax: Any, last: int) -> None:
    """Whole epochs only: matplotlib's integer locator gives up on a range of one epoch."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlim(0.5, last + 0.5)
    if last <= 12:
        ax.set_xticks(range(1, last + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _batch_ticks(ax: Any, rows: list[Row]) -> None:
    sizes = sorted({r.batch_size for r in rows})
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.minorticks_off()


PANELS = {
    "accuracy_vs_batch_size.png": accuracy_vs_batch_size,
    "speed_vs_batch_size.png": speed_vs_batch_size,
    "accuracy_vs_time.png": accuracy_vs_time,
    "learning_curves.png": learning_curves,
}


def draw(rows: list[Row], out: Path, caption: str) -> list[Path]:
    """One PNG per panel, and all four in OVERVIEW with the grid and machine as caption."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    for name, panel in PANELS.items():
        fig, ax = plt.subplots(figsize=(7, 4.5))
        panel(ax, rows)
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        files.append(out / name)
    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    for ax, panel in zip(axes.flat, PANELS.values(), strict=True):
        panel(ax, rows)
    fig.suptitle(caption, fontsize="medium")
    fig.tight_layout()
    fig.savefig(out / OVERVIEW, dpi=100)
    plt.close("all")
    return [*files, out / OVERVIEW]
