"""What a sweep's runs say together: grid points over their seeds (lenet_mnist.study.replicates),
the critical batch size per target (lenet_mnist.study.scaling) beside the noise scale's
prediction of it, and a note for every part the runs hold no data for.

Runs logged before a measurement existed lack it; the report then leaves that part out
and says why in one line, rather than failing on an old sweep.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lenet_mnist.study import replicates, scaling
from lenet_mnist.study.replicates import Point
from lenet_mnist.study.rows import Row, plural
from lenet_mnist.study.scaling import Fit

BATCH = "train.batch_size="


@dataclass
class Scaling:
    """The fit of one target over the runs of one setting (all but batch size and seed)."""

    setting: str  # the setting's overrides; "" when the sweep has one
    target: float
    runs: list[Row] = field(repr=False)  # the runs that reached the target
    fit: Fit | None
    simple: float | None  # median B_simple where the runs reached the target
    simple_runs: int  # how many runs had a noise scale there

    @property
    def ratio(self) -> float:
        """B_simple / B_crit, NaN where either is missing or B_crit is not finite."""
        b = self.fit.b_crit if self.fit else math.nan
        if self.simple is None or not (0 < b < math.inf):
            return math.nan
        return self.simple / b

    def verdict(self) -> str:
        """The prediction in words, from the numbers alone."""
        if math.isnan(self.ratio):
            return "no comparison"
        if self.ratio >= 1:
            size = f"B_simple is {self.ratio:.3g}x B_crit"
        else:
            size = f"B_simple is 1/{1 / self.ratio:.3g} of B_crit"
        if math.isnan(self.fit.low):
            return f"{size}; B_crit has no interval"
        inside = self.fit.low <= self.simple <= self.fit.high
        return f"{size}; {'inside' if inside else 'outside'} B_crit's 95% interval"


@dataclass
class Study:
    rows: list[Row]
    points: list[Point]
    targets: list[float]
    scaling: list[Scaling]
    notes: list[str]  # one line per part left out, or per caveat

    @property
    def replicated(self) -> bool:
        return any(p.seeds > 1 for p in self.points)

    @property
    def curves(self) -> dict[str, bool]:
        """Which per-epoch series any run logged."""
        return {
            "train_acc": any(r.train_acc for r in self.rows),
            "epoch_test_acc": any(r.epoch_test_acc for r in self.rows),
            "noise": any(r.noise for r in self.rows),
        }


def analyze(rows: list[Row]) -> Study:
    targets = sorted({t for r in rows for t in r.targets})
    points = replicates.summarize(rows, targets)
    fits = [_scaling(s, t, runs) for s, runs in settings(rows).items() for t in targets]
    study = Study(rows, points, targets, fits, [])
    study.notes = notes(study)
    return study


def settings(rows: list[Row]) -> dict[str, list[Row]]:
    """The runs of each setting: a fit varies the batch size with all else held."""

    def setting(row: Row) -> str:
        return " ".join(o for o in row.point.split() if not o.startswith(BATCH))

    shared = set.intersection(*(set(setting(r).split()) for r in rows)) if rows else set()
    out: dict[str, list[Row]] = {}
    for row in rows:
        own = " ".join(o for o in setting(row).split() if o not in shared)
        out.setdefault(own, []).append(row)
    return out


def _scaling(setting: str, target: float, rows: list[Row]) -> Scaling:
    runs = [r for r in rows if target in r.reached]
    hits = [r.reached[target] for r in runs]
    found = scaling.fit([h.batch_size for h in hits], [h.iterations for h in hits])
    simple = scaling.median_simple([r.noise for r in runs], [h.iterations for h in hits])
    value, count = simple if simple else (None, 0)
    return Scaling(setting, target, runs, found, value, count)


def notes(study: Study) -> list[str]:
    """One line for each part of the report the runs cannot fill, and for each caveat."""
    out = []
    if not study.replicated:
        out.append(
            "Every grid point has 1 seed: no confidence intervals (sweep train.seed=1,2,3 "
            "for replicates)."
        )
    if not study.targets:
        out.append(
            "No run logged train.targets: steps and examples to target and the critical "
            "batch size are left out."
        )
    curves = study.curves
    if not curves["train_acc"]:
        out.append("No run logged train_acc: the train−validation gap is left out.")
    if not curves["epoch_test_acc"]:
        out.append("No run logged epoch_test_acc: test accuracy over epochs is left out.")
    if study.targets and not curves["noise"]:
        out.append("No run logged noise_scale: the B_simple prediction is left out.")
    for s in study.scaling:
        if s.fit is None:
            sizes = len({r.batch_size for r in s.runs})
            out.append(
                f"Target {s.target:g}{f' ({s.setting})' if s.setting else ''}: reached at "
                f"{plural(sizes, 'batch size')}; the fit needs ≥2, so it is skipped."
            )
    stopped = sum(r.stopped_epoch is not None for r in study.rows)
    if stopped:
        out.append(f"{plural(stopped, 'run')} stopped early: later epochs rest on fewer seeds.")
    return out
