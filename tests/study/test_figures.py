"""The study's figures over a real sweep's runs (the 2x1 grid of conftest, one epoch each,
slow), and the per-epoch bands over seeds."""

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from lenet_mnist import numerics
from lenet_mnist.study import figures, report, tuning

from .frames import run, runs

slow = pytest.mark.slow


@pytest.fixture(scope="module")
def one_epoch_runs(sweep_2x1) -> pd.DataFrame:
    """The 2x1 sweep's runs, one epoch each, as the report reads them from MLflow."""
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


def test_bands_follow_runs_that_stopped_early():
    band = figures.bands([[1.0, 2.0, 3.0], [3.0, 4.0], [2.0, 3.0]])
    assert [b.n for b in band] == [3, 3, 1]
    assert [b.mean for b in band] == [2.0, 3.0, 3.0]


@slow
def test_a_line_per_setting_is_named_in_english(one_epoch_runs, ax):
    figures.accuracy_vs_batch_size(ax, one_epoch_runs)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["1 epoch"]


@slow
def test_the_caption_names_the_threads_and_the_cpus_family_and_model(one_epoch_runs):
    assert all("numerics (1 thread, " in m for m in one_epoch_runs["machine"])  # joblib's one
    cpu = numerics.cpu_info()
    family_model = f"CPU family/model {cpu['cpu family']}/{cpu['model']}, "
    assert all(family_model in m for m in one_epoch_runs["machine"])


def _markers(ax) -> list[tuple[str, float, str]]:
    return [
        (line.get_marker(), line.get_markersize(), line.get_linestyle()) for line in ax.get_lines()
    ]


def _visible_ticks(ax) -> list[float]:
    ax.figure.canvas.draw()
    low, high = ax.get_xlim()
    return [t for t in ax.get_xticks() if low <= t <= high]


@slow
@pytest.mark.parametrize("panel", ["learning_curves", "accuracy_vs_time"])
def test_one_epoch_runs_are_markers_big_enough_to_see(one_epoch_runs, ax, panel):
    """A one-point line draws only its marker: a dot, with no line to show it."""
    getattr(figures, panel)(ax, one_epoch_runs)
    assert _markers(ax) == [("o", 8, "None")] * len(one_epoch_runs)


@slow
def test_learning_curves_tick_whole_epochs(one_epoch_runs, ax):
    figures.learning_curves(ax, one_epoch_runs)
    assert _visible_ticks(ax) == [1]


@slow
def test_learning_curves_join_epochs_with_lines(one_epoch_runs, ax):
    longer = _with_epochs(one_epoch_runs, 3)
    figures.learning_curves(ax, longer)
    assert _markers(ax) == [("o", 3, "-")] * len(longer)
    assert _visible_ticks(ax) == [1, 2, 3]


def _with_epochs(runs: pd.DataFrame, epochs: int) -> pd.DataFrame:
    """The runs as if each had trained `epochs` epochs, each a little better."""
    val_acc = runs["val_acc"].map(lambda acc: [acc[0] + 0.01 * i for i in range(epochs)])
    return runs.assign(epochs=epochs, val_acc=val_acc,
                       elapsed_s=[list(range(1, epochs + 1))] * len(runs))  # fmt: skip


def test_grids_of_one_rate_each_draw_no_rate_landscape(tmp_path):
    """One rate per batch size tunes nothing: the rates figure is left out, not drawn empty."""
    timed = {"elapsed_s": [1.0, 2.0], "epoch_test_acc": [0.97, 0.98]}
    one_rate = [
        run(size, seed, 1e-3, {0.98: 300 + size}, **timed) for size in (16, 64) for seed in (1, 2)
    ]
    study = tuning.analyze({"adam": runs(*one_rate), "search": runs(*one_rate[:1])})
    drawn = figures.draw_tuned(study, tmp_path, "caption")
    assert [p.name for p in drawn] == ["pareto.png", "tuned_steps.png"]
    assert all(p.stat().st_size > 0 for p in drawn)
