"""Resume after a kill: the same weights, bit for bit, as a training never interrupted."""

import hashlib
import signal
import time

import pytest
import torch

from lenet_mnist.training import checkpoint
from tests.conftest import mlflow_runs, stage_folder

pytestmark = pytest.mark.slow
THREE_EPOCHS = {"train__epochs": 3, "trainer__compile": False}


def _weights(root) -> str:
    return hashlib.sha256((root / "data/model/weights.safetensors").read_bytes()).hexdigest()


def test_a_training_killed_after_epoch_2_of_3_resumes_to_the_same_bits(prepared_slice, tmp_path):
    prepared, _ = prepared_slice
    whole = stage_folder(tmp_path / "whole", prepared, **THREE_EPOCHS)
    done = whole.run("train")
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (whole.data / "checkpoints/train.pt").exists()  # removed once finished

    folder = stage_folder(tmp_path / "cut", prepared, **THREE_EPOCHS)
    cut = folder.root
    proc = folder.start("train")
    saved = cut / "data/checkpoints/train.pt"
    deadline = time.monotonic() + 300
    while not (saved.is_file() and torch.load(saved, weights_only=True)["epoch"] == 2):
        assert proc.poll() is None and time.monotonic() < deadline, "epoch 2 never ended"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut / "data/model").exists()

    again = folder.run("train")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming after epoch 2" in again.stdout
    assert _weights(cut) == _weights(whole.root)
    assert (cut / "data/metrics/train_history.csv").read_bytes() == (
        whole.data / "metrics/train_history.csv"
    ).read_bytes()
    client, (run,) = mlflow_runs(folder.db)
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
