"""Resume after a kill or a signal: the same weights, bit for bit, as a training never
interrupted; a checkpoint that cannot be read is set aside, never trusted."""

import hashlib
import os
import random
import signal
import subprocess
import time
from pathlib import Path

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
    _wait_for_checkpoint(proc, cut / "data/checkpoints/train.pt", epoch=2)
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


def _wait_for_checkpoint(proc: subprocess.Popen, saved: Path, epoch: int) -> None:
    deadline = time.monotonic() + 300
    while not (saved.is_file() and torch.load(saved, weights_only=True)["epoch"] == epoch):
        assert proc.poll() is None and time.monotonic() < deadline, f"epoch {epoch} never ended"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_training_with_its_exit_code_a_killed_run_and_the_checkpoint_kept(
    prepared_slice, tmp_path, sig
):
    """What a scheduler sends on preemption (SIGTERM) and Ctrl-C (SIGINT) must never read
    as a success; the run they stop is KILLED, and the next start resumes it, unless the
    checkpoint has since become unreadable: then it is set aside and training starts over."""
    folder = stage_folder(tmp_path, prepared_slice[0], **THREE_EPOCHS)
    proc = folder.start("train", capture=True)
    saved = folder.data / "checkpoints/train.pt"
    _wait_for_checkpoint(proc, saved, epoch=1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-3000:]
    assert "Traceback" not in err
    name = signal.Signals(sig).name
    assert err.strip().splitlines()[-1] == (
        f"stopped: training stopped by {name}; the same command resumes it from the "
        f"checkpoint {Path('data/checkpoints/train.pt')}"
    )
    assert saved.is_file() and not (folder.data / "model").exists()
    (run,) = folder.runs()
    assert run.info.status == "KILLED"
    if sig == signal.SIGINT:
        saved.write_bytes(os.urandom(4096))
    again = folder.run("train")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Traceback" not in again.stderr and "weights_only" not in again.stdout + again.stderr
    if sig == signal.SIGTERM:
        assert "resuming after epoch 1" in again.stdout
        (run,) = folder.runs()
        assert run.info.status == "FINISHED"
        return
    (line,) = [x for x in again.stdout.splitlines() if "is not a checkpoint" in x]
    assert line.startswith(f"train: {Path('data/checkpoints/train.pt')} is not a checkpoint")
    assert line.endswith("set aside as train.pt.unreadable, training starts from epoch 1")
    assert "resuming" not in again.stdout
    assert (saved.parent / "train.pt.unreadable").stat().st_size == 4096
    assert sorted(r.info.status for r in folder.runs()) == ["FINISHED", "KILLED"]  # a new run


def _state(**changes: object) -> checkpoint.Checkpoint:
    state = checkpoint.Checkpoint(
        key="abc", run_id="r", epoch=1, step=90, net={"w": torch.ones(2)}, optimizer={},
        scheduler=None, batch_order=torch.Generator().get_state(), rng=torch.get_rng_state(),
        recorder={"history": []}, early_stopping=None,
    )  # fmt: skip
    return checkpoint.dataclasses.replace(state, **changes)


@pytest.mark.parametrize(
    ("kind", "why"),
    [
        ("empty", "unreadable, EOFError"),
        ("truncated", "unreadable, OSError"),
        ("random bytes", "unreadable, UnpicklingError"),
        ("other fields", "it holds other fields than a training checkpoint"),
        ("an object", "it holds objects other than tensors and plain values"),
    ],
)
def test_a_checkpoint_that_is_not_ours_is_set_aside_with_one_line(tmp_path, capsys, kind, why):
    path = tmp_path / "train.pt"
    whole = tmp_path / "whole.pt"
    checkpoint.save(whole, _state())
    content = {
        "empty": b"",
        "truncated": whole.read_bytes()[: whole.stat().st_size // 2],
        "random bytes": random.Random(0).randbytes(4096),
    }
    if kind in content:
        path.write_bytes(content[kind])
    elif kind == "other fields":
        torch.save({"model": {"w": torch.ones(2)}, "epoch": 1}, path)
    else:
        torch.save({"key": "abc", "run_id": Path("r")}, path)
    assert checkpoint.read(path, "abc") is None
    (line,) = capsys.readouterr().out.splitlines()
    assert f"({why}" in line and "weights_only" not in line
    assert not path.exists() and (tmp_path / "train.pt.unreadable").is_file()


def test_a_checkpoint_for_another_config_is_not_used(tmp_path):
    checkpoint.save(tmp_path / "c.pt", _state())
    read = checkpoint.read(tmp_path / "c.pt", "abc")
    assert read.epoch == 1 and torch.equal(read.net["w"], torch.ones(2))
    assert checkpoint.read(tmp_path / "c.pt", "other") is None
    assert checkpoint.read(None, "abc") is None
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no partial file left
