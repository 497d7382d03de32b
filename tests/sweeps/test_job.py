"""One Hydra job's objective, and an Optuna search (conf/hparams_search) run end to end."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lenet_mnist.config import parse
from lenet_mnist.config.schema import ObjectiveConfig
from lenet_mnist.sweeps import sweep
from lenet_mnist.sweeps.job import MISSED_S, objective
from lenet_mnist.tracking import store
from tests.conftest import hydra_train, mlflow_runs, new_store, sweep_overrides

TO_99 = ObjectiveConfig(metric="time_to_target", target=0.99)


def test_time_to_target_ranks_reached_first_then_faster_then_nearer():
    def value(acc: float, wall_s: float) -> float:
        return objective(TO_99, {"test_acc": acc, "train_wall_s": wall_s})

    assert value(0.99, 30.0) == 30.0 and value(0.995, 12.5) == 12.5  # the seconds themselves
    assert value(0.99, 20.0) < value(0.99, 30.0)  # faster beats slower
    assert value(0.995, 900_000.0) < value(0.9899, 1.0)  # any hit beats any miss
    assert value(0.98, 10.0) < value(0.97, 10.0) < value(0.10, 10.0)  # a wider miss is worse
    assert value(0.98, 10.0) < value(0.98, 20.0)  # equal misses: the faster first
    assert value(0.0, 1e5) < 102 * MISSED_S  # finite, whatever the shortfall


def test_test_acc_objective_is_the_test_accuracy():
    metrics = {"test_acc": 0.9876, "train_wall_s": 42.0}
    assert objective(ObjectiveConfig(metric="test_acc", target=0.99), metrics) == 0.9876


def _search_key(*overrides: str, epochs: str | None = None) -> str:
    """The sweep key of `-m hparams_search=optuna overrides...`, its epochs range replaced."""
    with initialize_config_dir(config_dir=str(parse.CONF_DIR), version_base="1.3"):
        cfg = compose("config", ["hparams_search=optuna", *overrides], return_hydra_config=True)
    if epochs is not None:  # a key with a dot: as a conf/hparams_search file would set it
        OmegaConf.set_readonly(cfg, False)
        cfg.hydra.sweeper.params["train.epochs"] = epochs
    return sweep.sweep_key(sweep.sweep_overrides(cfg))


def test_two_searches_typed_alike_get_their_own_sweep_key():
    """The search space is in the config, not on the command line, yet names the search;
    how many trials and how many at once do not, so more trials resume the same search."""
    key = _search_key()
    assert _search_key("hydra.sweeper.n_trials=40", "hydra.sweeper.n_jobs=2") == key
    assert _search_key("launcher=joblib", "paths.sweeps=/elsewhere") == key
    others = [
        _search_key(epochs="int(interval(2, 5))"),
        _search_key("train.epochs=1"),  # fixed on the command line: out of the search
        _search_key("hydra.sweeper.sampler.seed=7"),
        _search_key("hydra.sweeper.direction=maximize"),
        _search_key("objective.target=0.98"),
        _search_key("objective.metric=test_acc"),
    ]
    assert len({key, *others}) == 1 + len(others)


@pytest.mark.slow
def test_an_optuna_search_trains_children_and_a_rerun_replays_their_objective(
    prepared_slice, tmp_path
):
    """2 trials of one epoch on the slice (train.epochs=1 takes epochs out of the search)."""
    prepared, _ = prepared_slice
    db = new_store(tmp_path)
    search = ("hparams_search=optuna", "hydra.sweeper.n_trials=2")
    overrides = sweep_overrides(prepared, tmp_path / "search", *search)
    first = hydra_train(*overrides, cwd=tmp_path, db=db)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    best = _check_search(db, tmp_path / "search")

    again = hydra_train(*overrides, cwd=tmp_path, db=db)  # the same trials, found in MLflow
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("skipped: done before") == 2
    assert _check_search(db, tmp_path / "search") == best


def _check_search(db: str, folder: Path) -> dict:
    """One parent with 2 complete children; Optuna's best is the best child's objective."""
    client, runs = mlflow_runs(db)
    (parent,) = [r for r in runs if store.SWEEP_TAG in r.data.tags]
    assert parent.info.status == "FINISHED"
    assert "objective.metric=time_to_target" in parent.data.tags[store.OVERRIDES_TAG]
    kids = [r for r in runs if r.data.tags.get(store.PARENT_TAG) == parent.info.run_id]
    assert len(kids) == len(runs) - 1 == 2
    assert all(k.data.tags[store.COMPLETE_TAG] == "true" for k in kids)
    chosen = [(k.data.params["train.batch_size"], k.data.params["optimizer.lr"]) for k in kids]
    assert chosen[0] != chosen[1] and {k.data.params["train.epochs"] for k in kids} == {"1"}
    assert (folder / "report" / "report.html").is_file()
    assert {"summary.csv", "report.html"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)
    }

    results = OmegaConf.to_container(OmegaConf.load(folder / "optimization_results.yaml"))
    values = {objective(TO_99, k.data.metrics): k for k in kids}
    best = values[min(values)]
    assert results["best_value"] == min(values)
    assert results["best_params"] == {
        "train.batch_size": int(best.data.params["train.batch_size"]),
        "optimizer.lr": float(best.data.params["optimizer.lr"]),
    }
    return results
