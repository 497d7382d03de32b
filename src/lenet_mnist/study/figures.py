"""Every figure of the study report: the overview's panels (lenet_mnist.study.plots) and
those that need measurements older runs lack, each drawn only when some run has them:
the train−validation gap and test accuracy over epochs, and steps against examples to
each target with the fitted critical-batch-size curve (lenet_mnist.study.scaling).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lenet_mnist.study import scaling
from lenet_mnist.study.plots import OVERVIEW, PANELS, epoch_bands, size_colors
from lenet_mnist.study.rows import Row

if TYPE_CHECKING:
    from lenet_mnist.study.analysis import Scaling, Study

GAP = "generalization_gap.png"
TEST_CURVES = "test_accuracy_curves.png"
STEPS_VS_EXAMPLES = "steps_vs_examples.png"
MARKERS = "osD^v<>p"
LINES = ["-", "--", ":", "-."]


def generalization_gap(ax: Any, rows: list[Row]) -> None:
    """Training minus validation accuracy: how much of what is learned does not carry over."""

    def gap(row: Row) -> list[float]:
        return [t - v for t, v in zip(row.train_acc, row.val_acc, strict=False)]

    epoch_bands(ax, rows, gap)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set(
        xlabel="epoch",
        ylabel="train − validation accuracy (percentage points)",
        title="Generalization gap over epochs",
    )


def epoch_test_accuracy(ax: Any, rows: list[Row]) -> None:
    """Test accuracy at each epoch's end: shown, never used to choose an epoch."""
    epoch_bands(ax, rows, lambda r: r.epoch_test_acc)
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy over epochs")


def steps_vs_examples(ax: Any, fits: list[Scaling]) -> None:
    """Each run's steps and examples to each target (colour: batch size, marker: target),
    and the fitted S(B) = S_min + E_min/B traced over batch sizes where it is positive; its
    point at B_crit, twice the fewest steps and twice the fewest examples, marked `x`."""
    import numpy as np
    from matplotlib.lines import Line2D

    sizes = sorted({r.batch_size for s in fits for r in s.runs})
    colors = size_colors(sizes)
    handles = [Line2D([], [], marker="o", linestyle="none", color=colors[b], label=f"batch {b}")
               for b in sizes]  # fmt: skip
    for i, s in enumerate(fits):
        marker, line = MARKERS[i % len(MARKERS)], LINES[i % len(LINES)]
        for r in s.runs:
            hit = r.reached[s.target]
            ax.plot(hit.examples, hit.iterations, marker, color=colors[r.batch_size], alpha=0.8)
        label = f"target {s.target:g}" + (f" ({s.setting})" if s.setting else "")
        f = s.fit
        if f and f.s_min > 0 and f.e_min > 0:
            examples, steps = scaling.curve(f, np.geomspace(sizes[0] / 4, sizes[-1] * 4, 200))
            ax.plot(examples, steps, line, color="black", linewidth=1)
            ax.plot(2 * f.e_min, 2 * f.s_min, "x", color="black", markersize=9)
            label += f": B_crit ≈ {f.b_crit:,.0f}"
        handles.append(Line2D([], [], marker=marker, linestyle=line, color="black", label=label))
    if any(s.fit and s.fit.s_min > 0 and s.fit.e_min > 0 for s in fits):
        handles.append(Line2D([], [], marker="x", linestyle="none", color="black",
                              label="B = B_crit: 2 S_min steps, 2 E_min examples"))  # fmt: skip
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="training examples to target",
        ylabel="optimizer steps to target",
        title="Steps against examples to reach each validation accuracy",
    )
    ax.legend(handles=handles, fontsize="small")


def extra_panels(study: Study) -> dict[str, Callable[[Any], None]]:
    """The figures this study's runs have data for, each a function of its axes."""
    panels: dict[str, Callable[[Any], None]] = {}
    if study.curves["train_acc"]:
        panels[GAP] = lambda ax: generalization_gap(ax, study.rows)
    if study.curves["epoch_test_acc"]:
        panels[TEST_CURVES] = lambda ax: epoch_test_accuracy(ax, study.rows)
    fits = [s for s in study.scaling if s.runs]
    if fits:
        panels[STEPS_VS_EXAMPLES] = lambda ax: steps_vs_examples(ax, fits)
    return panels


def draw(study: Study, out: Path, caption: str) -> list[Path]:
    """One PNG per panel, the four of PANELS also together in OVERVIEW with the grid and
    machine as caption, then the extra figures the runs have data for."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {n: (lambda ax, p=p: p(ax, study.rows)) for n, p in PANELS.items()}
    panels |= extra_panels(study)
    files = []
    for name, panel in panels.items():
        fig, ax = plt.subplots(figsize=(7, 4.5))
        panel(ax)
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        files.append(out / name)
    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    for ax, panel in zip(axes.flat, PANELS.values(), strict=True):
        panel(ax, study.rows)
    fig.suptitle(caption, fontsize="medium")
    fig.tight_layout()
    fig.savefig(out / OVERVIEW, dpi=100)
    plt.close("all")
    return [*files, out / OVERVIEW]
