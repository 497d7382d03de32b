"""Both studies' figures: over several seeds, the mean with its 95% interval (error bars
against batch size, bands over epochs); a figure whose measurement no run logged is left out."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from itertools import cycle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lenet_mnist.study import scaling, tuning
from lenet_mnist.study.fixed import Scaling, Study, settings
from lenet_mnist.study.runs import Interval, interval, plural, to
from lenet_mnist.study.tuning import TunedStudy

OVERVIEW = "overview.png"
GAP = "generalization_gap.png"
TEST_CURVES = "test_accuracy_curves.png"
STEPS_VS_EXAMPLES = "steps_vs_examples.png"
MARKERS = "osD^v<>p"
LINES = ["-", "--", ":", "-."]


def _points(count: int) -> dict[str, Any]:
    """A lone point (one epoch) as a marker big enough to see: a one-point line draws none."""
    line = count > 1
    return {"marker": "o", "markersize": 3 if line else 8, "linestyle": "-" if line else "none"}


def shades(keys: Iterable[Any]) -> dict[Any, Any]:
    """One colour per key, in order from dark to light."""
    import matplotlib.pyplot as plt

    order = list(dict.fromkeys(keys))
    n = max(len(order) - 1, 1)
    return {key: plt.get_cmap("viridis")(0.9 * i / n) for i, key in enumerate(order)}


def accuracy_vs_batch_size(ax: Any, runs: pd.DataFrame) -> None:
    """The seeds' mean at each batch size, with a 95% error bar where there are two or
    more; one line per setting of the sweep's other keys (epochs, say)."""
    names = settings(runs)
    lines = [n or plural(e, "epoch") for n, e in zip(names, runs["epochs"], strict=True)]
    for name, group in runs.groupby(lines, sort=False):
        accs = (100 * group["test_acc"]).groupby(group["batch_size"]).agg(interval)
        errors = [a.half if a.defined else 0.0 for a in accs]
        ax.errorbar(list(accs.index), [a.mean for a in accs], yerr=errors, fmt="o-", capsize=3,
                    label=name)  # fmt: skip
    ax.set(ylabel="test accuracy (%), mean and 95% CI", title="Test accuracy against batch size")
    _batch_axis(ax, runs["batch_size"])
    ax.legend()


def speed_vs_batch_size(ax: Any, runs: pd.DataFrame) -> None:
    """Speed depends on the batch size alone, so runs of one size share a point (median)."""
    speed = runs.groupby("batch_size")[["s_per_epoch", "samples_per_s"]].median()
    ax.plot(speed.index, speed["s_per_epoch"], "o-", color="C0", label="seconds per epoch")
    right = ax.twinx()
    right.plot(speed.index, speed["samples_per_s"], "s--", color="C1", label="samples per second")
    ax.set(ylabel="seconds per epoch (median)", title="Speed against batch size", ylim=(0, None))
    right.set(ylabel="training samples per second", ylim=(0, None))
    _batch_axis(ax, runs["batch_size"])
    ax.legend(handles=[*ax.lines, *right.lines], loc="center right", fontsize="small")


def accuracy_vs_time(ax: Any, runs: pd.DataFrame) -> None:
    """One colour per run, from small batches (dark) to large (light)."""
    colors = shades(runs.sort_values(["batch_size", "epochs"], kind="stable")["run_id"])
    for r, others in zip(runs.itertuples(), settings(runs, seed=True), strict=True):
        ax.plot(r.elapsed_s, [100 * a for a in r.val_acc], **_points(len(r.val_acc)),
                color=colors[r.run_id],
                label=" ".join([f"batch {r.batch_size}", others]).strip())  # fmt: skip
    ax.set(xlabel="seconds of training and validation (compilation included)",
           ylabel="validation accuracy (%)", title="Accuracy against wall-clock time")  # fmt: skip
    ax.legend(fontsize="small")


