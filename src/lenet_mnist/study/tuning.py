"""The tuned study's analysis: every batch size at the learning rate that serves it best.

A study at one learning rate for every batch size handicaps the sizes that rate was not
chosen for. Here each batch size has a small grid of rates (lenet_mnist.study.tuned runs
it), and for each validation target the rate that reaches it in the fewest updates, over
all its seeds, is that batch size's tuned rate (McCandlish et al. 2018 and Shallue et al.
2018 measure this way). The critical batch size is then fitted at the tuned rates only,
and the gradient noise scale's prediction of it is averaged over training as the paper
does: the two terms of B_simple, |G|² and tr(Σ), are averaged separately over the epochs
up to the target and their ratio taken.

Everything here reads Rows (lenet_mnist.study.rows) and returns numbers; the tables and
figures are lenet_mnist.study.tuned's.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lenet_mnist.study import scaling
from lenet_mnist.study.replicates import Interval, interval
from lenet_mnist.study.rows import Row
from lenet_mnist.study.scaling import Fit

# The scaling rules checked against the tuned rates: the power of the batch size's ratio
# to the reference batch that multiplies the reference's tuned rate.
RULES = {"linear": 1.0, "sqrt": 0.5}
REFERENCE_BATCH = 64  # the default batch size, whose tuned rate the rules scale from
CHANCE = 0.5  # a best validation accuracy below this: the run diverged (10 classes: 10%)


@dataclass(frozen=True)
class Rate:
    """One optimizer, batch size and learning rate over its seeds."""

    optimizer: str
    batch_size: int
    lr: float
    rows: tuple[Row, ...]

    def reached(self, target: float) -> bool:
        """Whether every seed reached the target: one that did not has no step count."""
        return all(target in r.reached for r in self.rows)

    def steps(self, target: float) -> Interval:
        return interval([r.reached[target].iterations for r in self.rows])

    def examples(self, target: float) -> Interval:
        return interval([r.reached[target].examples for r in self.rows])

    def stat(self, name: str) -> Interval:
        return interval([getattr(r, name) for r in self.rows])

    @property
    def label(self) -> str:
        return f"{self.optimizer} B={self.batch_size} lr={self.lr:.3g}"


def rates(rows: Sequence[Row]) -> list[Rate]:
    """The runs grouped by optimizer, batch size and effective rate; the seeds replicate."""
    groups: dict[tuple[str, int, float], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.optimizer, row.batch_size, round(row.lr, 12)), []).append(row)
    return [Rate(o, b, lr, tuple(rs)) for (o, b, lr), rs in sorted(groups.items())]


def tuned(found: Sequence[Rate], target: float) -> dict[int, Rate]:
    """Per batch size, the rate whose seeds all reached the target in the fewest updates
    on average; a batch size with no such rate is left out."""
    best: dict[int, Rate] = {}
    for rate in found:
        if not rate.reached(target):
            continue
        held = best.get(rate.batch_size)
        if held is None or rate.steps(target).mean < held.steps(target).mean:
            best[rate.batch_size] = rate
    return dict(sorted(best.items()))


def averaged_simple(row: Row, iteration: int) -> float | None:
    """B_simple over training up to `iteration`: the mean of tr(Σ) over the mean of |G|²,
    over every epoch's end up to the first at or after it. Averaging each term first, as
    McCandlish et al. do, keeps the late epochs' near-zero |G|² estimates from blowing up
    single ratios. None if no term was logged or the mean |G|² is not positive."""
    ends = [step for step, _, _ in row.noise_terms if step >= iteration]
    last = min(ends, default=max((s for s, _, _ in row.noise_terms), default=-1))
    terms = [(g, t) for step, g, t in row.noise_terms if step <= last]
    if not terms:
        return None
    grad_sq = statistics.fmean(g for g, _ in terms)
    return statistics.fmean(t for _, t in terms) / grad_sq if grad_sq > 0 else None


@dataclass(frozen=True)
class TunedFit:
    """S(B) = S_min + E_min/B at the tuned rates for one grid and target, and the
    averaged noise scale's ratio to its B_crit, each with a bootstrap interval over runs."""

    grid: str  # the name of the grid it is fitted to
    target: float
    chosen: dict[int, Rate]
    fit: Fit | None
    simple: float  # median over the chosen runs of the averaged B_simple (NaN: none)
    ratio: tuple[float, float, float]  # B_simple / B_crit: value, 95% low, 95% high


def tuned_fit(
    found: Sequence[Rate],
    target: float,
    grid: str = "",
    draws: int = scaling.DRAWS,
    seed: int = scaling.SEED,
) -> TunedFit:
    chosen = tuned(found, target)
    runs = [r for rate in chosen.values() for r in rate.rows]
    sizes = [r.batch_size for r in runs]
    steps = [r.reached[target].iterations for r in runs]
    fit = scaling.fit(sizes, steps)
    simples = [averaged_simple(r, r.reached[target].iterations) for r in runs]
    if fit is None or any(s is None for s in simples):
        return TunedFit(grid, target, chosen, fit, math.nan, (math.nan,) * 3)
    simple = statistics.median(simples)
    ratio = simple / fit.b_crit if 0 < fit.b_crit < math.inf else math.nan
    low, high = ratio_interval(sizes, steps, simples, draws, seed)
    return TunedFit(grid, target, chosen, fit, simple, (ratio, low, high))


