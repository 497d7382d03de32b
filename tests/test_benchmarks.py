"""The training-speed benchmark (docs/benchmarks/train_speed.py), run as a user runs it on
the prepared slice."""

import importlib.util
import json
import subprocess
import sys

import pytest

from lenet_mnist import numerics
from tests.conftest import REPO, SLICE, write_params

SCRIPT = REPO / "docs" / "benchmarks" / "train_speed.py"
_spec = importlib.util.spec_from_file_location("train_speed", SCRIPT)
bench = sys.modules["train_speed"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def run_bench(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], cwd=REPO, capture_output=True, text=True
    )


pytestmark = pytest.mark.slow


def test_bench_prints_each_variant_against_the_hand_written_loop(prepared_slice, tmp_path):
    prepared, _ = prepared_slice
    p = write_params(tmp_path / "params.yaml", **SLICE)
    out = tmp_path / "bench.json"
    args = ["--prepared", prepared, "--params", p, "--repeats", "1", "--rounds", "2"]
    done = run_bench(*args, "--steps", "4", "--json", out)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert list(result["variants"]) == [v.label for v in bench.VARIANTS]
    assert result["steps_per_epoch"] == 90  # 4500 / 50: the slice's full epoch
    assert result["machine"]["family_model"].count("/") == 1 and result["machine"]["isa_flags"]
    variants = result["variants"]
    base = variants[bench.BASELINE.label]
    for label, v in variants.items():
        assert label in done.stdout  # the table's rows
        assert len(v["s_per_epoch"]) == 1 and v["s_per_epoch"][0] > 0
        expected = v["s_per_epoch"][0] / base["s_per_epoch"][0]
        # both rounded: the ratio to 3 decimals, the seconds it is checked from to 3 too
        assert v["vs_baseline_median"] == pytest.approx(expected, rel=2e-3, abs=6e-4)
    assert variants["pipeline, portable"]["threads"] == numerics.PORTABLE_THREADS
    assert variants["pipeline, portable"]["omp_wait_policy"] == "PASSIVE"  # as stages run
    assert variants[bench.BASELINE.label]["omp_wait_policy"] == "default"  # as a user's script
    assert "pipeline_vs_plain_same_step" in variants["pipeline, machine"]  # Lightning's cost
    assert "pipeline_vs_plain_same_step" not in base


def test_bench_refuses_a_single_round(prepared_slice, tmp_path):
    prepared, p = prepared_slice
    done = run_bench("--prepared", prepared, "--params", p, "--rounds", "1")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == "error: --rounds=1 is not allowed; use 2 or more"


def test_bench_steps_must_fill_whole_lightning_calls(prepared_slice, tmp_path):
    prepared, _ = prepared_slice
    p = write_params(tmp_path / "params.yaml", **{**SLICE, "trainer__batch_group": 4})
    done = run_bench("--prepared", prepared, "--params", p, "--steps", "6")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: --steps=6 is not allowed; use a multiple of trainer.batch_group (4)"
    )
