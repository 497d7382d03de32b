"""The training-speed benchmark (docs/benchmarks/train_speed.py), run as a user runs it on
the prepared slice."""

import importlib.util
import json
import re
import subprocess
import sys

import pytest

from lenet_mnist import numerics
from lenet_mnist.errors import PipelineError
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


# Each kind of worker once: the hand-written loop, the pipeline in each numeric mode, one
# process and two at once (the other rows vary only the environment these get).
PORTABLE, MACHINE_TWICE = 2, 7
ROWS = (1, PORTABLE, MACHINE_TWICE)  # 1: the baseline, which runs in any case


def test_bench_prints_the_chosen_variants_against_the_hand_written_loop(prepared_slice, tmp_path):
    prepared, _ = prepared_slice
    p = write_params(tmp_path / "params.yaml", **SLICE)
    out = tmp_path / "bench.json"
    args = ["--prepared", prepared, "--params", p, "--repeats", "1", "--rounds", "2"]
    args += ["--steps", "4", "--json", out, "--variants", f"{MACHINE_TWICE},{PORTABLE}"]
    done = run_bench(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    chosen = [bench.VARIANTS[i - 1] for i in ROWS]
    assert list(result["variants"]) == [v.label for v in chosen]
    assert [v.worker for v in chosen] == ["plain", "portable", "machine"]
    assert chosen[2].copies == 2
    assert result["steps_per_epoch"] == 90  # 4500 / 50: the slice's full epoch
    assert result["machine"]["family_model"].count("/") == 1 and result["machine"]["isa_flags"]
    variants = result["variants"]
    base = variants[bench.BASELINE.label]
    for number, (label, v) in zip(ROWS, variants.items(), strict=True):
        assert re.search(rf"│ +{number} │ {re.escape(label)}", done.stdout)  # the table's rows
        assert len(v["s_per_epoch"]) == 1 and v["s_per_epoch"][0] > 0
        expected = v["s_per_epoch"][0] / base["s_per_epoch"][0]
        # both rounded: the ratio to 3 decimals, the seconds it is checked from to 3 too
        assert v["vs_baseline_median"] == pytest.approx(expected, rel=2e-3, abs=6e-4)
    assert variants["pipeline, portable"]["threads"] == numerics.PORTABLE_THREADS
    assert variants["pipeline, portable"]["omp_wait_policy"] == "PASSIVE"  # as stages run
    assert variants[bench.BASELINE.label]["omp_wait_policy"] == "default"  # as a user's script
    assert "pipeline_vs_plain_same_step" in variants[chosen[2].label]  # Lightning's cost
    assert "pipeline_vs_plain_same_step" not in base


def test_bench_variants_are_rows_of_the_table_with_the_baseline_always():
    assert bench.variants("3") == (bench.BASELINE, bench.VARIANTS[2])
    assert bench.variants("7,1,2") == (bench.BASELINE, bench.VARIANTS[1], bench.VARIANTS[6])
    for value in ("0", "8", "2,x", ""):
        with pytest.raises(PipelineError) as refused:
            bench.variants(value)
        assert str(refused.value) == (
            f"--variants={value} is not allowed; use numbers from 1 to 7, comma-separated"
        )


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
