"""The study report's figures: accuracy and speed against batch size, time and epochs.

Where a grid point has several seeds, a figure shows their mean with its 95% confidence
interval (lenet_mnist.study.replicates): error bars against batch size, bands over epochs.
More figures, and `draw` that writes them all, are in lenet_mnist.study.figures.
"""

from __future__ import annotations

import statistics
from typing import Any

from lenet_mnist.study import replicates
from lenet_mnist.study.rows import SEED, Row, plural

OVERVIEW = "overview.png"


def _points(count: int) -> dict[str, Any]:
    """A line through several points; a lone point (one epoch) as a marker big enough to see.

    A one-point line draws nothing but its marker, so a small one all but vanishes.
    """
    if count > 1:
        return {"marker": "o", "markersize": 3, "linestyle": "-"}
    return {"marker": "o", "markersize": 8, "linestyle": "none"}


def _others(row: Row, rows: list[Row], seed: bool = True) -> list[str]:
    """The row's overrides of keys other than batch size (and the seed, unless `seed`)
    that not every row shares."""
    skip = ("train.batch_size=",) if seed else ("train.batch_size=", SEED)
    shared = set.intersection(*(set(r.overrides.split()) for r in rows))
    return [o for o in row.overrides.split() if o not in shared and not o.startswith(skip)]


def _lines(rows: list[Row]) -> dict[str, list[Row]]:
    """One line per setting of the sweep's other keys (epochs, say), across batch sizes;
    the seeds of a point are its replicates, not a line of their own."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        name = " ".join(_others(row, rows, seed=False)) or plural(row.epochs, "epoch")
        groups.setdefault(name, []).append(row)
    return groups


def point_label(runs: list[Row], rows: list[Row]) -> str:
    """`batch 64 (3 seeds)`: a grid point's legend entry."""
    others = _others(runs[0], rows, seed=False)
    return " ".join([f"batch {runs[0].batch_size}", *others, f"({plural(len(runs), 'seed')})"])


def size_colors(sizes: list[int]) -> dict[int, Any]:
    """One colour per batch size, from small (dark) to large (light)."""
    import matplotlib.pyplot as plt

    cmap, order = plt.get_cmap("viridis"), sorted(set(sizes))
    n = max(len(order) - 1, 1)
    return {size: cmap(0.9 * i / n) for i, size in enumerate(order)}


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
    """The seeds' mean at each batch size, with a 95% error bar where there are two or more."""
    for name, group in _lines(rows).items():
        sizes = sorted({r.batch_size for r in group})
        accs = [
            replicates.interval([100 * r.test_acc for r in group if r.batch_size == size])
            for size in sizes
        ]
        errors = [a.half if a.defined else 0.0 for a in accs]
        means = [a.mean for a in accs]
        ax.errorbar(sizes, means, yerr=errors, fmt="o-", capsize=3, label=name)
    ax.set(
        xscale="log",
        xlabel="batch size",
        ylabel="test accuracy (%), mean and 95% CI",
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
    epoch_bands(ax, rows, lambda r: r.val_acc)
    ax.set(xlabel="epoch", ylabel="validation accuracy (%)", title="Learning curves")


def epoch_bands(ax: Any, rows: list[Row], curve: Any) -> None:
    """Per grid point, the mean of `curve(run)` over its seeds at each epoch, in percent,
    with its 95% band; a lone epoch gets a marker and an error bar instead of a band."""
    import numpy as np

    points = replicates.group(rows)
    colors = size_colors([r.batch_size for r in rows])
    last = 1
    for runs in points.values():
        curves = [curve(r) for r in runs if curve(r)]
        if not curves:
            continue
        band = replicates.band([[100 * v for v in c] for c in curves])
        x = np.arange(1, len(band) + 1)
        low, high = np.array([b.low for b in band]), np.array([b.high for b in band])
        color, last = colors[runs[0].batch_size], max(last, len(band))
        ax.plot(x, [b.mean for b in band], **_points(len(band)), color=color,
                label=point_label(runs, rows))  # fmt: skip
        defined = np.array([b.defined for b in band])
        if len(band) > 1 and defined.any():
            ax.fill_between(x, low, high, where=defined, color=color, alpha=0.2, linewidth=0)
        elif defined.any():
            ax.vlines(x, low, high, color=color)
    _epoch_ticks(ax, last)
    if ax.get_legend_handles_labels()[0]:
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
