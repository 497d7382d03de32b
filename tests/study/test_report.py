"""The report command over a real sweep's MLflow runs (the 2x1 grid of conftest, slow),
and over synthetic runs logged into a temporary sqlite store: three batch sizes with three
seeds each, with every measurement a sweep child run carries."""

import csv
import re

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from lenet_mnist.study import figures, report
from tests.conftest import new_store, run_module, write_params

slow = pytest.mark.slow


@pytest.fixture(scope="module")
def rebuilt(sweep_2x1, tmp_path_factory):
    """`python -m lenet_mnist.study.report` with no --sweep: the newest sweep in the store."""
    root = tmp_path_factory.mktemp("report")
    p = write_params(root / "params.yaml", logger__tracking_uri=sweep_2x1["db"])
    done = run_module("study.report", "--out", root / "out", "--params", p, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "out", MlflowClient(sweep_2x1["db"])


@slow
def test_the_table_holds_each_grid_point_with_its_mlflow_numbers(rebuilt):
    out, client = rebuilt
    rows = list(csv.DictReader((out / report.RUNS_CSV).read_text().splitlines()))
    assert [int(r["batch_size"]) for r in rows] == [50, 100]
    for row in rows:
        run = client.get_run(row["run_id"])
        assert float(row["test_acc"]) == run.data.metrics["test_acc"]
        assert int(row["iterations_per_epoch"]) == 4500 // int(row["batch_size"])
        assert int(row["total_updates"]) == int(row["iterations_per_epoch"])  # one epoch
        assert float(row["s_per_epoch"]) > 0 and float(row["wall_s"]) >= float(row["s_per_epoch"])
        assert float(row["samples_per_s"]) == pytest.approx(4500 / float(row["s_per_epoch"]))
        assert float(row["best_val_acc"]) == float(row["final_val_acc"])  # one epoch
    points = list(csv.DictReader((out / report.SUMMARY_CSV).read_text().splitlines()))
    assert [(p["batch_size"], p["seeds"], p["test_acc_low"]) for p in points] == [
        ("50", "1", ""), ("100", "1", ""),
    ]  # fmt: skip
    assert [float(p["test_acc_mean"]) for p in points] == [float(r["test_acc"]) for r in rows]
    markdown = (out / report.SUMMARY_MD).read_text()
    assert "- Every grid point has 1 seed: no confidence intervals" in markdown
    assert re.search(r"\| batch size +\| epochs +\| lr +\| seeds +\| test acc +\|", markdown)
    assert len(re.findall(r"\(1 seed\) +\|", markdown)) >= 2 * len(points)


@slow
def test_figures_are_pngs_and_the_page_needs_no_other_file(rebuilt):
    out, _ = rebuilt
    for name in (*figures.PANELS, figures.OVERVIEW):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    page = (out / report.PAGE).read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == len(list(out.glob("*.png"))) >= len(figures.PANELS) + 1
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "href=" not in page and "<h2>Grid points</h2>" in page and "<h2>Runs</h2>" in page


@slow
def test_the_sweep_writes_the_same_table_as_the_command(sweep_2x1, rebuilt):
    out, _ = rebuilt
    own = sweep_2x1["sweep_dir"] / "report" / report.SUMMARY_CSV
    assert own.read_text() == (out / report.SUMMARY_CSV).read_text()


@slow
def test_no_sweep_in_the_store_is_one_line(tmp_path):
    p = write_params(tmp_path / "params.yaml", logger__tracking_uri=f"sqlite:///{tmp_path}/m.db")
    done = run_module("study.report", "--out", tmp_path / "out", "--params", p, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: no sweep in MLflow experiment 'lenet-mnist'; run one with "
        "`python -m lenet_mnist.run -m train.batch_size=...`"
    )
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


@slow
def test_an_unknown_sweep_is_one_line(sweep_2x1, tmp_path):
    p = write_params(tmp_path / "params.yaml", logger__tracking_uri=sweep_2x1["db"])
    done = run_module("study.report", "--sweep", "0" * 32, "--params", p, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"error: --sweep {'0' * 32} is not a sweep's parent run in {sweep_2x1['db']}" in (
        done.stderr
    )


# Synthetic sweeps: the contract of a sweep child run, logged with MlflowClient.

SIZES, SEEDS, EPOCHS, TRAIN = (32, 128, 512), (1, 2, 3), 10, 45_000
TARGETS = {0.97: (300.0, 30_000.0), 0.98: (600.0, 64_000.0)}  # target -> (S_min, E_min)
ONLY_SMALL = 0.99  # reached by batch 32 alone: too few batch sizes to fit


def _child(client, experiment: str, parent: str, size: int, seed: int, new: bool) -> None:
    """One complete child run; `new` adds targets, test accuracy per epoch, noise scale."""
    from mlflow.entities import Metric, Param

    from lenet_mnist.tracking import store

    job = f"train.batch_size={size} train.epochs={EPOCHS} train.seed={seed}"
    tags = {store.JOB_TAG: job, store.COMPLETE_TAG: "true", store.PARENT_TAG: parent}
    run = client.create_run(experiment, tags=tags).info.run_id
    per_epoch = -(-TRAIN // size)
    params = {
        "train.batch_size": size, "train.epochs": EPOCHS, "train.seed": seed,
        "derived.lr": 1e-3, "derived.iterations_per_epoch": per_epoch,
        "derived.total_updates": per_epoch * EPOCHS, "derived.train_size": TRAIN,
        "optimizer.lr_scaling": "none",
    }  # fmt: skip
    if new:
        params["train.targets"] = str([*TARGETS, ONLY_SMALL])
    wobble = 1 + 0.01 * (seed - 2) + 0.001 * size / 32  # seeds differ a little
    metrics = []
    for epoch in range(1, EPOCHS + 1):
        val = 0.9 + 0.09 * (1 - 0.5**epoch) * wobble
        values = {
            "train_acc": val + 0.002 * epoch, "val_acc": val, "train_loss": 1 - val,
            "val_loss": 1 - val, "lr": 1e-3, "epoch": epoch, "epoch_time_s": 2.0 + seed / 10,
            "val_time_s": 0.5, "samples_per_s": TRAIN / (2.0 + seed / 10),
        }  # fmt: skip
        if new:
            values |= {"epoch_test_acc": val - 0.001, "noise_scale": 50.0 * epoch * wobble}
            values |= {"noise_grad_sq": 1.0 / epoch, "noise_trace": 50.0 * wobble}
        metrics += [Metric(k, float(v), epoch, epoch * per_epoch) for k, v in values.items()]
    final = {"test_acc": 0.98 + 0.001 * seed - size / 1e5, "train_wall_s": 30.0, "kept_epoch": 9}
    if new:
        for target, (s_min, e_min) in TARGETS.items():
            final |= _to_target(target, round((s_min + e_min / size) * wobble), per_epoch)
        if size == SIZES[0]:
            final |= _to_target(ONLY_SMALL, 5000, per_epoch)
    metrics += [Metric(k, float(v), 0, 0) for k, v in final.items()]
    client.log_batch(run, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()])
    client.set_terminated(run)


def _to_target(target: float, iterations: int, per_epoch: int) -> dict[str, float]:
    key = f"val_acc_{target:g}"
    return {
        f"iterations_to_{key}": iterations,
        f"epochs_to_{key}": -(-iterations // per_epoch),
        f"seconds_to_{key}": iterations / 100,
    }


def _sweep(client, new: bool) -> str:
    """A sweep's parent and its 3x3 children; returns the parent's run id."""
    from lenet_mnist.tracking import store

    experiment = store.experiment_id(client, "lenet-mnist")
    tags = {store.SWEEP_TAG: f"key-{new}", store.OVERRIDES_TAG: "synthetic"}
    parent = client.create_run(experiment, tags=tags).info.run_id
    for size in SIZES:
        for seed in SEEDS:
            _child(client, experiment, parent, size, seed, new)
    return parent


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Two synthetic sweeps in one sqlite store: new-style runs and old-style runs."""
    root = tmp_path_factory.mktemp("synthetic")
    client = MlflowClient(new_store(root))
    new, old = _sweep(client, new=True), _sweep(client, new=False)
    files = report.build(client, new, root / "new")
    return client, new, old, root, files


def test_the_point_table_holds_each_points_mean_and_interval(synthetic):
    from scipy import stats

    client, parent, _, root, files = synthetic
    assert files[-1] == root / "new" / report.PAGE and all(f.is_file() for f in files)
    points = list(csv.DictReader((root / "new" / report.SUMMARY_CSV).read_text().splitlines()))
    markdown = (root / "new" / report.SUMMARY_MD).read_text()
    runs = client.search_runs([client.get_run(parent).info.experiment_id])
    assert [int(p["batch_size"]) for p in points] == list(SIZES)
    for point in points:
        accs = [
            r.data.metrics["test_acc"]
            for r in runs
            if r.data.tags.get("mlflow.parentRunId") == parent
            and r.data.params["train.batch_size"] == point["batch_size"]
        ]
        low, high = stats.t.interval(0.95, 2, loc=np.mean(accs), scale=stats.sem(accs))
        assert int(point["test_acc_n"]) == 3 == int(point["seeds"])
        assert float(point["test_acc_mean"]) == pytest.approx(np.mean(accs))
        assert float(point["test_acc_low"]) == pytest.approx(low)
        assert float(point["test_acc_high"]) == pytest.approx(high)
        half = (high - low) / 2
        assert re.search(rf"\| {np.mean(accs):.4f} ± {half:.4f} +\|", markdown)
    assert [p["vs_best"] for p in points][0] == "best"
    runs_csv = (root / "new" / report.RUNS_CSV).read_text().splitlines()
    assert len(runs_csv) == 1 + len(SIZES) * len(SEEDS)


def test_the_critical_batch_size_is_fitted_per_target(synthetic):
    _, _, _, root, _ = synthetic
    fits = list(csv.DictReader((root / "new" / report.SCALING_CSV).read_text().splitlines()))
    assert [float(f["target"]) for f in fits] == list(TARGETS)
    for fit, (s_min, e_min) in zip(fits, TARGETS.values(), strict=True):
        assert float(fit["b_crit"]) == pytest.approx(e_min / s_min, rel=0.1)
        assert float(fit["b_crit_low"]) <= float(fit["b_crit"]) <= float(fit["b_crit_high"])
        assert int(fit["runs"]) == 9 and float(fit["b_simple"]) > 0
        assert float(fit["ratio"]) == pytest.approx(float(fit["b_simple"]) / float(fit["b_crit"]))
    markdown = (root / "new" / report.SUMMARY_MD).read_text()
    assert "## Critical batch size" in markdown and "x B_crit; " in markdown
    assert "- Target 0.99: reached at 1 batch size; the fit needs ≥2, so it is skipped." in (
        markdown
    )


def test_every_figure_is_an_inlined_png(synthetic):
    _, _, _, root, files = synthetic
    pngs = [f for f in files if f.suffix == ".png"]
    names = {f.name for f in pngs}
    extra = {figures.GAP, figures.TEST_CURVES, figures.STEPS_VS_EXAMPLES}
    assert extra | set(figures.PANELS) | {figures.OVERVIEW} == names
    assert all(f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in pngs)
    page = (root / "new" / report.PAGE).read_text()
    assert page.count('src="data:image/png;base64,') == len(pngs) and "href=" not in page


def test_runs_without_the_new_measurements_leave_those_parts_out(synthetic, tmp_path):
    client, _, old, _, _ = synthetic
    files = report.build(client, old, tmp_path / "old")
    assert figures.STEPS_VS_EXAMPLES not in {f.name for f in files}
    assert not (tmp_path / "old" / report.SCALING_CSV).exists()
    page = (tmp_path / "old" / report.PAGE).read_text()
    assert "No run logged train.targets" in page and "No run logged epoch_test_acc" in page
    assert "<h2>Critical batch size</h2>" not in page and "<h2>Grid points</h2>" in page
