"""Replicates: the seeds of one grid point, and what they say together.

A sweep over `train.seed=1,2,3` trains every other point of its grid three times. One
run's number mixes the effect of the grid point with the luck of its seed; the mean of
the seeds and a 95% confidence interval from the t-distribution separate the two, and
tell which differences between points are larger than the seeds' own spread.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from scipy import stats

from lenet_mnist.study.rows import Row, point_of

LEVEL = 0.95

# Row attribute -> (heading, format): what is summarized over the seeds of a point.
QUANTITIES = {
    "test_acc": ("test acc", "{:.4f}"),
    "best_val_acc": ("best val acc", "{:.4f}"),
    "final_val_acc": ("final val acc", "{:.4f}"),
    "s_per_epoch": ("s/epoch", "{:.2f}"),
    "samples_per_s": ("samples/s", "{:,.0f}"),
    "wall_s": ("wall s", "{:.1f}"),
}
# Reach attribute -> (heading, format): how long each point took to reach a target.
TO_TARGET = {
    "iterations": ("iterations", "{:,.0f}"),
    "examples": ("examples", "{:,.0f}"),
    "seconds": ("seconds", "{:.1f}"),
}


@dataclass(frozen=True)
class Interval:
    """A mean and its 95% confidence interval; low and high are NaN for a lone value,
    whose spread nothing measures."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def defined(self) -> bool:
        return self.n >= 2

    @property
    def half(self) -> float:
        return (self.high - self.low) / 2

    def overlaps(self, other: Interval) -> bool:
        return self.low <= other.high and other.low <= self.high

    def text(self, fmt: str) -> str:
        """`0.9912 ± 0.0008`, or `0.9912 (1 seed)` where there is no interval."""
        if not self.defined:
            return f"{fmt.format(self.mean)} (1 seed)"
        return f"{fmt.format(self.mean)} ± {fmt.format(self.half)}"


def interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean ± t(n−1) · s/√n: the seeds are few, so the normal's 1.96 would be too narrow."""
    if not values:
        raise ValueError("an interval needs at least one value")
    n, mean = len(values), statistics.fmean(values)
    if n < 2:
        return Interval(mean, math.nan, math.nan, 1)
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * statistics.stdev(values) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def group(rows: list[Row]) -> dict[str, list[Row]]:
    """The runs of each grid point, in the order the rows come."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(point_of(row.overrides), []).append(row)
    return groups


@dataclass
class Point:
    """One grid point over its seeds."""

    name: str  # its overrides, the seed left out
    rows: list[Row] = field(repr=False)
    stats: dict[str, Interval]  # QUANTITIES key -> interval
    to_target: dict[float, dict[str, Interval]]  # target -> TO_TARGET key -> interval
    reached: dict[float, int]  # target -> how many of its seeds reached it
    verdict: str = ""  # against the best test accuracy

    @property
    def seeds(self) -> int:
        return len(self.rows)

    @property
    def first(self) -> Row:
        """A representative run: batch size, epochs and lr are the same for every seed."""
        return self.rows[0]


def summarize(rows: list[Row], targets: list[float]) -> list[Point]:
    """Every grid point with its intervals, and each one's verdict against the best."""
    points = [_point(name, runs, targets) for name, runs in group(rows).items()]
    for point, verdict in zip(points, verdicts([p.stats["test_acc"] for p in points]), strict=True):
        point.verdict = verdict
    return points


def _point(name: str, rows: list[Row], targets: list[float]) -> Point:
    def over(values: Callable[[Row], float]) -> Interval:
        return interval([values(r) for r in rows])

    stats_ = {k: over(lambda r, k=k: getattr(r, k)) for k in QUANTITIES}
    to_target, reached = {}, {}
    for t in targets:
        hits = [r.reached[t] for r in rows if t in r.reached]
        reached[t] = len(hits)
        if hits:
            to_target[t] = {k: interval([getattr(h, k) for h in hits]) for k in TO_TARGET}
    return Point(name, rows, stats_, to_target, reached)


def verdicts(accuracies: list[Interval]) -> list[str]:
    """`best` for the highest mean; the others are `not distinguishable` from it when the
    95% intervals overlap (a conservative test), else `lower`. Without two seeds on both
    sides there is no interval to compare, and the verdict says so."""
    if not accuracies:
        return []
    best = max(range(len(accuracies)), key=lambda i: accuracies[i].mean)
    top = accuracies[best]
    out = []
    for i, acc in enumerate(accuracies):
        if i == best:
            out.append("best")
        elif not (acc.defined and top.defined):
            out.append("unknown (1 seed)")
        else:
            out.append("not distinguishable" if acc.overlaps(top) else "lower")
    return out


def band(curves: list[list[float]]) -> list[Interval]:
    """Per epoch, the interval over the runs that got that far (early stopping ends some
    runs sooner, so later epochs may rest on fewer seeds)."""
    longest = max((len(c) for c in curves), default=0)
    return [interval([c[i] for c in curves if len(c) > i]) for i in range(longest)]
