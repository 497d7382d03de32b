"""Seeds as replicates: the t-interval, the grouping of runs into grid points, verdicts."""

import math

import numpy as np
import pytest
from scipy import stats

from lenet_mnist.study import replicates
from lenet_mnist.study.replicates import Interval, interval
from lenet_mnist.study.report import Reach, Row


def row(batch_size: int, seed: int, test_acc: float, reached: dict | None = None) -> Row:
    """A run as the report reads it, with only what the replicate statistics look at."""
    return Row(
        batch_size=batch_size, epochs=2, lr=1e-3, lr_scaling="none", iterations_per_epoch=10,
        total_updates=20, s_per_epoch=1.0 + seed, samples_per_s=100.0, best_val_acc=test_acc,
        final_val_acc=test_acc, test_acc=test_acc, wall_s=3.0, run_id=f"r{batch_size}-{seed}",
        overrides=f"train.batch_size={batch_size} train.epochs=2 train.seed={seed}",
        machine="m", seed=seed, reached=reached or {},
    )  # fmt: skip


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
    with pytest.raises(ValueError, match="at least one value"):
        interval([])


def test_runs_group_by_their_overrides_without_the_seed():
    assert replicates.point_of("train.batch_size=64 train.epochs=5 train.seed=2") == (
        "train.batch_size=64 train.epochs=5"
    )
    rows = [row(64, 1, 0.99), row(128, 1, 0.98), row(64, 2, 0.991)]
    groups = replicates.group(rows)
    assert list(groups) == [
        "train.batch_size=64 train.epochs=2",
        "train.batch_size=128 train.epochs=2",
    ]
    assert [r.seed for r in groups["train.batch_size=64 train.epochs=2"]] == [1, 2]


def test_verdicts_compare_each_interval_with_the_best():
    best = Interval(0.990, 0.988, 0.992, 3)
    close = Interval(0.987, 0.985, 0.9885, 3)
    far = Interval(0.980, 0.978, 0.982, 3)
    lone = Interval(0.985, math.nan, math.nan, 1)
    assert replicates.verdicts([close, best, far, lone]) == [
        "not distinguishable", "best", "lower", "unknown (1 seed)",
    ]  # fmt: skip


def test_summarize_gives_each_point_its_seeds_and_targets():
    hit = Reach(iterations=100, seconds=2.0, epochs=1, batch_size=64)
    rows = [row(64, s, 0.99 + s / 1000, {0.98: hit} if s < 3 else {}) for s in (1, 2, 3)]
    rows += [row(128, 1, 0.95)]
    small, big = replicates.summarize(rows, [0.98, 0.99])
    assert small.seeds == 3 and small.stats["test_acc"].mean == pytest.approx(0.992)
    assert small.reached == {0.98: 2, 0.99: 0} and 0.99 not in small.to_target
    assert small.to_target[0.98]["examples"].mean == 6400
    assert (small.verdict, big.verdict) == ("best", "unknown (1 seed)")


def test_bands_follow_runs_that_stopped_early():
    band = replicates.band([[1.0, 2.0, 3.0], [3.0, 4.0], [2.0, 3.0]])
    assert [b.n for b in band] == [3, 3, 1]
    assert [b.mean for b in band] == [2.0, 3.0, 3.0]
