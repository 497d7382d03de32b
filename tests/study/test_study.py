"""The study's comparison of B_simple with the fitted B_crit, worded from the numbers."""

import math

from lenet_mnist.study.analysis import Scaling
from lenet_mnist.study.scaling import Fit

FIT = Fit(s_min=400.0, e_min=51_200.0, low=100.0, high=160.0, runs=9, batch_sizes=(32, 128))


def scaling(simple: float | None, fit: Fit | None = FIT) -> Scaling:
    return Scaling("", 0.98, [], fit, simple, 0 if simple is None else 9)


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
