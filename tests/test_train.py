"""train.py's own rules; the stage itself runs in test_pipeline_slice and test_sweep."""

import time

import pytest
from mlflow.tracking import MlflowClient

from .conftest import SLICE, run_dvc_stage, write_params


@pytest.mark.slow
def test_batch_group_changes_speed_not_what_is_learned(prepared_slice, tmp_path):
    """Grouping batches per Lightning call must leave every update, and so the weights, alike."""
    prepared, _ = prepared_slice
    weights = []
    for group in (1, 4):
        root = tmp_path / f"group{group}"
        (root / "data").mkdir(parents=True)
        (root / "data" / "prepared").symlink_to(prepared)
        overrides = {**SLICE, "trainer__compile": False, "trainer__batch_group": group}
        p = write_params(root / "params.yaml", **overrides)
        db = {"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
        done = run_dvc_stage("train", root, p, db)
        assert done.returncode == 0, done.stderr[-3000:]
        weights.append((root / "data/model/weights.safetensors").read_bytes())
        history = (root / "data/metrics/train_history.csv").read_text().splitlines()
        assert history[-1].split(",")[1] == str(90 * SLICE["train__epochs"])  # iterations
    assert weights[0] == weights[1]


@pytest.mark.slow
def test_a_diverging_run_stops_with_one_line_writes_nothing_and_fails_its_run(
    prepared_slice, tmp_path
):
    prepared, _ = prepared_slice
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "prepared").symlink_to(prepared)
    overrides = {**SLICE, "trainer__compile": False, "optimizer__lr": 1e6}
    p = write_params(tmp_path / "params.yaml", **overrides)
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = run_dvc_stage("train", tmp_path, p, {"MLFLOW_TRACKING_URI": db})
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: training diverged: the val loss was ")
    assert "in epoch 1 (after 90 optimizer updates)" in last and "Traceback" not in done.stderr
    assert sorted(x.name for x in (tmp_path / "data").iterdir()) == ["prepared"]
    client = MlflowClient(db)
    (run,) = client.search_runs([client.get_experiment_by_name("lenet-mnist").experiment_id])
    assert run.info.status == "FAILED"


@pytest.mark.parametrize("accelerator", ["gpu", "mps"])
def test_an_accelerator_that_is_not_here_is_one_line(prepared_slice, tmp_path, accelerator):
    prepared, _ = prepared_slice
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "prepared").symlink_to(prepared)
    p = write_params(tmp_path / "params.yaml", **SLICE, trainer__accelerator=accelerator)
    db = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    done = run_dvc_stage("train", tmp_path, p, db)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: trainer.accelerator={accelerator} with trainer.devices=1 is")
    assert line.endswith("; use auto or cpu")
    assert not (tmp_path / "mlflow.db").exists()  # refused before a run was opened


def test_an_unreachable_tracking_server_stops_the_stage_in_seconds(prepared_slice, tmp_path):
    prepared, _ = prepared_slice
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "prepared").symlink_to(prepared)
    p = write_params(tmp_path / "params.yaml", **SLICE)
    started = time.monotonic()
    done = run_dvc_stage("train", tmp_path, p, {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: MLflow tracking server http://127.0.0.1:9 did not answer")
    assert time.monotonic() - started < 60  # not minutes of retries
    assert sorted(x.name for x in (tmp_path / "data").iterdir()) == ["prepared"]
