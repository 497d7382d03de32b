"""Resume after a kill: the same weights, bit for bit, as a training never interrupted."""

import hashlib
import os
import signal
import subprocess
import time

import pytest
import torch
from mlflow.tracking import MlflowClient

from lenet_mnist.training import checkpoint
from tests.conftest import SLICE, run_dvc_stage, stage_argv, start_dvc_stage, write_params

pytestmark = pytest.mark.slow
THREE_EPOCHS = {**SLICE, "train__epochs": 3, "trainer__compile": False}


def _stage_folder(root, prepared):
    (root / "data").mkdir(parents=True)
    (root / "data" / "prepared").symlink_to(prepared)
    params = write_params(root / "params.yaml", **THREE_EPOCHS)
    return params, {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}


def _weights(root) -> str:
    return hashlib.sha256((root / "data/model/weights.safetensors").read_bytes()).hexdigest()


def test_a_training_killed_after_epoch_2_of_3_resumes_to_the_same_bits(prepared_slice, tmp_path):
    prepared, _ = prepared_slice
    whole = tmp_path / "whole"
    params, env = _stage_folder(whole, prepared)
    done = subprocess.run(
        [*stage_argv("train"), "--params", str(params)], cwd=whole, env=env, capture_output=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (whole / "data/checkpoints/train.pt").exists()  # removed once finished

    cut = tmp_path / "cut"
    params, env = _stage_folder(cut, prepared)
    proc = start_dvc_stage("train", cut, params, env)
    saved = cut / "data/checkpoints/train.pt"
    deadline = time.monotonic() + 300
    while not (saved.is_file() and torch.load(saved, weights_only=True)["epoch"] == 2):
        assert proc.poll() is None and time.monotonic() < deadline, "epoch 2 never ended"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut / "data/model").exists()

    again = run_dvc_stage("train", cut, params, {"MLFLOW_TRACKING_URI": env["MLFLOW_TRACKING_URI"]})
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming after epoch 2" in again.stdout
    assert _weights(cut) == _weights(whole)
    assert (cut / "data/metrics/train_history.csv").read_bytes() == (
        whole / "data/metrics/train_history.csv"
    ).read_bytes()
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name("lenet-mnist").experiment_id])
    assert run.info.status == "FINISHED"  # the same run, continued
    assert len(client.get_metric_history(run.info.run_id, "val_acc")) == 3


def test_a_checkpoint_for_another_config_is_not_used(tmp_path):
    state = checkpoint.Checkpoint(
        key="abc", run_id="r", epoch=1, step=90, net={"w": torch.ones(2)}, optimizer={},
        scheduler=None, batch_order=torch.Generator().get_state(), rng=torch.get_rng_state(),
        recorder={"history": []}, early_stopping=None,
    )  # fmt: skip
    checkpoint.save(tmp_path / "c.pt", state)
    read = checkpoint.read(tmp_path / "c.pt", "abc")
    assert read.epoch == 1 and torch.equal(read.net["w"], torch.ones(2))
    assert checkpoint.read(tmp_path / "c.pt", "other") is None
    assert checkpoint.read(None, "abc") is None
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no partial file left
