"""The probes measure beside training and change nothing it learns."""

import csv

import pytest

from lenet_mnist.config import parse
from lenet_mnist.errors import PipelineError
from lenet_mnist.training import probes
from lenet_mnist.training.probes import Reading, first_reached, target_key
from tests.conftest import mlflow_runs, stage_folder
from tests.trained import trained_slice


def test_each_target_is_timed_at_its_first_reading_and_epoch_end():
    readings = [
        Reading(iteration=10, epoch=1, seconds=1.0, acc=0.95),
        Reading(iteration=20, epoch=1, seconds=2.0, acc=0.97),  # end of epoch 1
        Reading(iteration=30, epoch=2, seconds=3.5, acc=0.985),  # between epochs
        Reading(iteration=40, epoch=2, seconds=4.5, acc=0.984),  # end of epoch 2
        Reading(iteration=60, epoch=3, seconds=7.0, acc=0.986),  # end of epoch 3
    ]
    got = first_reached(readings, [0.95, 0.985, 0.99])
    assert got == {
        "iterations_to_val_acc_0.95": 10,
        "seconds_to_val_acc_0.95": 1.0,
        "epochs_to_val_acc_0.95": 1,
        "iterations_to_val_acc_0.985": 30,
        "seconds_to_val_acc_0.985": 3.5,
        "epochs_to_val_acc_0.985": 3,  # epoch 2 ended below it
    }  # 0.99 was never reached, so it has no metric at all
    assert target_key(0.985) == "val_acc_0.985"


def test_validation_between_epochs_is_due_each_interval_until_the_top_target():
    cfg = parse.validate(parse.compose()).train
    cfg.val_every_n_steps, cfg.targets = 10, [0.9, 0.95]
    steps = [(0, 4), (4, 8), (8, 12), (12, 16), (16, 20), (20, 24)]
    assert [probes.due(cfg, a, b, []) for a, b in steps] == [False, False, True, False, True, False]
    below = [Reading(iteration=20, epoch=1, seconds=1.0, acc=0.94)]
    assert probes.due(cfg, 28, 32, below)  # below the top target: still due
    reached = [*below, Reading(iteration=30, epoch=1, seconds=2.0, acc=0.95)]
    assert not probes.due(cfg, 38, 42, reached) and not probes.due(cfg, 48, 52, reached)


def test_a_noise_probe_larger_than_the_training_split_is_refused_before_the_fit():
    cfg = parse.validate(parse.compose()).train
    cfg.noise_probe.batches, cfg.noise_probe.batch_size = 4, 8
    probes.check(cfg, 32)
    with pytest.raises(PipelineError, match="needs 4 x 8 training images, more than the 31"):
        probes.check(cfg, 31)


def _train(root, prepared, **overrides):
    folder = stage_folder(root, prepared, **{"trainer__compile": False, **overrides})
    done = folder.run("train")
    assert done.returncode == 0, done.stderr[-3000:]
    client, (run,) = mlflow_runs(folder.db)
    return folder.data, client, run


@pytest.mark.slow
def test_probes_on_or_off_the_outputs_are_bit_identical(prepared_slice, tmp_path_factory):
    """Every probe on, against the shared slice's training, which has every probe off."""
    off = trained_slice(prepared_slice, tmp_path_factory)
    train = parse.load(off["params"]).train
    assert train.noise_probe.batches == 0 and train.val_every_n_steps is None
    assert not train.test_every_epoch
    on = {
        "train__val_every_n_steps": 25,
        "train__test_every_epoch": True,
        "train__targets": [0.5, 0.8, 0.9999],
        "train__noise_probe__batches": 8,
    }
    data, client, run = _train(tmp_path_factory.mktemp("probes"), prepared_slice[0], **on)
    for output in ("model/weights.safetensors", "metrics/train_history.csv"):
        assert (data / output).read_bytes() == (off["data"] / output).read_bytes(), output

    def series(key):
        return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]

    # Lightning calls a step with 4 updates (trainer.batch_group), 90 updates per epoch:
    # the probe reads at the first call's end at or past each multiple of 25 updates.
    ends = [e * 90 + min(u, 90) for e in range(2) for u in range(4, 92, 4)]
    expected = sorted({next(end for end in ends if end >= m) for m in range(25, 180, 25)})
    assert (
        [step for step, _ in series("step_val_acc")] == expected == [28, 52, 76, 102, 126, 150, 178]
    )
    history = list(csv.DictReader((data / "metrics/train_history.csv").open()))
    assert [s for s, _ in series("noise_scale")] == [int(r["iteration"]) for r in history]
    assert all(0 < v < float("inf") for _, v in series("noise_scale"))
    assert len(series("epoch_test_acc")) == len(history)
    metrics = run.data.metrics
    first = next(r for r in history if float(r["val_acc"]) >= 0.8)
    assert metrics["epochs_to_val_acc_0.8"] == int(first["epoch"])
    assert metrics["iterations_to_val_acc_0.8"] <= int(first["iteration"])
    assert "iterations_to_val_acc_0.9999" not in metrics
    _, (run_off,) = mlflow_runs(off["db"])
    assert not any(k.startswith(("noise", "epoch_test", "step_val")) for k in run_off.data.metrics)
