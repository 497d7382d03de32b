"""The tuned study's figures: the accuracy–time Pareto front, the updates each batch size
needs at its tuned rate, and how the updates to a target depend on the rate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lenet_mnist.study import scaling
from lenet_mnist.study.fastest import pareto, points
from lenet_mnist.study.tuning import TunedStudy, widest_target

PARETO = "pareto.png"
TUNED_STEPS = "tuned_steps.png"
RATES = "rates.png"


def _colors(sizes: list[int]) -> dict[int, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    return {b: cmap(i / max(1, len(sizes) - 1)) for i, b in enumerate(sorted(sizes))}


def accuracy_vs_time(ax: Any, study: TunedStudy) -> None:
    found = points(study.learned)
    colors = _colors(sorted({p.row.batch_size for p in found}))
    for size, color in colors.items():
        mine = [p for p in found if p.row.batch_size == size and p.acc > 0.95]
        ax.scatter([p.seconds for p in mine], [p.acc * 100 for p in mine], s=8, color=color,
                   alpha=0.5, label=f"batch {size}")  # fmt: skip
    front = pareto(found)
    ax.step([p.seconds for p in front], [p.acc * 100 for p in front], where="post",
            color="black", linewidth=1.2, label="Pareto front")  # fmt: skip
    for t in study.test_targets:
        ax.axhline(t * 100, color="grey", linewidth=0.6, linestyle=":")
    ax.set(xscale="log", xlabel="training seconds (validation included)",
           ylabel="test accuracy (%)", ylim=(95, None),
           title="Test accuracy against time, every epoch end of every run")  # fmt: skip
    ax.legend(fontsize="small", loc="lower right")


def tuned_steps(ax: Any, study: TunedStudy, grid: str) -> None:
    """One grid's updates to each target at its tuned rates, and the S(B) fitted to them."""
    fits = [f for f in study.fitted(grid) if f.fit is not None]
    for i, f in enumerate(fits):
        sizes = np.array(sorted(f.chosen), dtype=float)
        means = [f.chosen[int(b)].steps(f.target).mean for b in sizes]
        label = f"val {f.target:g}: B_crit ≈ {f.fit.b_crit:,.0f}"
        ax.plot(sizes, means, "o", color=f"C{i}", label=label)
        curve = np.geomspace(sizes[0], sizes[-1], 100)
        ax.plot(curve, scaling.curve(f.fit, curve)[1], "-", color=f"C{i}", linewidth=1)
    title = f"{study.labels[grid]}: updates to each validation target, S(B) fitted"
    ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="updates", title=title)
    sizes = sorted({b for f in fits for b in f.chosen})
    ax.set_xticks(sizes, [str(b) for b in sizes])
    ax.minorticks_off()
    ax.legend(fontsize="small")


def rate_landscape(ax: Any, study: TunedStudy, grid: str) -> None:
    rates = study.grids.get(grid, [])
    target = widest_target(study.fitted(grid), rates)
    if target is None:
        return
    colors = _colors(sorted({r.batch_size for r in rates}))
    for size, color in colors.items():
        mine = [r for r in rates if r.batch_size == size and r.reached(target)]
        ax.plot([r.lr for r in mine], [r.steps(target).mean for r in mine], "o-", color=color,
                markersize=4, label=f"batch {size}")  # fmt: skip
    title = f"{study.labels[grid]}: updates to val {target:g} by rate (absent: not reached)"
    ax.set(xscale="log", yscale="log", xlabel="learning rate", ylabel="updates", title=title)
    ax.legend(fontsize="x-small")


def _tuned(study: TunedStudy) -> list[str]:
    """The grids with more than one rate per batch size."""
    return [n for n, rs in study.grids.items() if len(rs) > len({r.batch_size for r in rs})]


def draw(study: TunedStudy, out: Path, caption: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    for name, panels in {
        PARETO: [lambda ax: accuracy_vs_time(ax, study)],
        TUNED_STEPS: [lambda ax, g=g: tuned_steps(ax, study, g) for g in study.grids],
        RATES: [lambda ax, g=g: rate_landscape(ax, study, g) for g in _tuned(study)],
    }.items():
        fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.8), squeeze=False)
        for ax, panel in zip(axes.flat, panels, strict=True):
            panel(ax)
        fig.suptitle(caption, fontsize="small")
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        files.append(out / name)
    return files
