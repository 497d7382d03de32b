"""What training shows: the epoch lines, and the live bar on a terminal."""

import re

import pytest

from lenet_mnist.training.progress import epoch_line
from tests.conftest import stage_folder


def test_an_epoch_line_says_where_training_is_and_how_it_goes():
    row = {
        "train_loss": 0.04123,
        "train_acc": 0.98731,
        "val_loss": 0.045,
        "val_acc": 0.9862,
        "lr": 0.000812,
        "epoch_time_s": 7.44,
        "samples_per_s": 7392.4,
    }
    assert epoch_line(3, 10, 2580, 8600, row) == (
        "epoch  3/10  iteration 2,580/8,600  train loss 0.0412 acc 98.73%  "
        "val loss 0.0450 acc 98.62%  lr 8.12e-04  7.4 s  7,392 img/s"
    )


@pytest.mark.slow
def test_on_a_terminal_the_live_bar_counts_iterations_not_lightning_steps(prepared_slice, tmp_path):
    """Four batches per Lightning call: the bar must still count the 90 updates of an epoch."""
    overrides = {
        "train__epochs": 1,
        "trainer__compile": False,
        "trainer__batch_group": 4,
        "trainer__enable_progress_bar": True,
    }
    folder = stage_folder(tmp_path, prepared_slice[0], **overrides)
    # rich's switches for a terminal it cannot see
    done = folder.run("train", TTY_COMPATIBLE="1", TTY_INTERACTIVE="1")
    assert done.returncode == 0, done.stderr[-3000:]
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", done.stdout)
    counts = re.findall(r"(\d+)/(\d+) \[[^]]*loss=([^]]+)\]", plain)
    assert counts, plain[-2000:]
    assert {total for _, total, _ in counts} == {"90"}, counts  # 4,500 images / 50, not 23 groups
    assert max(int(n) for n, _, _ in counts) >= 80
    assert any(re.fullmatch(r"\d\.\d{4}", loss) for _, _, loss in counts)  # the running loss
    assert "epoch 1/1  iteration 90/90  " in plain  # the permanent line survives the bar
