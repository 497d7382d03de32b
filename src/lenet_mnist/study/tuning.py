"""The tuned study's analysis: each batch size at the rate of its grid that reaches a target
in the fewest updates over all its seeds, and the critical batch size fitted at those rates
(docs/study.md, "The tuned study")."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import pandas as pd

from lenet_mnist.study import scaling
from lenet_mnist.study.runs import interval, targets_of, to, typed

RATE = ["optimizer", "batch_size", "rate"]  # rate: the effective lr, rounded to group by
RULES = {"linear": 1.0, "sqrt": 0.5}  # rule -> power of B / REFERENCE_BATCH scaling its rate
REFERENCE_BATCH = 64  # the default batch size, whose tuned rate the rules scale from
LABELS = {  # grid name -> what the report calls it
    "fixed": "Adam at lr 1e-3",
    "adam": "Adam tuned",
    "sgd": "SGD tuned",
    "search": "Optuna search",
}
FULL = ("fixed", "adam")  # the grids whose runs train every epoch: their test accuracy counts
TEST_TARGETS = (0.985, 0.99, 0.992)
CHANCE = 0.5  # a best validation accuracy below this: the run diverged (10 classes: 10%)


def with_rate(runs: pd.DataFrame) -> pd.DataFrame:
    return runs.assign(rate=runs["lr"].map(lambda lr: round(lr, 12)))


def _of(runs: pd.DataFrame, rates: pd.Index) -> pd.DataFrame:
    """The runs of the given rates, by batch size (stable: each rate's seeds in run order)."""
    picked = runs[runs.set_index(RATE).index.isin(rates)]
    return picked.sort_values("batch_size", kind="stable")


def reaching(runs: pd.DataFrame, target: float) -> pd.DataFrame:
    """Per rate whose seeds all reached the target (one that did not has no step count):
    the mean updates to it."""
    steps = runs.groupby(RATE)[to("iterations", target)].agg(["mean", "count", "size"])
    return steps[steps["count"] == steps["size"]]


def tuned(runs: pd.DataFrame, target: float) -> pd.DataFrame:
    """The runs at each batch size's tuned rate for the target (the first in RATE order on
    a tie); a batch size where no rate's seeds all reached it is left out."""
    steps = reaching(runs, target)["mean"]
    return _of(runs, pd.Index(steps.groupby(level="batch_size").idxmin()))


def most_accurate(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs at each batch size's rate with the best mean best validation accuracy:
    chosen on validation, so its test accuracy is not selected on the test set."""
    means = runs.groupby(RATE)["best_val_acc"].mean()
    return _of(runs, pd.Index(means.groupby(level="batch_size").idxmax()))


@dataclass(frozen=True)
class TunedFit:
    """S(B) at the tuned rates for one grid and target, and B_simple / B_crit."""

    grid: str  # the name of the grid it is fitted to
    target: float
    chosen: pd.DataFrame  # the runs at the tuned rates
    fit: scaling.Fit | None
    simple: float  # median over the chosen runs of the averaged B_simple (NaN: none)
    ratio: tuple[float, float, float]  # B_simple / B_crit: value, 95% low, 95% high


def tuned_fit(
    runs: pd.DataFrame, target: float, grid: str = "", draws: int = scaling.DRAWS
) -> TunedFit:
    chosen = tuned(runs, target)
    sizes, steps = chosen["batch_size"].tolist(), chosen[to("iterations", target)].tolist()
    fit = scaling.fit(sizes, steps)
    terms = chosen["noise_terms"]
    simples = [scaling.averaged_simple(t, s) for t, s in zip(terms, steps, strict=True)]
    if fit is None or None in simples:
        return TunedFit(grid, target, chosen, fit, math.nan, (math.nan,) * 3)
    simple = statistics.median(simples)
    ratio = fit.ratio(simple)
    low, high = scaling.bootstrap(sizes, steps, simples, draws)
    return TunedFit(grid, target, chosen, fit, simple, (ratio, low, high))


def widest_target(fits: list[TunedFit], runs: pd.DataFrame) -> float | None:
    """The highest target that every batch size of the grid reached at some rate."""
    sizes = set(runs["batch_size"])
    return max((f.target for f in fits if set(f.chosen["batch_size"]) == sizes), default=None)


def lands(tuned_rate: float, predicted: float) -> bool:
    """Within half a grid step (the rates are a factor 2 apart) of the tuned rate, both grid
    rates beside a prediction midway between them counting."""
    return abs(math.log(tuned_rate / predicted)) <= math.log(2) / 2 + 1e-9


def rules(runs: pd.DataFrame, target: float) -> pd.DataFrame:
    """Per tuned batch size: its tuned rate (`best`), what each rule predicts from the
    reference batch's (`{rule}`), and the grid rate nearest that (`{rule} nearest`)."""
    best = tuned(runs, target).groupby("batch_size")["rate"].first()
    if REFERENCE_BATCH not in best.index:
        return pd.DataFrame()
    grid = runs.groupby("batch_size")["rate"].unique()
    out = pd.DataFrame({"best": best})
    for rule, power in RULES.items():
        out[rule] = [
            best[REFERENCE_BATCH] * (int(b) / REFERENCE_BATCH) ** power for b in best.index
        ]
        out[f"{rule} nearest"] = [
            min(sorted(grid[b]), key=lambda lr, p=p: abs(math.log(lr / p)))
            for b, p in out[rule].items()
        ]
    return out


def options(runs: pd.DataFrame, target: float) -> pd.DataFrame:
    """Per rate whose two or more seeds all reached the test target at an epoch's end,
    fastest first (one seed's time has no interval): the latest seed's epoch, its seconds."""
    found = points(runs)
    first = found[found["acc"] >= target].groupby("run")[["epoch", "seconds"]].first()
    found = runs.assign(first=first["epoch"], seconds=first["seconds"])
    found = found.groupby(["grid_name", *RATE], observed=True)
    kept = found.filter(lambda g: len(g) >= 2 and g["first"].notna().all())
    out = kept.groupby(["grid_name", *RATE], observed=True).agg(
        grid=("grid", "first"), epochs=("first", "max"), planned=("epochs", "first"),
        time=("seconds", interval), fastest=("seconds", "min"), slowest=("seconds", "max"),
        test_acc=("test_acc", interval),
    )  # fmt: skip
    return out.reset_index().sort_values(
        "time", key=lambda s: s.map(lambda i: i.mean), kind="stable"
    )


def points(runs: pd.DataFrame) -> pd.DataFrame:
    """Every epoch end with a test accuracy (seconds, acc, epoch) beside its run's columns;
    a run that logged only its final test accuracy gives that, at its last epoch."""
    found = []
    for i, r in runs.iterrows():
        if r["epoch_test_acc"]:
            pairs = zip(r["elapsed_s"], r["epoch_test_acc"], strict=False)
            found += [(s, a, e + 1, i) for e, (s, a) in enumerate(pairs)]
        elif r["elapsed_s"]:
            found.append((r["elapsed_s"][-1], r["test_acc"], len(r["elapsed_s"]), i))
    return pd.DataFrame(found, columns=["seconds", "acc", "epoch", "run"]).join(runs, on="run")


def pareto(found: pd.DataFrame) -> pd.DataFrame:
    """The points no other point beats on both time and accuracy, fastest first."""
    ordered = found.assign(neg=-found["acc"]).sort_values(["seconds", "neg"], kind="stable")
    return ordered[ordered["acc"] > ordered["acc"].cummax().shift(fill_value=-math.inf)]


@dataclass
class TunedStudy:
    """Every run (the grids', then the search's) and the fits."""

    runs: pd.DataFrame  # with `grid_name` (its grid, or "search") and `grid` (its label)
    fits: list[TunedFit]  # per grid and validation target

    def grid(self, name: str) -> pd.DataFrame:
        return self.runs[self.runs["grid_name"] == name]

    @property
    def grids(self) -> list[str]:
        return [g for g in self.runs["grid_name"].cat.categories if g != "search"]

    @property
    def tuned_grids(self) -> list[str]:
        """The grids with more than one rate for some batch size."""
        rates = self.runs.groupby(["grid_name", "batch_size"], observed=True)["rate"].nunique()
        return [g for g in self.grids if (rates.get(g, pd.Series()) > 1).any()]

    @property
    def gridded(self) -> pd.DataFrame:
        """The grids' runs, the search's left out."""
        return self.runs[self.runs["grid_name"] != "search"]

    @property
    def learned(self) -> pd.DataFrame:
        """The runs that did not diverge to chance (best validation accuracy of 50% or more)."""
        return self.runs[self.runs["best_val_acc"] >= CHANCE]

    def fitted(self, grid: str) -> list[TunedFit]:
        return [f for f in self.fits if f.grid == grid]


def analyze(grids: dict[str, pd.DataFrame]) -> TunedStudy:
    """`grids` ends with the search's trials, named "search"."""
    names = pd.CategoricalDtype(list(grids))
    parts = [with_rate(runs).assign(grid_name=name) for name, runs in grids.items()]
    runs = pd.concat(parts).astype({"grid_name": names})
    ordered = runs[runs["grid_name"] != "search"].sort_values(["grid_name", *RATE], kind="stable")
    runs = typed(pd.concat([ordered, runs[runs["grid_name"] == "search"]]).reset_index(drop=True))
    # a run two grids share (one sweep under --set) keeps the first grid's label
    label = runs["grid_name"].map(lambda n: LABELS.get(n, n)).astype(str)
    runs["grid"] = runs["run_id"].map(label.groupby(runs["run_id"]).first())
    fits = [
        tuned_fit(runs[runs["grid_name"] == name], target, name)
        for name in names.categories.drop("search")
        for target in targets_of(runs[runs["grid_name"] == name])
    ]
    return TunedStudy(runs, fits)
