"""The tuned study's analysis: the tuned rate per batch size and target, the fit at the
tuned rates, the scaling rules, and the fastest way to a target."""

import math

import pytest

from lenet_mnist.study import tuning

from .frames import run, runs

S_MIN, E_MIN = 200.0, 12_800.0  # B_crit = 64
SIZES = (16, 64, 256)


def grid(**extra) -> list[dict]:
    """Per batch size, rates 1e-3 × {1, 2, 4}: the middle is best by 10% and exact on S(B);
    at 256 the largest rate's second seed never reaches the target, though its first is fastest."""
    rows = []
    for size in SIZES:
        best = S_MIN + E_MIN / size
        for k, factor in ((1, 1.1), (2, 1.0), (4, 1.2)):
            for seed in (1, 2):
                steps = round(best * factor * (1 + 0.01 * seed))
                if size == 256 and k == 4:
                    steps = round(0.5 * best) if seed == 1 else None
                reached = {0.98: steps, 0.99: None}
                rows.append(run(size, seed, 1e-3 * k, reached, **extra))
    return rows


def frame(*records: dict):
    return tuning.with_rate(runs(*records).assign(grid_name="g", grid="G"))


def test_the_tuned_rate_is_the_fewest_updates_over_seeds_that_all_reached_the_target():
    chosen = tuning.tuned(frame(*grid()), 0.98)
    assert chosen.groupby("batch_size")["rate"].unique().map(list).to_dict() == {
        16: [2e-3],
        64: [2e-3],
        256: [2e-3],
    }
    assert len(chosen) == 6  # both seeds of each
    assert tuning.tuned(frame(*grid()), 0.99).empty  # no run reached it


def test_the_fit_at_the_tuned_rates_recovers_the_critical_batch_size():
    found = tuning.tuned_fit(frame(*grid()), 0.98, draws=200)
    assert found.fit.b_crit == pytest.approx(E_MIN / S_MIN, rel=0.02)
    assert found.fit.runs == 6 and found.fit.batch_sizes == SIZES
    assert math.isnan(found.simple)  # no run logged the noise terms


def test_the_ratio_to_b_crit_has_an_interval_around_it():
    rows = [r | {"noise_terms": [(100, 1.0, 128.0 * (1 + 0.1 * r["seed"]))]} for r in grid()]
    found = tuning.tuned_fit(frame(*rows), 0.98, draws=300)
    value, low, high = found.ratio
    assert found.simple == pytest.approx(128 * 1.15)
    assert value == pytest.approx(found.simple / found.fit.b_crit)
    assert low <= value <= high and high - low > 0


def test_a_rule_lands_when_its_prediction_is_within_half_a_grid_step_of_the_tuned_rate():
    checks = tuning.rules(frame(*grid()), 0.98)
    # batch 64's tuned rate is 2e-3; at 256 linear predicts 8e-3 (nearest 4e-3), sqrt 4e-3,
    # both a factor 2 or more from the tuned 2e-3
    assert checks.loc[256, ["linear", "sqrt"]].tolist() == pytest.approx([8e-3, 4e-3])
    assert not tuning.lands(2e-3, checks.loc[256, "linear"])
    assert not tuning.lands(2e-3, checks.loc[256, "sqrt"])
    assert checks.loc[256, "linear nearest"] == 4e-3
    assert tuning.lands(2e-3, checks.loc[64, "linear"]) and tuning.lands(
        2e-3, checks.loc[64, "sqrt"]
    )
    # at 16: linear predicts 5e-4 (a factor 4 low), sqrt 1e-3 (a factor 2 low)
    assert not tuning.lands(2e-3, checks.loc[16, "linear"])
    assert not tuning.lands(2e-3, checks.loc[16, "sqrt"])
    assert tuning.lands(2e-3, 2e-3 * 2**0.5)  # half a step either side counts


def test_the_most_accurate_rate_is_chosen_on_validation_not_test():
    found = frame(
        run(64, 1, 1e-3, best_val_acc=0.990, test_acc=0.995),
        run(64, 1, 2e-3, best_val_acc=0.992, test_acc=0.990),
    )
    assert tuning.most_accurate(found)["rate"].tolist() == [2e-3]


def curve(size: int, lr: float, seed: int, accs: list[float], seconds: float) -> dict:
    elapsed = [seconds * (i + 1) for i in range(len(accs))]
    return run(size, seed, lr, epoch_test_acc=accs, elapsed_s=elapsed)


def test_the_fastest_option_needs_every_seed_and_counts_to_the_latest_seeds_epoch():
    found = frame(
        curve(64, 1e-3, 1, [0.98, 0.99, 0.991], 10.0),
        curve(64, 1e-3, 2, [0.99, 0.99, 0.992], 10.0),
        curve(512, 8e-3, 1, [0.99, 0.99, 0.99], 3.0),
        curve(512, 8e-3, 2, [0.97, 0.98, 0.985], 3.0),  # never reaches 0.99
        curve(256, 4e-3, 1, [0.97, 0.991, 0.991], 5.0),
        curve(256, 4e-3, 2, [0.97, 0.98, 0.991], 5.0),
        curve(512, 1e-2, 1, [0.99], 1.0),  # a lone seed
    )
    options = tuning.options(found, 0.99)
    assert list(zip(options["batch_size"], options["epochs"], strict=True)) == [(256, 3), (64, 2)]
    assert options["time"].iloc[0].mean == pytest.approx(12.5)  # epochs 2 and 3: 10 s, 15 s


def test_the_pareto_front_keeps_only_points_that_nothing_beats_on_both():
    found = frame(curve(64, 1e-3, 1, [0.95, 0.99], 10.0), curve(512, 8e-3, 1, [0.96, 0.97], 3.0))
    front = tuning.pareto(tuning.points(found))
    assert list(zip(front["seconds"], front["acc"], strict=True)) == [
        (3.0, 0.96),
        (6.0, 0.97),
        (20.0, 0.99),
    ]


def test_a_run_with_only_its_final_test_accuracy_is_one_point_at_its_last_epoch():
    final_only = frame(run(32, 1, test_acc=0.993, elapsed_s=[4.0, 8.0]))
    found = tuning.points(final_only)
    assert list(zip(found["seconds"], found["acc"], found["epoch"], strict=True)) == [
        (8.0, 0.993, 2)
    ]
