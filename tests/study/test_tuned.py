"""The tuned study's one command, end to end on the slice: its three sweeps run as Hydra
multiruns into one MLflow store, and the report is rebuilt from that store alone."""

import csv
import re

import pytest

from lenet_mnist.errors import PipelineError
from lenet_mnist.study import tuned, tuning
from lenet_mnist.tracking import store

from ..conftest import mlflow_runs, new_store, run_module


def test_set_replaces_a_key_where_sweeps_set_it_and_adds_it_to_all_otherwise():
    found = tuned.with_settings(tuned.SWEEPS, ["train.seed=7", "paths.prepared=/p"])
    assert "train.seed=7" in found["adam"] and "train.seed=1,2" not in found["adam"]
    assert "train.seed=7" in found["sgd"] and "train.seed=7" not in found["search"]
    assert all("paths.prepared=/p" in overrides for overrides in found.values())
    assert found["search"][:2] == tuned.SWEEPS["search"]  # what it does not name stays
    launched = tuned.with_settings(tuned.SWEEPS, [tuned.LAUNCHER, "launcher=slurm"])
    assert all(o.count("launcher=slurm") == 1 and tuned.LAUNCHER not in o
               for o in launched.values())  # fmt: skip
    with pytest.raises(PipelineError, match="not KEY=VALUE"):
        tuned.with_settings(tuned.SWEEPS, ["train.seed"])


@pytest.mark.slow
def test_one_command_runs_the_three_sweeps_and_the_report_rebuilds_from_mlflow(
    prepared_slice, tmp_path
):
    prepared, params = prepared_slice
    db = new_store(tmp_path)
    small = [
        "train.batch_size=50,100", "optimizer.lr=0.001,0.004", "train.seed=1",
        "train.epochs=1", "train.targets=[0.5,0.7]", "hydra.sweeper.n_trials=2",
        "train.early_stopping.stop_at=0.7", f"paths.prepared={prepared}",
        f"paths.sweeps={tmp_path / 'sweeps'}", "trainer.enable_progress_bar=false",
        "trainer.compile=false",  # eager: each job would compile its own step
        "launcher=basic",  # a sweep's jobs run in the sweep's process: no workers
    ]  # fmt: skip
    args = ["--params", params, "--out", tmp_path / "report", *(f"--set={s}" for s in small)]
    env = {"MLFLOW_TRACKING_URI": db}
    done = run_module("study.tuned", *args, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for wide, grid in (("adam-wide", "adam"), ("sgd-low", "sgd")):  # one rate set for all
        assert f"tuned study: the {wide} sweep is the {grid} sweep, run above" in done.stdout
    client, runs = mlflow_runs(db)
    parents = {r.data.tags.get(store.SWEEP_TAG) for r in runs} - {None}
    sweeps = tuned.with_settings(tuned.SWEEPS, small)
    assert parents == {tuned.sweep_key(o) for o in sweeps.values()}
    assert len(runs) == 4 + 4 + 4 + 2 + 2  # parents, 2x2 grids, the search, the fixed rate
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "Seconds are measured with the jobs run by launcher=basic." in summary
    assert re.search(r"\| Adam tuned +\| 0\.5 +\| 2 \(50–100\) +\|", summary)  # a fit
    assert "## The Optuna search beside the grid" in summary

    before = (tmp_path / "report" / "runs.csv").read_text()
    (tmp_path / "report" / "runs.csv").unlink()
    again = run_module("study.tuned", "--report-only", *args, cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "report" / "runs.csv").read_text() == before
    assert len(mlflow_runs(db)[1]) == len(runs)  # nothing trained
    rows = list(csv.DictReader((tmp_path / "report" / "runs.csv").open()))
    assert {r["grid"] for r in rows} == set(tuning.LABELS.values())
    assert all((tmp_path / "report" / name).stat().st_size > 0 for name in
               ("pareto.png", "tuned_steps.png", "rates.png"))  # fmt: skip
