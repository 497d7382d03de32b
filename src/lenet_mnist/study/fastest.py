"""The user's answer from a study's runs: the fastest way to a test accuracy over every
rate of the grids, with its interval over the seeds, and the accuracy–time Pareto front."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lenet_mnist.study.replicates import Interval, interval
from lenet_mnist.study.rows import Row
from lenet_mnist.study.tuning import Rate


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
    for rate in found:
        if len(rate.rows) < seeds:
            continue
        firsts = [_first_epoch(r, target) for r in rate.rows]
        if any(e is None for e in firsts):
            continue
        each = tuple(r.elapsed_s[e - 1] for r, e in zip(rate.rows, firsts, strict=True))
        out.append(Option(rate, max(firsts), rate.rows[0].epochs, interval(each), each))
    return sorted(out, key=lambda o: o.seconds.mean)


def _first_epoch(row: Row, target: float) -> int | None:
    if row.epoch_test_acc:
        return next((i + 1 for i, acc in enumerate(row.epoch_test_acc) if acc >= target), None)
    # Only the final test accuracy, of the kept weights: reached by the last epoch's end.
    return len(row.elapsed_s) if row.elapsed_s and row.test_acc >= target else None


@dataclass(frozen=True)
class Point:
    """One (seconds, test accuracy) a run passed through, for the Pareto front."""

    seconds: float
    acc: float
    row: Row
    epoch: int


def points(rows: Sequence[Row]) -> list[Point]:
    """Every epoch end with a test accuracy; a run that logged only its final one gives that."""
    out = []
    for row in rows:
        if row.epoch_test_acc:
            pairs = zip(row.elapsed_s, row.epoch_test_acc, strict=False)
            out += [Point(s, a, row, i + 1) for i, (s, a) in enumerate(pairs)]
        elif row.elapsed_s:
            out.append(Point(row.elapsed_s[-1], row.test_acc, row, len(row.elapsed_s)))
    return out


def pareto(found: Sequence[Point]) -> list[Point]:
    """The points no other point beats on both time and accuracy, fastest first."""
    front: list[Point] = []
    for p in sorted(found, key=lambda p: (p.seconds, -p.acc)):
        if not front or p.acc > front[-1].acc:
            front.append(p)
    return front
