"""train, evaluate and publish, run from dvc.yaml's own commands, on a slice of the real data.

The session's trained slice (tests/trained.py) feeds the assertions; MLflow writes to its
own sqlite store, exactly as the default does at the repository root. A test that runs a
stage again runs it in a copy of the slice's folder, which other tests read meanwhile.
"""

import csv
import json
import shutil

import pytest
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from lenet_mnist.tracking import provenance, store
from tests.conftest import (
    SLICE,
    mlflow_runs,
    new_store,
    run_dvc_stage,
    train_evaluate_publish,
)
from tests.trained import trained_slice

pytestmark = pytest.mark.slow
EPOCHS = SLICE["train__epochs"]
DVC_HASHED = (
    "model/weights.safetensors",
    "metrics/train_history.csv",
    "metrics/test.json",
    "metrics/test_predictions.csv",
    "figures/confusion_matrix.png",
    "figures/training_curves.png",
)


@pytest.fixture(scope="module")
def pipeline(prepared_slice, tmp_path_factory):
    shared = trained_slice(prepared_slice, tmp_path_factory)
    return {
        "root": shared["root"],  # the stages' console output: <stage>.out
        "data": shared["data"],
        "prepared": prepared_slice[0],
        "params": shared["params"],
        "client": MlflowClient(shared["db"]),
    }


@pytest.fixture
def stage_copy(pipeline, tmp_path):
    """A copy of the slice's stage folder (its data, prepared still linked) to run in."""
    shutil.copytree(pipeline["data"], tmp_path / "copy" / "data", symlinks=True)
    return tmp_path / "copy"


def _only_run(client):
    (run,) = mlflow_runs(client.tracking_uri)[1]
    return run


def test_train_logs_params_derived_values_and_every_epoch(pipeline):
    client = pipeline["client"]
    run = _only_run(client)
    p = run.data.params
    assert p["train.batch_size"] == "50" and p["optimizer.lr"] == "0.001"
    assert p["derived.iterations_per_epoch"] == "90"  # 4500 / 50
    assert p["derived.total_updates"] == str(90 * EPOCHS)
    per_epoch = (
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "epoch_time_s",
        "samples_per_s",
        "lr",
        "epoch",
    )
    for key in per_epoch:
        assert len(client.get_metric_history(run.info.run_id, key)) == EPOCHS, key
    epochs = client.get_metric_history(run.info.run_id, "epoch")
    # MLflow's step axis counts iterations (optimizer updates); epochs count from 1.
    assert [(m.step, m.value) for m in epochs] == [(90, 1.0), (180, 2.0)]
    for tag in ("git_commit", "dvc_data_md5", "dataset_digest", store.WEIGHTS_TAG):
        assert tag in run.data.tags
    # The numeric environment that computed these numbers, pinned by the default mode.
    assert p["numerics.mode"] == "portable" and p["numerics.threads"] == "1"
    assert p["numerics.aten_capability"] == "AVX2" and "avx2" in p["numerics.isa_flags"]


def test_the_console_keeps_one_line_per_epoch_counting_iterations(pipeline):
    """Not a TTY here, so no live bar: the epoch lines alone, counted as MLflow counts."""
    run = _only_run(pipeline["client"])
    p = run.data.params
    per_epoch, total = int(p["derived.iterations_per_epoch"]), int(p["derived.total_updates"])
    lines = (pipeline["root"] / "train.out").read_text().splitlines()
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert len(epoch_lines) == EPOCHS
    for k, line in enumerate(epoch_lines, start=1):
        assert line.startswith(f"epoch {k}/{EPOCHS}  iteration {k * per_epoch:,}/{total:,}  ")
        assert "train loss" in line and "val loss" in line and line.endswith("img/s")
    assert not any("\x1b[" in line or "\r" in line for line in lines)  # plain, no redraws
    page = f"/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}?workflowType="
    for stage in ("train", "publish"):
        out = (pipeline["root"] / f"{stage}.out").read_text()
        assert f"{stage}: MLflow run {run.info.run_id}: http://127.0.0.1:5000{page}" in out


