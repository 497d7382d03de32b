"""The fixed-rate study's analysis: grid points over their seeds against the best one, and
the critical batch size per setting and target beside B_simple; a part the runs hold no data
for becomes a note, so an older sweep still reports."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from lenet_mnist.study import scaling
from lenet_mnist.study.runs import BATCH, Interval, interval, plural, targets_of, to

# Run column -> (heading, format): what is summarized over the seeds of a point.
QUANTITIES = {
    "test_acc": ("test acc", "{:.4f}"),
    "best_val_acc": ("best val acc", "{:.4f}"),
    "final_val_acc": ("final val acc", "{:.4f}"),
    "s_per_epoch": ("s/epoch", "{:.2f}"),
    "samples_per_s": ("samples/s", "{:,.0f}"),
    "wall_s": ("wall s", "{:.1f}"),
}
TO_TARGET = {"iterations": "{:,.0f}", "examples": "{:,.0f}", "seconds": "{:.1f}"}
SETTINGS = ["batch_size", "epochs", "lr", "lr_scaling", "iterations_per_epoch", "total_updates"]


@dataclass
class Scaling:
    """The fit of one target over the runs of one setting (all but batch size and seed)."""

    setting: str  # the setting's overrides; "" when the sweep has one
    target: float
    runs: pd.DataFrame  # the runs that reached the target
    fit: scaling.Fit | None
    simple: float | None  # median B_simple where the runs reached the target
    simple_runs: int  # how many runs had a noise scale there

    @property
    def ratio(self) -> float:
        return self.fit.ratio(self.simple) if self.fit else math.nan

    def verdict(self) -> str:
        """The prediction in words, from the numbers alone."""
        ratio = self.ratio
        if math.isnan(ratio):
            return "no comparison"
        size = f"{ratio:.3g}x B_crit" if ratio >= 1 else f"1/{1 / ratio:.3g} of B_crit"
        if math.isnan(self.fit.low):
            return f"B_simple is {size}; B_crit has no interval"
        inside = self.fit.low <= self.simple <= self.fit.high
        return f"B_simple is {size}; {'inside' if inside else 'outside'} B_crit's 95% interval"


@dataclass
class Study:
    runs: pd.DataFrame
    points: pd.DataFrame  # per grid point: SETTINGS, seeds, an Interval per quantity, vs_best
    targets: list[float]
    scaling: list[Scaling]

    def logged(self, series: str) -> bool:
        """Whether any run logged this per-epoch series."""
        return bool(self.runs[series].map(len).any())

    @property
    def notes(self) -> list[str]:
        """One line for each part of the report the runs cannot fill, and for each caveat."""
        out = []
        if not (self.points["seeds"] > 1).any():
            out.append(
                "Every grid point has 1 seed: no confidence intervals (sweep train.seed=1,2,3 "
                "for replicates)."
            )
        if not self.targets:
            out.append(
                "No run logged train.targets: steps and examples to target and the critical "
                "batch size are left out."
            )
        if not self.logged("train_acc"):
            out.append("No run logged train_acc: the train−validation gap is left out.")
        if not self.logged("epoch_test_acc"):
            out.append("No run logged epoch_test_acc: test accuracy over epochs is left out.")
        if self.targets and not self.logged("noise"):
            out.append("No run logged noise_scale: the B_simple prediction is left out.")
        for s in self.scaling:
            if s.fit is None:
                sizes = s.runs["batch_size"].nunique()
                out.append(
                    f"Target {s.target:g}{f' ({s.setting})' if s.setting else ''}: reached at "
                    f"{plural(sizes, 'batch size')}; the fit needs ≥2, so it is skipped."
                )
        stopped = int(self.runs["stopped_epoch"].notna().sum())
        if stopped:
            out.append(f"{plural(stopped, 'run')} stopped early: later epochs rest on fewer seeds.")
        return out


def analyze(runs: pd.DataFrame) -> Study:
    targets = targets_of(runs)
    fits = [
        _scaling(setting, t, group)
        for setting, group in runs.groupby(settings(runs), sort=False)
        for t in targets
    ]
    return Study(runs, summarize(runs, targets), targets, fits)


def summarize(runs: pd.DataFrame, targets: list[float]) -> pd.DataFrame:
    """Every grid point (runs that differ only in their seed) with its intervals."""
    points = runs.groupby("point", sort=False)
    out = points[SETTINGS].first().assign(seeds=points.size())
    for column in [*QUANTITIES, *(to(k, t) for t in targets for k in TO_TARGET)]:
        out[column] = points[column].agg(interval)
    for t in targets:
        out[f"reached_{t:g}"] = points[to("iterations", t)].count()
    out["vs_best"] = verdicts(list(out["test_acc"]))
    return out


def verdicts(accuracies: list[Interval]) -> list[str]:
    """Each test accuracy against the best: overlapping 95% intervals, a conservative test."""
    if not accuracies:
        return []
    top = max(accuracies, key=lambda a: a.mean)
    out = []
    for acc in accuracies:
        if acc is top:
            out.append("best")
        elif not (acc.defined and top.defined):
            out.append("unknown (1 seed)")
        else:
            overlap = acc.low <= top.high and top.low <= acc.high
            out.append("not distinguishable" if overlap else "lower")
    return out


def settings(runs: pd.DataFrame, seed: bool = False) -> pd.Series:
    """Each run's setting: its overrides less the batch size (a fit varies it with all else
    held), the seed unless `seed`, and those every run shares."""
    jobs = runs["job" if seed else "point"]
    own = jobs.map(lambda p: [o for o in p.split() if not o.startswith(BATCH)])
    shared = set.intersection(*map(set, own)) if len(runs) else set()
    return own.map(lambda o: " ".join(x for x in o if x not in shared))


def _scaling(setting: str, target: float, runs: pd.DataFrame) -> Scaling:
    hit = runs[runs[to("iterations", target)].notna()]
    steps = hit[to("iterations", target)].tolist()
    found = scaling.fit(hit["batch_size"].tolist(), steps)
    simple = scaling.median_simple(list(hit["noise"]), steps)
    value, count = simple if simple else (None, 0)
    return Scaling(setting, target, hit, found, value, count)
