"""Publishing switches MLflow's global store for a moment; the process must not notice."""

import os

import pytest

from lenet_mnist.serving import logged


@pytest.mark.parametrize("before", [None, "sqlite:///elsewhere.db"])
def test_the_switch_of_store_leaves_the_environment_as_it_was(tmp_path, monkeypatch, before):
    if before is None:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", before)
    inside = f"sqlite:///{tmp_path / 'run.db'}"
    with logged.global_store(inside):
        assert os.environ["MLFLOW_TRACKING_URI"] == inside  # what MLflow itself sets
    assert os.environ.get("MLFLOW_TRACKING_URI") == before
    assert logged.PROGRESS_BAR not in os.environ
