"""train.py's own rules; the stage itself runs in test_pipeline_slice and test_sweep."""

import pytest

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
        assert history[-1].split(",")[1] == str(90 * SLICE["train__epochs"])  # optimizer steps
    assert weights[0] == weights[1]
