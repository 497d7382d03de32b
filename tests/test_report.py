"""The report command over a real sweep's MLflow runs (the 2x1 grid of conftest)."""

import csv
import dataclasses
import re

import pytest
from mlflow.tracking import MlflowClient

from lenet_mnist import report, report_plots

from .conftest import run_stage, write_params

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rebuilt(sweep_2x1, tmp_path_factory):
    """`python -m lenet_mnist.report` with no --sweep: the newest sweep in the store."""
    root = tmp_path_factory.mktemp("report")
    p = write_params(root / "params.yaml", logger__tracking_uri=sweep_2x1["db"])
    done = run_stage("report", "--out", root / "out", "--params", p, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "out", MlflowClient(sweep_2x1["db"])


def test_the_table_holds_each_grid_point_with_its_mlflow_numbers(rebuilt):
    out, client = rebuilt
    rows = list(csv.DictReader((out / report.SUMMARY_CSV).read_text().splitlines()))
    assert [int(r["batch_size"]) for r in rows] == [50, 100]
    for row in rows:
        run = client.get_run(row["run_id"])
        assert float(row["test_acc"]) == run.data.metrics["test_acc"]
        assert int(row["iterations_per_epoch"]) == 4500 // int(row["batch_size"])
        assert int(row["total_updates"]) == int(row["iterations_per_epoch"])  # one epoch
        assert float(row["s_per_epoch"]) > 0 and float(row["wall_s"]) >= float(row["s_per_epoch"])
        assert float(row["samples_per_s"]) == pytest.approx(4500 / float(row["s_per_epoch"]))
        assert float(row["best_val_acc"]) == float(row["final_val_acc"])  # one epoch
    markdown = (out / report.SUMMARY_MD).read_text().splitlines()
    assert len(markdown) == 2 + len(rows) and markdown[0].startswith("| batch size |")


def test_figures_are_pngs_and_the_page_needs_no_other_file(rebuilt):
    out, _ = rebuilt
    for name in (*report_plots.PANELS, report_plots.OVERVIEW):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    page = (out / report.PAGE).read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == len(report_plots.PANELS) + 1
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "href=" not in page and page.count("<tr>") == 3


def test_the_sweep_writes_the_same_table_as_the_command(sweep_2x1, rebuilt):
    out, _ = rebuilt
    own = sweep_2x1["sweep_dir"] / "report" / report.SUMMARY_CSV
    assert own.read_text() == (out / report.SUMMARY_CSV).read_text()


def test_no_sweep_in_the_store_is_one_line(tmp_path):
    p = write_params(tmp_path / "params.yaml", logger__tracking_uri=f"sqlite:///{tmp_path}/m.db")
    done = run_stage("report", "--out", tmp_path / "out", "--params", p, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: no sweep in MLflow experiment 'lenet-mnist'; run one with "
        "`python -m lenet_mnist.run -m train.batch_size=...`"
    )
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_an_unknown_sweep_is_one_line(sweep_2x1, tmp_path):
    p = write_params(tmp_path / "params.yaml", logger__tracking_uri=sweep_2x1["db"])
    done = run_stage("report", "--sweep", "0" * 32, "--params", p, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"error: --sweep {'0' * 32} is not a sweep's parent run in {sweep_2x1['db']}" in (
        done.stderr
    )


@pytest.fixture(scope="module")
def one_epoch_rows(sweep_2x1) -> list[report.Row]:
    """The 2x1 sweep's rows, one epoch each, as the report reads them from MLflow."""
    client = MlflowClient(sweep_2x1["db"])
    return report.collect(client, report.latest_sweep(client, "lenet-mnist"))


@pytest.fixture
def ax():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def test_counts_read_as_english(one_epoch_rows, ax):
    counts = [report_plots.plural(n, "epoch") for n in (0, 1, 2)]
    assert counts == ["0 epochs", "1 epoch", "2 epochs"]
    report_plots.accuracy_vs_batch_size(ax, one_epoch_rows)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["1 epoch"]
    assert all("numerics (1 thread, " in r.machine for r in one_epoch_rows)  # joblib's one


def _markers(ax) -> list[tuple[str, float, str]]:
    return [
        (line.get_marker(), line.get_markersize(), line.get_linestyle()) for line in ax.get_lines()
    ]


def _visible_ticks(ax) -> list[float]:
    ax.figure.canvas.draw()
    low, high = ax.get_xlim()
    return [t for t in ax.get_xticks() if low <= t <= high]


@pytest.mark.parametrize("panel", ["learning_curves", "accuracy_vs_time"])
def test_one_epoch_runs_are_markers_big_enough_to_see(one_epoch_rows, ax, panel):
    """A one-point line draws only its marker: a dot, with no line to show it."""
    getattr(report_plots, panel)(ax, one_epoch_rows)
    assert _markers(ax) == [("o", 8, "None")] * len(one_epoch_rows)


def test_learning_curves_tick_whole_epochs(one_epoch_rows, ax):
    report_plots.learning_curves(ax, one_epoch_rows)
    assert _visible_ticks(ax) == [1]
    ax.clear()
    longer = [_with_epochs(r, 3) for r in one_epoch_rows]
    report_plots.learning_curves(ax, longer)
    assert _markers(ax) == [("o", 3, "-")] * len(longer)  # lines once there are epochs to join
    assert _visible_ticks(ax) == [1, 2, 3]


def _with_epochs(row: report.Row, epochs: int) -> report.Row:
    """The row as if its run had trained `epochs` epochs, each a little better."""
    acc = [row.val_acc[0] + 0.01 * i for i in range(epochs)]
    return dataclasses.replace(
        row, epochs=epochs, val_acc=acc, elapsed_s=list(range(1, epochs + 1))
    )
