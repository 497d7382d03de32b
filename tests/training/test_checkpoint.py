"""Resume after a kill or a signal: the same weights, bit for bit, as a training never
interrupted; a checkpoint that cannot be read is set aside, never trusted."""

import hashlib
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
FOUR_EPOCHS = {"train__epochs": 4, "trainer__compile": False}
CHECKPOINT = Path("data/checkpoints/train.pt")


def _weights(root) -> str:
    return hashlib.sha256((root / "data/model/weights.safetensors").read_bytes()).hexdigest()


def test_a_training_stopped_by_each_signal_and_killed_resumes_to_the_same_bits(
    prepared_slice, tmp_path
):
    """Ctrl-C (SIGINT) and a scheduler's preemption (SIGTERM) must never read as success:
    each ends with its own exit code and one line, the run KILLED and the checkpoint kept;
    after them and a kill -9, the resumed training ends bit-identical to an uninterrupted
    one, which itself started over an unreadable checkpoint, set aside, not trusted."""
    prepared, _ = prepared_slice
    whole = stage_folder(tmp_path / "whole", prepared, **FOUR_EPOCHS)
    (whole.root / CHECKPOINT).parent.mkdir()
    (whole.root / CHECKPOINT).write_bytes(random.Random(0).randbytes(4096))
    done = whole.run("train")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "weights_only" not in done.stdout + done.stderr
    (line,) = [x for x in done.stdout.splitlines() if "is not a checkpoint" in x]
    assert line.startswith(f"train: {CHECKPOINT} is not a checkpoint of this pipeline (")
    assert line.endswith("set aside as train.pt.unreadable, training starts from epoch 1")
    assert (whole.root / CHECKPOINT.with_name("train.pt.unreadable")).stat().st_size == 4096
    assert not (whole.root / CHECKPOINT).exists()  # removed once finished

    cut = stage_folder(tmp_path / "cut", prepared, **FOUR_EPOCHS)
    for epoch, sig in enumerate((signal.SIGINT, signal.SIGTERM, signal.SIGKILL), start=1):
        proc = cut.start("train", capture=True)
        _wait_for_checkpoint(proc, cut.root / CHECKPOINT, epoch)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == (-sig if sig == signal.SIGKILL else 128 + sig), err[-3000:]
        assert epoch == 1 or f"resuming after epoch {epoch - 1}" in out
        assert not (cut.data / "model").exists()
        (run,) = cut.runs()  # one run throughout, continued by each resume
        if sig != signal.SIGKILL:
            assert "Traceback" not in err
            assert err.strip().splitlines()[-1] == (
                f"stopped: training stopped by {signal.Signals(sig).name}; the same command "
                f"resumes it from the checkpoint {CHECKPOINT}"
            )
            assert run.info.status == "KILLED"

    again = cut.run("train")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming after epoch 3" in again.stdout
    assert _weights(cut.root) == _weights(whole.root)
    assert (cut.data / "metrics/train_history.csv").read_bytes() == (
        whole.data / "metrics/train_history.csv"
    ).read_bytes()
    client, (run,) = mlflow_runs(cut.db)
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(run.info.run_id, "val_acc")) == 4


def _saved_epochs(saved: Path) -> int:
    try:
        return torch.load(saved, weights_only=True)["epoch"] + 1  # Lightning counts from 0
    except (OSError, EOFError, RuntimeError):  # none yet, or being replaced
        return 0


def _wait_for_checkpoint(proc: subprocess.Popen, saved: Path, epoch: int) -> None:
    deadline = time.monotonic() + 300
    while _saved_epochs(saved) != epoch:
        assert proc.poll() is None and time.monotonic() < deadline, f"epoch {epoch} never ended"
        time.sleep(0.05)


def _save(path: Path, key: str = "abc") -> None:
    """A checkpoint as Lightning lays one out, holding the recorder's state."""
    recorder = {
        "key": key,
        "run_id": "r",
        "history": [{"epoch": 1}],
        "best_state": {"w": torch.ones(2)},
    }
    checkpoint.AtomicIO().save_checkpoint({"callbacks": {checkpoint.RECORDER: recorder}}, path)


@pytest.mark.parametrize(
    ("kind", "why"),
    [
        ("empty", "unreadable, EOFError"),
        ("truncated", "unreadable, RuntimeError"),
        ("random bytes", "unreadable, UnpicklingError"),
        ("other fields", "it holds other fields than a training checkpoint"),
        ("an object", "it holds objects other than tensors and plain values"),
    ],
)
def test_a_checkpoint_that_is_not_ours_is_set_aside_with_one_line(tmp_path, capsys, kind, why):
    path = tmp_path / "train.pt"
    whole = tmp_path / "whole.pt"
    _save(whole)
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
    assert checkpoint.recorded(path, "abc") is None
    (line,) = capsys.readouterr().out.splitlines()
    assert f"({why}" in line and "weights_only" not in line
    assert not path.exists() and (tmp_path / "train.pt.unreadable").is_file()


def test_a_checkpoint_for_another_config_is_not_used(tmp_path):
    _save(tmp_path / "c.pt")
    read = checkpoint.recorded(tmp_path / "c.pt", "abc")
    assert read["run_id"] == "r" and torch.equal(read["best_state"]["w"], torch.ones(2))
    assert checkpoint.recorded(tmp_path / "c.pt", "other") is None
    assert checkpoint.recorded(None, "abc") is None
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no partial file left