def ratio_interval(
    sizes: Sequence[int], steps: Sequence[float], simples: Sequence[float], draws: int, seed: int
) -> tuple[float, float]:
    """B_simple / B_crit's 95% percentile interval, resampling runs with replacement: each
    resample refits B_crit and takes the median B_simple of the same runs. Resamples with
    one batch size, or with B_crit not finite and positive, are skipped."""
    b, s, n = np.asarray(sizes, float), np.asarray(steps, float), np.asarray(simples, float)
    rng = np.random.default_rng(seed)
    found = []
    for _ in range(draws):
        idx = rng.integers(0, len(b), len(b))
        if len(set(b[idx])) < 2:
            continue
        crit = scaling.critical(*scaling.least_squares(b[idx], s[idx]))
        if 0 < crit < math.inf:
            found.append(float(np.median(n[idx])) / crit)
    if not found:
        return math.nan, math.nan
    tail = (1 - scaling.LEVEL) / 2
    low, high = np.quantile(found, [tail, 1 - tail], method="inverted_cdf")
    return float(low), float(high)


def widest_target(fits: Sequence[TunedFit], found: Sequence[Rate]) -> float | None:
    """The highest target that every batch size of the grid reached at some rate."""
    sizes = {r.batch_size for r in found}
    return max((f.target for f in fits if set(f.chosen) == sizes), default=None)


@dataclass(frozen=True)
class RuleCheck:
    """Where a scaling rule puts a batch size's rate, against the grid's best (the grid's
    rates are a factor 2 apart)."""

    batch_size: int
    best: float
    predicted: dict[str, float]  # rule -> its rate, scaled from the reference's best
    nearest: dict[str, float]  # rule -> the grid rate nearest to it (in log)

    def lands(self, rule: str) -> bool:
        """Within half a grid step (a factor √2) of the tuned rate, both neighbours of a
        prediction that falls midway between two grid rates counting."""
        return abs(math.log(self.best / self.predicted[rule])) <= math.log(2) / 2 + 1e-9


def rule_checks(found: Sequence[Rate], target: float) -> list[RuleCheck]:
    """For each tuned batch size, what the linear and square-root rules predict from the
    reference batch's tuned rate, and whether that lands on the tuned rate."""
    chosen = tuned(found, target)
    if REFERENCE_BATCH not in chosen:
        return []
    base = chosen[REFERENCE_BATCH].lr
    checks = []
    for size, rate in chosen.items():
        grid = sorted({r.lr for r in found if r.batch_size == size})
        predicted = {k: base * (size / REFERENCE_BATCH) ** p for k, p in RULES.items()}
        nearest = {
            k: min(grid, key=lambda lr, v=v: abs(math.log(lr / v))) for k, v in predicted.items()
        }
        checks.append(RuleCheck(size, rate.lr, predicted, nearest))
    return checks


def most_accurate(found: Sequence[Rate]) -> dict[int, Rate]:
    """Per batch size, the rate with the best mean best validation accuracy: chosen on
    validation, so its test accuracy is not selected on the test set."""
    best: dict[int, Rate] = {}
    for rate in found:
        held = best.get(rate.batch_size)
        if held is None or rate.stat("best_val_acc").mean > held.stat("best_val_acc").mean:
            best[rate.batch_size] = rate
    return dict(sorted(best.items()))


@dataclass
class TunedStudy:
    """The analysed tuned study: each grid's rates, the search's trials, the fits."""

    grids: dict[str, list[Rate]]  # grid name -> its rates
    labels: dict[str, str]  # grid name (and "search") -> what the report calls it
    full: tuple[str, ...]  # the grids whose runs train every epoch (their test accuracy counts)
    trials: list[Row]  # the hyperparameter search's runs
    fits: list[TunedFit]  # per grid and validation target
    test_targets: tuple[float, ...]

    @property
    def rates(self) -> list[Rate]:
        """Every grid's rates, in one list."""
        return [rate for rates in self.grids.values() for rate in rates]

    @property
    def rows(self) -> list[Row]:
        return [r for rate in self.rates for r in rate.rows] + self.trials

    @property
    def learned(self) -> list[Row]:
        """The runs that did not diverge to chance (best validation accuracy of 50% or more)."""
        return [r for r in self.rows if r.best_val_acc >= CHANCE]

    def grid_of(self, row: Row) -> str:
        """The label of the grid (or the search) a run belongs to."""
        return self._grid_labels.get(row.run_id, self.labels.get("search", "search"))

    @functools.cached_property
    def _grid_labels(self) -> dict[str, str]:
        """Run id -> its grid's label, made once for the tables' many lookups; a run two
        grids share (one sweep under --set) keeps the first grid's."""
        found: dict[str, str] = {}
        for name, rates in self.grids.items():
            for row in (r for rate in rates for r in rate.rows):
                found.setdefault(row.run_id, self.labels.get(name, name))
        return found

    def fitted(self, grid: str) -> list[TunedFit]:
        return [f for f in self.fits if f.grid == grid]


def analyze(
    grids: dict[str, list[Row]],
    labels: dict[str, str],
    full: Sequence[str],
    trials: list[Row],
    test_targets: Sequence[float],
) -> TunedStudy:
    found = {name: rates(rows) for name, rows in grids.items()}
    fits = [
        tuned_fit(rs, target, name)
        for name, rs in found.items()
        for target in sorted({t for rate in rs for r in rate.rows for t in r.targets})
    ]
    return TunedStudy(found, labels, tuple(full), trials, fits, tuple(test_targets))
