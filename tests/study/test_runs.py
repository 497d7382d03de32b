"""The t-interval over seeds, and a run's grid point."""

import math

import numpy as np
import pytest
from scipy import stats

from lenet_mnist.study.runs import interval, plural, point_of


def test_the_interval_is_scipys_t_interval():
    sample = [0.9871, 0.9902, 0.9885, 0.9913, 0.9879]
    low, high = stats.t.interval(
        0.95, len(sample) - 1, loc=np.mean(sample), scale=stats.sem(sample)
    )
    found = interval(sample)
    assert (found.mean, found.n) == (pytest.approx(np.mean(sample)), 5)
    assert (found.low, found.high) == (pytest.approx(low), pytest.approx(high))


def test_two_seeds_use_the_t_quantile_not_the_normals():
    """t(0.975, 1) = 12.71: with two seeds the interval is 6.5 times the normal one."""
    found = interval([0.0, 1.0])
    assert found.half == pytest.approx(12.7062047 * math.sqrt(0.5) / math.sqrt(2))
    assert found.text("{:.2f}") == "0.50 ± 6.35"


def test_the_interval_covers_the_true_mean_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    trials = [interval(list(rng.normal(3.0, 2.0, size=3))) for _ in range(2000)]
    coverage = np.mean([t.low <= 3.0 <= t.high for t in trials])
    assert 0.935 < coverage < 0.965  # the normal's 1.96 would cover about 82%


def test_one_seed_has_a_mean_and_no_interval():
    found = interval([0.99])
    assert found.mean == 0.99 and not found.defined and math.isnan(found.half)
    assert found.text("{:.4f}") == "0.9900 (1 seed)"


def test_no_value_is_a_dash_and_missing_values_are_left_out():
    assert interval([]).n == 0 and interval([]).text("{:.4f}") == "—"
    assert interval([1.0, float("nan"), 3.0]).mean == 2.0


def test_a_runs_grid_point_is_its_overrides_without_the_seed():
    assert point_of("train.batch_size=64 train.epochs=5 train.seed=2") == (
        "train.batch_size=64 train.epochs=5"
    )


def test_counts_read_as_english():
    assert [plural(n, "epoch") for n in (0, 1, 2)] == ["0 epochs", "1 epoch", "2 epochs"]
