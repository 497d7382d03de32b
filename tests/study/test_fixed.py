"""The fixed-rate study's analysis: grid points over their seeds, verdicts against the best,
and the comparison of B_simple with the fitted B_crit, worded from the numbers."""

import math

import pandas as pd
import pytest

from lenet_mnist.study import fixed
from lenet_mnist.study.fixed import Scaling
from lenet_mnist.study.runs import Interval, to
from lenet_mnist.study.scaling import Fit

from .frames import run, runs

FIT = Fit(s_min=400.0, e_min=51_200.0, low=100.0, high=160.0, runs=9, batch_sizes=(32, 128))


def test_runs_group_into_grid_points_by_their_overrides_without_the_seed():
    found = fixed.summarize(runs(run(64, 1), run(128, 1), run(64, 2)), [])
    assert list(found.index) == [
        "train.batch_size=64 optimizer.lr=0.001",
        "train.batch_size=128 optimizer.lr=0.001",
    ]
    assert list(found["seeds"]) == [2, 1]


def test_summarize_gives_each_point_its_seeds_and_targets():
    found = runs(
        *(run(64, s, test_acc=0.99 + s / 1000, reached={0.98: 100 if s < 3 else None, 0.99: None})
          for s in (1, 2, 3)),
        run(128, 1, test_acc=0.95),
    )  # fmt: skip
    small, big = (row for _, row in fixed.summarize(found, [0.98, 0.99]).iterrows())
    assert small["seeds"] == 3 and small["test_acc"].mean == pytest.approx(0.992)
    assert (small["reached_0.98"], small["reached_0.99"]) == (2, 0)
    assert small[to("examples", 0.98)].mean == 6400 and small[to("iterations", 0.99)].n == 0
    assert (small["vs_best"], big["vs_best"]) == ("best", "unknown (1 seed)")


def test_verdicts_compare_each_interval_with_the_best():
    best = Interval(0.990, 0.988, 0.992, 3)
    close = Interval(0.987, 0.985, 0.9885, 3)
    far = Interval(0.980, 0.978, 0.982, 3)
    lone = Interval(0.985, math.nan, math.nan, 1)
    assert fixed.verdicts([close, best, far, lone]) == [
        "not distinguishable", "best", "lower", "unknown (1 seed)",
    ]  # fmt: skip


def scaling(simple: float | None, fit: Fit | None = FIT) -> Scaling:
    return Scaling("", 0.98, pd.DataFrame(), fit, simple, 0 if simple is None else 9)


def test_the_prediction_gives_its_factor_both_ways():
    assert scaling(256.0).ratio == 2.0
    assert scaling(256.0).verdict() == "B_simple is 2x B_crit; outside B_crit's 95% interval"
    assert scaling(64.0).verdict() == "B_simple is 1/2 of B_crit; outside B_crit's 95% interval"
    assert scaling(140.8).verdict() == "B_simple is 1.1x B_crit; inside B_crit's 95% interval"


def test_no_comparison_without_both_numbers():
    assert math.isnan(scaling(None).ratio) and scaling(None).verdict() == "no comparison"
    no_floor = Fit(-5.0, 51_200.0, 1e4, math.inf, 9, (32, 128))  # B_crit infinite
    assert scaling(128.0, no_floor).verdict() == "no comparison"
    open_fit = Fit(400.0, 51_200.0, math.nan, math.nan, 2, (32, 128))
    assert scaling(128.0, open_fit).verdict() == "B_simple is 1x B_crit; B_crit has no interval"
