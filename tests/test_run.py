"""`python -m lenet_mnist.run` as a user types it: bad input is one line and leaves nothing."""

import pytest

from .conftest import hydra_train


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["train.epochs=0"], "error: train.epochs=0 is not allowed; use an integer >= 1"),
        (
            ["train.batch_sizee=64"],
            "error: train.batch_sizee is not a config key; did you mean train.batch_size?",
        ),
        (
            ["+train.batch_sizee=64"],
            "error: train.batch_sizee is not a config key; did you mean train.batch_size?",
        ),
        (["train.batch_size=abc"], "error: train.batch_size=abc is not allowed; use an integer"),
        (["launcher=nowhere"], "error: In 'config': Could not find 'launcher/nowhere'"),
    ],
)
def test_a_bad_override_stops_a_run_with_one_line_and_leaves_nothing(tmp_path, overrides, line):
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = hydra_train(*overrides, f"paths.runs={tmp_path / 'runs'}", cwd=tmp_path, db=db)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [line]
    assert not (tmp_path / "mlflow.db").exists()
    assert list((tmp_path / "runs").glob("*")) == []  # Hydra's run folder is removed too
