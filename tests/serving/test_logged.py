"""Publishing switches MLflow's global store for a moment; the process must not notice."""

import os

import pytest
from sqlalchemy import event

from lenet_mnist.serving import logged
from lenet_mnist.tracking import store
from tests.conftest import new_store


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


def test_a_dataset_logged_by_another_job_meanwhile_is_linked_not_fatal(prepared_slice, tmp_path):
    """MLflow looks a dataset up, then inserts it: a sweep's job that logs the same data
    between the two (the jobs beside it do) must not fail the run. The other job's write is
    put between them with SQLAlchemy's own event hook."""
    db = new_store(tmp_path)
    # Two waits, two URIs: MLflow keeps a store (and its engine) per URI, as per process
    mine, theirs = (store.TrackedRun.create(store.open_store(db, s), "lenet-mnist") for s in (1, 2))
    cut_in = []

    def before(conn, cursor, statement: str, *_) -> None:
        if statement.startswith("INSERT INTO datasets") and not cut_in:
            cut_in.append(theirs)
            logged.dataset(theirs, prepared_slice[0])

    event.listen(mine.mlflow._tracking_client.store.engine, "before_cursor_execute", before)
    logged.dataset(mine, prepared_slice[0])
    assert cut_in  # the other job's insert did come between
    for run in (mine, theirs):
        (used,) = run.mlflow.get_run(run.run_id).inputs.dataset_inputs
        assert used.dataset.name == logged.DATASET
