"""The critical batch size fitted to S(B) = S_min + E_min/B, and B_simple where runs reached
the target: read at the nearest epoch end, or its terms averaged over training up to there."""

import math

import numpy as np
import pytest

from lenet_mnist.study import scaling

S_MIN, E_MIN = 400.0, 51_200.0  # B_crit = 128
SIZES = [16, 32, 64, 128, 256, 512, 1024]


def steps(sizes, noise: float = 0.0, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    exact = [S_MIN + E_MIN / b for b in sizes]
    return [s * (1 + noise * rng.standard_normal()) for s in exact]


def test_exact_data_give_s_min_e_min_and_b_crit():
    found = scaling.fit(SIZES, steps(SIZES))
    assert (found.s_min, found.e_min) == (pytest.approx(S_MIN), pytest.approx(E_MIN))
    assert found.b_crit == pytest.approx(128)
    assert found.low == pytest.approx(128) and found.high == pytest.approx(128)
    assert (found.runs, found.batch_sizes) == (7, tuple(SIZES))


def test_noisy_replicates_recover_b_crit_within_their_interval():
    sizes = SIZES * 3  # three seeds each
    found = scaling.fit(sizes, steps(sizes, noise=0.03, seed=1))
    assert found.b_crit == pytest.approx(128, rel=0.15)
    assert found.low < 128 < found.high and found.high / found.low < 2


def test_the_bootstrap_is_seeded():
    sizes = SIZES * 2
    noisy = steps(sizes, noise=0.05, seed=2)
    assert scaling.bootstrap(sizes, noisy) == scaling.bootstrap(sizes, noisy)


def test_one_batch_size_cannot_be_fitted():
    assert scaling.fit([64, 64, 64], [900.0, 920.0, 880.0]) is None
    with pytest.raises(ValueError, match="3 batch sizes for 2 step counts"):
        scaling.fit([64, 128, 256], [900.0, 500.0])


def test_b_crit_where_the_fit_shows_no_floor_or_no_gain():
    assert scaling.critical(400.0, 51_200.0) == 128
    assert scaling.critical(-5.0, 51_200.0) == math.inf  # steps fall as 1/B throughout
    assert scaling.critical(400.0, -10.0) == 0  # larger batches buy no fewer steps
    assert math.isnan(scaling.critical(-5.0, -10.0))


def test_perfect_scaling_leaves_the_interval_open_above():
    sizes = [32, 64, 128, 32, 64, 128]
    found = scaling.fit(sizes, [E_MIN / b * (1 + 0.01 * i) for i, b in enumerate(sizes)])
    assert found.high == math.inf or found.b_crit > 1e4


def test_the_curve_lies_on_the_fit():
    found = scaling.fit(SIZES, steps(SIZES))
    examples, s = scaling.curve(found, np.array([64.0, 256.0]))
    assert list(s) == pytest.approx([S_MIN + E_MIN / 64, S_MIN + E_MIN / 256])
    assert list(examples) == pytest.approx([64 * s[0], 256 * s[1]])
    # (S/S_min - 1)(E/E_min - 1) = 1, the paper's form of the same trade-off
    assert (s / S_MIN - 1) * (examples / E_MIN - 1) == pytest.approx([1, 1])


def test_b_simple_is_read_at_the_nearest_epoch_end():
    noise = [(100, 10.0), (200, 20.0), (300, 30.0)]
    assert scaling.simple_at(noise, 180) == 20.0
    assert scaling.simple_at(noise, 150) == 20.0  # a tie goes to the later epoch
    assert scaling.simple_at(noise, 10_000) == 30.0
    assert scaling.simple_at([], 150) is None
    found = scaling.median_simple([noise, noise, []], [100, 300, 200])
    assert found == (20.0, 2)
    assert scaling.median_simple([[]], [100]) is None


def terms(*epochs: tuple[float, float]) -> list[tuple[int, float, float]]:
    """(step, |G|², tr(Σ)) at the ends of epochs of 100 updates."""
    return [(100 * (i + 1), g, t) for i, (g, t) in enumerate(epochs)]


def test_the_averaged_noise_scale_is_the_ratio_of_the_terms_averaged_up_to_the_targets_epoch():
    logged = terms((4.0, 400.0), (1.0, 500.0), (0.01, 900.0))
    # reached at update 150, in epoch 2: epochs 1 and 2 count, the third does not
    assert scaling.averaged_simple(logged, 150) == pytest.approx(450.0 / 2.5)
    # the mean of the single ratios would be (100 + 500) / 2 = 300
    assert scaling.averaged_simple(logged, 350) == pytest.approx(600.0 / (5.01 / 3))


def test_no_averaged_noise_scale_without_terms_or_with_a_mean_gradient_not_positive():
    assert scaling.averaged_simple(terms((-1.0, 10.0), (0.5, 10.0)), 50) is None
    assert scaling.averaged_simple([], 150) is None


def test_the_ratio_interval_holds_the_ratio_of_exact_data():
    sizes = SIZES * 2
    simples = [256.0 * (1 + 0.1 * (i % 3)) for i in range(len(sizes))]
    low, high = scaling.bootstrap(sizes, steps(sizes, 0.02, 3), simples, 300)
    assert low < np.median(simples) / 128 < high