def test_weights_and_history_are_written(pipeline):
    d = pipeline["data"]
    state = load_file(d / "model/weights.safetensors")
    assert state["features.0.weight"].shape == (6, 1, 5, 5)
    rows = list(csv.DictReader((d / "metrics/train_history.csv").read_text().splitlines()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1))
    assert [int(r["iteration"]) for r in rows] == [90 * k for k in range(1, EPOCHS + 1)]
    assert "epoch_time_s" not in rows[0]  # timings stay out of DVC-hashed files
    timings = json.loads((d / "timings/train.json").read_text())
    assert len(timings["epochs"]) == EPOCHS and timings["train_wall_s"] > 0
    assert timings["numerics"]["numerics.env.MKL_CBWR"] == "COMPATIBLE"


def test_publish_adds_test_metrics_and_artifacts_to_the_training_run(pipeline):
    client, d = pipeline["client"], pipeline["data"]
    metrics = json.loads((d / "metrics/test.json").read_text())
    per_class = json.loads((d / "metrics/test_per_class.json").read_text())["per_class_acc"]
    assert 0.8 < metrics["test_acc"] <= 1 and set(per_class) == set("0123456789")
    run = _only_run(client)
    assert run.data.metrics["test_acc"] == metrics["test_acc"]
    assert run.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {
        "weights.safetensors",
        "test.json",
        "training_curves.png",
        "confusion_matrix.png",
        "test_predictions.csv",
        "train_history.csv",
    } <= artifacts
    rows = list(csv.DictReader((d / "metrics/test_predictions.csv").read_text().splitlines()))
    assert len(rows) == 500 and set(rows[0]) == {"actual", "predicted"}


def test_running_again_gives_identical_bits_in_every_hashed_output(pipeline, tmp_path):
    env = {"MLFLOW_TRACKING_URI": new_store(tmp_path / "second")}
    again = train_evaluate_publish(pipeline["prepared"], pipeline["params"], tmp_path, env)
    for name in DVC_HASHED:
        assert (again / name).read_bytes() == (pipeline["data"] / name).read_bytes(), name


def test_evaluate_writes_nothing_to_mlflow(pipeline, stage_copy, tmp_path):
    """Its outputs are its files; what reaches MLflow is the publish stage's."""
    db = tmp_path / "untouched.db"
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{db}"}
    done = run_dvc_stage("evaluate", stage_copy, pipeline["params"], env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("evaluate: test accuracy ") and "MLflow" not in done.stdout
    assert not db.exists()


def test_publishing_the_same_weights_again_registers_no_new_version(pipeline, stage_copy):
    client = pipeline["client"]
    before = client.search_model_versions("name = 'lenet-mnist'")
    db = client.tracking_uri  # the store the weights were published to
    done = run_dvc_stage("publish", stage_copy, pipeline["params"], {"MLFLOW_TRACKING_URI": db})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "holds these weights already" in done.stdout
    receipt = json.loads((stage_copy / "data" / "published.json").read_text())
    weights = pipeline["data"] / "model/weights.safetensors"
    assert receipt == {
        "registered_model": "lenet-mnist",
        "weights_sha256": provenance.sha256(weights),
        "test_acc": json.loads((pipeline["data"] / "metrics/test.json").read_text())["test_acc"],
    }  # no run id and no version: the same in every clone
    after = client.search_model_versions("name = 'lenet-mnist'")
    assert [v.version for v in after] == [v.version for v in before] and len(before) == 1
    run = _only_run(client)
    assert len(client.search_logged_models([run.info.experiment_id])) == 1  # digits


def test_publish_opens_a_run_when_no_training_run_has_these_weights(pipeline, stage_copy, tmp_path):
    """As after DVC restored the weights from its cache: the numbers still reach MLflow."""
    db = f"sqlite:///{tmp_path / 'empty.db'}"
    done = run_dvc_stage("publish", stage_copy, pipeline["params"], {"MLFLOW_TRACKING_URI": db})
    assert done.returncode == 0, done.stderr[-3000:]
    run = _only_run(MlflowClient(db))
    assert run.data.tags["note"] == "weights restored, not trained"
    weights = pipeline["data"] / "model/weights.safetensors"
    assert run.data.tags[store.WEIGHTS_TAG] == provenance.sha256(weights)
    assert (
        run.data.metrics["test_acc"]
        == json.loads((pipeline["data"] / "metrics/test.json").read_text())["test_acc"]
    )