def epoch_bands(
    ax: Any, runs: pd.DataFrame, curve: Callable[[Any], list[float]], ylabel: str, title: str
) -> None:
    """Per grid point, the mean of `curve(run)` over its seeds at each epoch, in percent, with
    its 95% band over the runs that got that far (early stopping ends some sooner)."""
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    colors = shades(sorted(set(runs["batch_size"].tolist())))
    last, names = 1, settings(runs)
    for _, group in runs.groupby("point", sort=False):
        curves = [[100 * v for v in c] for r in group.itertuples() if (c := curve(r))]
        if not curves:
            continue
        band = pd.DataFrame(map(vars, bands(curves)))  # per epoch: mean, low, high, n
        x, defined, size = band.index + 1, band["n"] >= 2, group["batch_size"].iloc[0]
        last, seeds = max(last, len(band)), f"({plural(len(group), 'seed')})"
        label = " ".join(filter(None, [f"batch {size}", names[group.index[0]], seeds]))
        ax.plot(x, band["mean"], **_points(len(band)), color=colors[size], label=label)
        if len(band) > 1 and defined.any():
            ax.fill_between(x, band["low"], band["high"], where=defined, color=colors[size],
                            alpha=0.2, linewidth=0)  # fmt: skip
        elif defined.any():
            ax.vlines(x, band["low"], band["high"], color=colors[size])
    _epoch_ticks(ax, last)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")


learning_curves = partial(epoch_bands, curve=lambda r: r.val_acc,
                          ylabel="validation accuracy (%)", title="Learning curves")  # fmt: skip
# Test accuracy at each epoch's end: shown, never used to choose an epoch.
epoch_test_accuracy = partial(epoch_bands, curve=lambda r: r.epoch_test_acc,
                              ylabel="test accuracy (%)",
                              title="Test accuracy over epochs")  # fmt: skip


def generalization_gap(ax: Any, runs: pd.DataFrame) -> None:
    """Training minus validation accuracy: how much of what is learned does not carry over."""
    gap = lambda r: [t - v for t, v in zip(r.train_acc, r.val_acc, strict=False)]  # noqa: E731
    epoch_bands(ax, runs, gap, "train − validation accuracy (percentage points)",
                "Generalization gap over epochs")  # fmt: skip
    ax.axhline(0, color="grey", linewidth=0.8)


def bands(curves: list[list[float]]) -> list[Interval]:
    """Per epoch, the interval over the runs that got that far."""
    return list(pd.DataFrame(map(pd.Series, curves)).apply(interval))


def _epoch_ticks(ax: Any, last: int) -> None:
    """Whole epochs only: matplotlib's integer locator gives up on a range of one epoch."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlim(0.5, last + 0.5)
    if last <= 12:
        ax.set_xticks(range(1, last + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _batch_axis(ax: Any, batch_sizes: Iterable[int]) -> None:
    ax.set(xscale="log", xlabel="batch size")
    sizes = sorted(set(batch_sizes))
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.minorticks_off()


def steps_vs_examples(ax: Any, fits: list[Scaling]) -> None:
    """Each run's steps and examples to each target (colour: batch size, marker: target), and
    S(B) fitted where positive, `x` at B_crit (twice S_min steps, twice E_min examples)."""
    from matplotlib.lines import Line2D

    sizes = sorted({b for s in fits for b in s.runs["batch_size"].tolist()})
    colors = shades(sizes)
    handles = [Line2D([], [], marker="o", linestyle="none", color=colors[b], label=f"batch {b}")
               for b in sizes]  # fmt: skip
    for s, marker, line in zip(fits, cycle(MARKERS), cycle(LINES), strict=False):
        reach = zip(s.runs["batch_size"], s.runs[to("examples", s.target)],
                    s.runs[to("iterations", s.target)], strict=True)  # fmt: skip
        for size, examples, iterations in reach:
            ax.plot(examples, iterations, marker, color=colors[size], alpha=0.8)
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
    ax.set(xscale="log", yscale="log", xlabel="training examples to target",
           ylabel="optimizer steps to target",
           title="Steps against examples to reach each validation accuracy")  # fmt: skip
    ax.legend(handles=handles, fontsize="small")


PANELS = {
    "accuracy_vs_batch_size.png": accuracy_vs_batch_size,
    "speed_vs_batch_size.png": speed_vs_batch_size,
    "accuracy_vs_time.png": accuracy_vs_time,
    "learning_curves.png": learning_curves,
}


def _figure(path: Path, panels: list[Callable[[Any], None]], caption: str | None = None,
            shape: tuple[int, int] = (1, 1), size: tuple[float, float] = (7, 4.5),
            fontsize: str = "small") -> Path:  # fmt: skip
    """One PNG of the panels, side by side in `shape`, under the caption."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(*shape, figsize=size, squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=True):
        panel(ax)
    if caption:
        fig.suptitle(caption, fontsize=fontsize)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def draw(study: Study, out: Path, caption: str) -> list[Path]:
    """A PNG per panel the runs have data for; PANELS' four also in OVERVIEW under the caption."""
    panels = {n: (lambda ax, p=p: p(ax, study.runs)) for n, p in PANELS.items()}
    if study.logged("train_acc"):
        panels[GAP] = lambda ax: generalization_gap(ax, study.runs)
    if study.logged("epoch_test_acc"):
        panels[TEST_CURVES] = lambda ax: epoch_test_accuracy(ax, study.runs)
    if fits := [s for s in study.scaling if len(s.runs)]:
        panels[STEPS_VS_EXAMPLES] = lambda ax: steps_vs_examples(ax, fits)
    files = [_figure(out / name, [panel]) for name, panel in panels.items()]
    four = list(panels.values())[: len(PANELS)]
    return [*files, _figure(out / OVERVIEW, four, caption, (2, 2), (14, 9), "medium")]


