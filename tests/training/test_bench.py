"""The side-by-side benchmark, run as a user runs it on the prepared slice."""

import json
import statistics

import pytest

from tests.conftest import REPO, SLICE, run_module, write_params

pytestmark = pytest.mark.slow


def test_bench_prints_the_ratio_table_and_json(prepared_slice, tmp_path):
    prepared, _ = prepared_slice
    p = write_params(tmp_path / "params.yaml", **{**SLICE, "trainer__compile": False})
    out = tmp_path / "bench.json"
    done = run_module(
        "training.bench",
        "--prepared",
        prepared,
        "--params",
        p,
        "--rounds",
        "3",
        "--steps",
        "4",
        "--json",
        out,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for label in (
        "pipeline (Lightning)",
        "plain PyTorch, eager",
        "× plain eager",
        "pipeline / plain loop with the same step",
    ):
        assert label in done.stdout
    result = json.loads(out.read_text())
    assert result["rounds_timed"] == 2 and result["steps_per_round"] == 4
    assert result["steps_per_epoch"] == 90  # 4500 / 50: the slice's full epoch
    assert set(result["variants"]) == {
        "pipeline (Lightning)",
        "plain PyTorch, eager",
        "plain PyTorch, same step",
    }
    assert all(len(t) == 3 for t in result["round_times_s"].values())
    assert 0 < result["peak_rss_gib"] < 8
    times = result["round_times_s"]  # round 0 warms up; the ratio pairs the timed rounds
    pairs = zip(times["pipeline (Lightning)"][1:], times["plain PyTorch, eager"][1:], strict=True)
    expected = statistics.median(a / b for a, b in pairs)
    assert result["pipeline_vs_plain_eager"] == pytest.approx(expected, abs=2e-3)
    assert "targets" not in result  # the bench measures; docs/ say what the ratios mean


def test_bench_refuses_a_single_round(prepared_slice, tmp_path):
    prepared, p = prepared_slice
    done = run_module(
        "training.bench", "--prepared", prepared, "--params", p, "--rounds", "1", cwd=REPO
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == "error: --rounds=1 is not allowed; use 2 or more"


def test_bench_steps_must_fill_whole_lightning_calls(prepared_slice, tmp_path):
    prepared, _ = prepared_slice
    p = write_params(tmp_path / "params.yaml", **{**SLICE, "trainer__batch_group": 4})
    done = run_module(
        "training.bench", "--prepared", prepared, "--params", p, "--steps", "6", cwd=REPO
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: --steps=6 is not allowed; use a multiple of trainer.batch_group (4)"
    )
