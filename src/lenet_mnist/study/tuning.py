"""The tuned study's analysis: every batch size at the learning rate that serves it best.

A study at one learning rate for every batch size handicaps the sizes that rate was not
chosen for. Here each batch size has a small grid of rates, and for each validation target
the rate that reaches it in the fewest updates, over all its seeds, is that batch size's
tuned rate (McCandlish et al. 2018 and Shallue et al. 2018 measure this way). The critical
batch size is then fitted at the tuned rates only, against the noise scale averaged over
training as the paper does. Last, the user's answer: the fastest way to a test accuracy
over every rate, and the accuracy–time Pareto front.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from lenet_mnist.study import scaling
from lenet_mnist.study.runs import Interval, interval, targets_of, to

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
    runs: pd.DataFrame = field(repr=False, compare=False)

    def reached(self, target: float) -> bool:
        """Whether every seed reached the target: one that did not has no step count."""
        return bool(self.runs[to("iterations", target)].notna().all())

    def steps(self, target: float) -> Interval:
        return interval(self.runs[to("iterations", target)])

    def examples(self, target: float) -> Interval:
        return interval(self.runs[to("examples", target)])

    def stat(self, name: str) -> Interval:
        return interval(self.runs[name])


def rates(runs: pd.DataFrame) -> list[Rate]:
    """The runs grouped by optimizer, batch size and effective rate; the seeds replicate."""
    key = runs.assign(rate=runs["lr"].map(lambda lr: round(lr, 12)))
    groups = key.groupby(["optimizer", "batch_size", "rate"])
    return [Rate(o, int(b), lr, g.drop(columns="rate")) for (o, b, lr), g in groups]


def tuned(found: Sequence[Rate], target: float) -> dict[int, Rate]:
    """Per batch size, the rate whose seeds all reached the target in the fewest updates
    on average (the first such in the rates' order on a tie); a batch size with none is
    left out."""
    best: dict[int, Rate] = {}
    for rate in (r for r in found if r.reached(target)):
        held = best.get(rate.batch_size)
        if held is None or rate.steps(target).mean < held.steps(target).mean:
            best[rate.batch_size] = rate
    return dict(sorted(best.items()))


@dataclass(frozen=True)
class TunedFit:
    """S(B) = S_min + E_min/B at the tuned rates for one grid and target, and the
    averaged noise scale's ratio to its B_crit, each with a bootstrap interval over runs."""

    grid: str  # the name of the grid it is fitted to
    target: float
    chosen: dict[int, Rate]
    fit: scaling.Fit | None
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
    runs = pd.concat([rate.runs for rate in chosen.values()]) if chosen else None
    sizes = [] if runs is None else runs["batch_size"].tolist()
    steps = [] if runs is None else runs[to("iterations", target)].tolist()
    fit = scaling.fit(sizes, steps)
    terms = [] if runs is None else runs["noise_terms"]
    simples = [scaling.averaged_simple(t, s) for t, s in zip(terms, steps, strict=True)]
    if fit is None or any(s is None for s in simples):
        return TunedFit(grid, target, chosen, fit, math.nan, (math.nan,) * 3)
    simple = statistics.median(simples)
    ratio = simple / fit.b_crit if 0 < fit.b_crit < math.inf else math.nan
    low, high = scaling.ratio_interval(sizes, steps, simples, draws, seed)
    return TunedFit(grid, target, chosen, fit, simple, (ratio, low, high))


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


@dataclass(frozen=True)
class Option:
    """A way to reach a test accuracy: a rate of the grid, stopped at the first epoch end
    where each seed's test accuracy reached the target (in a schedule of `planned` epochs)."""

    rate: Rate
    epochs: int  # the latest seed's first epoch at or above the target
    planned: int  # train.epochs, which the schedule anneals over
    seconds: Interval  # training seconds (validation included) to that epoch's end
    each: tuple[float, ...]  # the seconds of each seed


def options(found: Sequence[Rate], target: float, seeds: int = 2) -> list[Option]:
    """Every rate with at least `seeds` seeds that all reached the test target at some
    epoch's end, fastest first: a time from one seed has no interval to be judged by."""
    out = []
    for rate in (r for r in found if len(r.runs) >= seeds):
        firsts = [_first_epoch(r, target) for r in rate.runs.itertuples()]
        if None in firsts:
            continue
        each = tuple(
            r.elapsed_s[e - 1] for r, e in zip(rate.runs.itertuples(), firsts, strict=True)
        )
        planned = int(rate.runs["epochs"].iloc[0])
        out.append(Option(rate, max(firsts), planned, interval(each), each))
    return sorted(out, key=lambda o: o.seconds.mean)


def _first_epoch(run: tuple, target: float) -> int | None:
    if run.epoch_test_acc:
        return next((i + 1 for i, acc in enumerate(run.epoch_test_acc) if acc >= target), None)
    # Only the final test accuracy, of the kept weights: reached by the last epoch's end.
    return len(run.elapsed_s) if run.elapsed_s and run.test_acc >= target else None


def points(runs: pd.DataFrame) -> pd.DataFrame:
    """Every epoch end with a test accuracy (seconds, acc, epoch) beside its run's columns;
    a run that logged only its final test accuracy gives that, at its last epoch."""
    found = []
    for r in runs.itertuples():
        if r.epoch_test_acc:
            pairs = zip(r.elapsed_s, r.epoch_test_acc, strict=False)
            found += [(s, a, i + 1, r.Index) for i, (s, a) in enumerate(pairs)]
        elif r.elapsed_s:
            found.append((r.elapsed_s[-1], r.test_acc, len(r.elapsed_s), r.Index))
    frame = pd.DataFrame(found, columns=["seconds", "acc", "epoch", "run"])
    return frame.join(runs, on="run")


def pareto(found: pd.DataFrame) -> pd.DataFrame:
    """The points no other point beats on both time and accuracy, fastest first."""
    ordered = found.assign(neg=-found["acc"]).sort_values(["seconds", "neg"], kind="stable")
    best_before = ordered["acc"].cummax().shift(fill_value=-math.inf)
    return ordered[ordered["acc"] > best_before]


@dataclass
class TunedStudy:
    """The analysed tuned study: each grid's rates, the search's trials, the fits."""

    grids: dict[str, list[Rate]]  # grid name -> its rates
    labels: dict[str, str]  # grid name (and "search") -> what the report calls it
    full: tuple[str, ...]  # the grids whose runs train every epoch (their test accuracy counts)
    runs: pd.DataFrame  # every grid's runs in their rates' order, then the trials; a `grid`
    fits: list[TunedFit]  # per grid and validation target
    test_targets: tuple[float, ...]

    @property
    def rates(self) -> list[Rate]:
        """Every grid's rates, in one list."""
        return [rate for rates in self.grids.values() for rate in rates]

    @property
    def trials(self) -> pd.DataFrame:
        return self.runs[self.runs["grid"] == self.labels.get("search", "search")]

    @property
    def learned(self) -> pd.DataFrame:
        """The runs that did not diverge to chance (best validation accuracy of 50% or more)."""
        return self.runs[self.runs["best_val_acc"] >= CHANCE]

    def fitted(self, grid: str) -> list[TunedFit]:
        return [f for f in self.fits if f.grid == grid]


def analyze(
    grids: dict[str, pd.DataFrame],
    labels: dict[str, str],
    full: Sequence[str],
    trials: pd.DataFrame,
    test_targets: Sequence[float],
) -> TunedStudy:
    search = trials.assign(grid=labels.get("search", "search"))
    labelled = {name: runs.assign(grid=labels.get(name, name)) for name, runs in grids.items()}
    # a run two grids share (one sweep under --set) keeps the first grid's label
    first = pd.concat([*labelled.values(), search]).drop_duplicates("run_id")
    label = first.set_index("run_id")["grid"]
    found = {
        name: rates(runs.assign(grid=runs["run_id"].map(label))) for name, runs in labelled.items()
    }
    fits = [
        tuned_fit(rs, target, name)
        for name, rs in found.items()
        for target in (targets_of(pd.concat([r.runs for r in rs])) if rs else [])
    ]
    parts = [r.runs for rs in found.values() for r in rs]
    runs = pd.concat([*parts, search]).reset_index(drop=True)
    return TunedStudy(found, labels, tuple(full), runs, fits, tuple(test_targets))
