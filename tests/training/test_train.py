"""train.py's own rules; the stage itself runs in test_pipeline_slice and test_sweep."""

import time

import pytest

from lenet_mnist.config import parse
from tests.conftest import SLICE, hydra_train, mlflow_runs, new_store, stage_folder
from tests.trained import trained_slice

DDP = {"trainer__accelerator": "cpu", "trainer__devices": 2, "trainer__strategy": "ddp"}


@pytest.mark.slow
def test_batch_group_changes_speed_not_what_is_learned(prepared_slice, tmp_path_factory):
    """Grouping batches per Lightning call must leave every update, and so the weights, alike:
    one batch per call against the shared slice's training, which groups 4."""
    grouped = trained_slice(prepared_slice, tmp_path_factory)
    assert parse.load(grouped["params"]).trainer.batch_group == 4
    folder = stage_folder(
        tmp_path_factory.mktemp("group1"), prepared_slice[0], trainer__batch_group=1
    )
    done = folder.run("train")
    assert done.returncode == 0, done.stderr[-3000:]
    for data in (folder.data, grouped["data"]):
        history = (data / "metrics/train_history.csv").read_text().splitlines()
        assert history[-1].split(",")[1] == str(90 * SLICE["train__epochs"])  # iterations
    weights = "model/weights.safetensors"
    assert (folder.data / weights).read_bytes() == (grouped["data"] / weights).read_bytes()


@pytest.mark.slow
def test_a_diverging_run_stops_with_one_line_writes_nothing_and_fails_its_run(
    prepared_slice, tmp_path
):
    folder = stage_folder(tmp_path, prepared_slice[0], trainer__compile=False, optimizer__lr=1e6)
    done = folder.run("train")
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: training diverged: the val loss was ")
    assert "in epoch 1 (after 90 optimizer updates)" in last and "Traceback" not in done.stderr
    assert sorted(x.name for x in folder.data.iterdir()) == ["prepared"]
    (run,) = folder.runs()
    assert run.info.status == "FAILED"


def test_an_accelerator_that_is_not_here_is_one_line(prepared_slice, tmp_path):
    """A GPU on a machine without one; mps, which no Linux machine has, is refused the same
    way in a sweep's job (tests/sweeps/test_sweep.py)."""
    accelerator = "gpu"
    folder = stage_folder(tmp_path, prepared_slice[0], trainer__accelerator=accelerator)
    done = folder.run("train")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: trainer.accelerator={accelerator} with trainer.devices=1 is")
    assert line.endswith("; use auto or cpu")
    assert folder.runs() == []  # refused before a run was opened


def test_an_unreachable_tracking_server_stops_the_stage_in_seconds(prepared_slice, tmp_path):
    folder = stage_folder(tmp_path, prepared_slice[0])
    started = time.monotonic()
    done = folder.run("train", MLFLOW_TRACKING_URI="http://127.0.0.1:9")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: MLflow tracking server http://127.0.0.1:9 did not answer")
    assert time.monotonic() - started < 60  # not minutes of retries
    assert sorted(x.name for x in folder.data.iterdir()) == ["prepared"]


@pytest.mark.slow
def test_two_process_ddp_trains_once_records_one_run_and_writes_once(prepared_slice, tmp_path):
    """Lightning's launcher starts rank 1 as a second run of the stage's command; only
    rank 0 may record and write, and the process that DVC started must end with 0."""
    overrides = {**DDP, "train__epochs": 1, "trainer__compile": False}
    folder = stage_folder(tmp_path, prepared_slice[0], **overrides)
    done = folder.run("train")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "distributed_backend=gloo" in done.stderr and "MEMBER: 2/2" in done.stderr
    lines = done.stdout.splitlines()
    assert len([x for x in lines if x.startswith("train: MLflow run ")]) == 1
    assert len([x for x in lines if x.startswith("train: kept epoch 1")]) == 1
    # 4,500 training images in shards of 2,250: 45 updates of 50 on each rank
    assert len([x for x in lines if x.startswith("epoch 1/1  iteration 45/45  ")]) == 1
    data = folder.data
    assert sorted(x.name for x in data.iterdir()) == ["metrics", "model", "prepared", "timings"]
    assert [x.name for x in (data / "model").iterdir()] == ["weights.safetensors"]
    history = (data / "metrics/train_history.csv").read_text().splitlines()
    assert len(history) == 2 and history[1].startswith("1,45,")
    client, (run,) = mlflow_runs(folder.db)
    assert run.info.status == "FINISHED"
    assert run.data.params["trainer.strategy"] == "ddp"
    assert len(client.get_metric_history(run.info.run_id, "val_acc")) == 1


@pytest.mark.slow
def test_two_process_ddp_as_a_hydra_run_trains_and_evaluates_once(prepared_slice, tmp_path):
    """Under Hydra the launcher starts rank 1 as a run of the same job folder; it must end
    after its share of the fit, before the job would evaluate and record a second time."""
    prepared, _ = prepared_slice
    db = new_store(tmp_path)
    slice_ = [f"{k.replace('__', '.')}={v}" for k, v in {**SLICE, **DDP}.items()]
    overrides = [*slice_, "train.epochs=1", "trainer.compile=false"]
    done = hydra_train(*overrides, f"paths.prepared={prepared}", cwd=tmp_path, db=db)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (job,) = (tmp_path / "data/runs").iterdir()  # both ranks ran in the one job folder
    assert len([x for x in done.stdout.splitlines() if " - test accuracy " in x]) == 1
    assert (job / "test.json").is_file() and (job / "model/weights.safetensors").is_file()
    _, (run,) = mlflow_runs(db)
    assert run.info.status == "FINISHED" and "test_acc" in run.data.metrics


@pytest.mark.slow
def test_early_stopping_ends_the_fit_and_records_its_epoch(prepared_slice, tmp_path):
    """A rate too small to move any prediction leaves validation accuracy flat, so with a
    patience of 1 the fit stops after its second epoch of three."""
    overrides = {
        "trainer__compile": False,
        "optimizer__lr": 1e-12,
        "train__epochs": 3,
        "train__early_stopping__patience": 1,
    }
    folder = stage_folder(tmp_path, prepared_slice[0], **overrides)
    done = folder.run("train")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "train: early stopping after epoch 2 of 3" in done.stdout
    history = (folder.data / "metrics/train_history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == ["1", "2"]
    (run,) = folder.runs()
    assert run.data.metrics["stopped_epoch"] == 2 and run.data.metrics["kept_epoch"] == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("lr", "rule"),
    [
        (1e-3, {"train__early_stopping__stop_at": 0.5}),
        (1e-12, {"train__early_stopping__give_up_below": 0.5}),
    ],
    ids=["reached", "diverged"],
)
def test_a_validation_accuracy_above_stop_at_or_below_give_up_below_ends_the_fit(
    prepared_slice, tmp_path, lr, rule
):
    """After one epoch on the slice, Adam at 1e-3 is far above 50% and a rate of 1e-12 is at
    chance (about 10%): either threshold ends a fit of three epochs there."""
    overrides = {"trainer__compile": False, "optimizer__lr": lr, "train__epochs": 3, **rule}
    folder = stage_folder(tmp_path, prepared_slice[0], **overrides)
    done = folder.run("train")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "train: early stopping after epoch 1 of 3" in done.stdout
    (run,) = folder.runs()
    assert run.data.metrics["stopped_epoch"] == 1