def tuned_accuracy_vs_time(ax: Any, study: TunedStudy) -> None:
    found = tuning.points(study.learned)
    for size, color in shades(sorted(set(found["batch_size"].tolist()))).items():
        mine = found[(found["batch_size"] == size) & (found["acc"] > 0.95)]
        ax.scatter(list(mine["seconds"]), list(mine["acc"] * 100), s=8, color=color, alpha=0.5,
                   label=f"batch {size}")  # fmt: skip
    front = tuning.pareto(found)
    ax.step(list(front["seconds"]), list(front["acc"] * 100), where="post", color="black",
            linewidth=1.2, label="Pareto front")  # fmt: skip
    for t in tuning.TEST_TARGETS:
        ax.axhline(t * 100, color="grey", linewidth=0.6, linestyle=":")
    ax.set(xscale="log", xlabel="training seconds (validation included)",
           ylabel="test accuracy (%)", ylim=(95, None),
           title="Test accuracy against time, every epoch end of every run")  # fmt: skip
    ax.legend(fontsize="small", loc="lower right")


def tuned_steps(ax: Any, study: TunedStudy, grid: str) -> None:
    """One grid's updates to each target at its tuned rates, and the S(B) fitted to them."""
    fits = [f for f in study.fitted(grid) if f.fit is not None]
    for i, f in enumerate(fits):
        means = f.chosen.groupby("batch_size")[to("iterations", f.target)].mean()
        sizes = np.array(means.index, dtype=float)
        label = f"val {f.target:g}: B_crit ≈ {f.fit.b_crit:,.0f}"
        ax.plot(sizes, list(means), "o", color=f"C{i}", label=label)
        curve = np.geomspace(sizes[0], sizes[-1], 100)
        ax.plot(curve, scaling.curve(f.fit, curve)[1], "-", color=f"C{i}", linewidth=1)
    title = f"{tuning.LABELS[grid]}: updates to each validation target, S(B) fitted"
    ax.set(yscale="log", ylabel="updates", title=title)
    _batch_axis(ax, [b for f in fits for b in f.chosen["batch_size"]])
    ax.legend(fontsize="small")


def rate_landscape(ax: Any, study: TunedStudy, grid: str) -> None:
    runs = study.grid(grid)
    target = tuning.widest_target(study.fitted(grid), runs)
    if target is None:
        return
    steps = tuning.reaching(runs, target)["mean"]
    for size, color in shades(sorted(set(runs["batch_size"].tolist()))).items():
        mine = steps[steps.index.get_level_values("batch_size") == size]
        ax.plot(list(mine.index.get_level_values("rate")), list(mine), "o-", color=color,
                markersize=4, label=f"batch {size}")  # fmt: skip
    title = f"{tuning.LABELS[grid]}: updates to val {target:g} by rate (absent: not reached)"
    ax.set(xscale="log", yscale="log", xlabel="learning rate", ylabel="updates", title=title)
    ax.legend(fontsize="x-small")


def draw_tuned(study: TunedStudy, out: Path, caption: str) -> list[Path]:
    """The Pareto front, each grid's tuned steps, and each tuned grid's rate landscape, if any."""
    return [
        _figure(out / name, panels, caption, (1, len(panels)), (7 * len(panels), 4.8))
        for name, panels in {
            "pareto.png": [lambda ax: tuned_accuracy_vs_time(ax, study)],
            "tuned_steps.png": [lambda ax, g=g: tuned_steps(ax, study, g) for g in study.grids],
            "rates.png": [lambda ax, g=g: rate_landscape(ax, study, g) for g in study.tuned_grids],
        }.items()
        if panels
    ]
