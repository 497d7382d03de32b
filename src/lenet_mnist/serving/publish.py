"""Publishing: the run that trained the weights gets its test metrics, files, dataset and
served model, registered once per weights hash; the champion rules: docs/serving.md."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import LoggedModelStatus

from lenet_mnist.config.schema import Config
from lenet_mnist.serving import logged
from lenet_mnist.tracking import provenance, store

CHAMPION = "champion"
ACC_TAG = "test_acc"  # on each model version: what the champion is compared by


@dataclass(frozen=True)
class Published:
    run: store.TrackedRun  # the run that trained the weights, or one made for restored weights
    version: str | None  # its registered version, None when registration is off
    champion: bool  # whether that version now holds the alias
    new: bool  # False when these weights were published before: nothing was added
    weights_sha256: str
    promote: bool = True  # False in a DVC experiment, whose versions never take the alias

    def receipt(self, name: str | None, test_acc: float) -> str:
        """The publish stage's output: no run id or version, which differ between stores, so
        the same weights give the same receipt in every clone."""
        record = {"registered_model": name, "weights_sha256": self.weights_sha256}
        return json.dumps({**record, "test_acc": test_acc}, indent=2) + "\n"

    def lines(self, name: str | None) -> list[str]:
        """What the publish stage prints."""
        out = [self.run.where("publish")]
        if not self.new:
            holder = "a logged model" if self.version is None else f"{name} version {self.version}"
            return [*out, f"publish: {holder} holds these weights already{self._alias('the')}"]
        if self.version is None:
            return out
        return [*out, f"publish: registered {name} version {self.version}{self._alias('now the')}"]

    def _alias(self, champion: str) -> str:
        if self.champion:
            return f" ({champion} champion)"
        if not self.promote:
            return " (a DVC experiment: the champion alias stays where it is)"
        return " (the champion stays)" if self.version else ""


def publish(
    cfg: Config,
    weights: Path,
    prepared: Path,
    metrics: dict[str, Any],
    files: list[Path],
    run_id: str | None = None,
    promote: bool = True,
) -> Published:
    """Publish `weights` into the run that made them (`run_id`, else the newest tagged with
    them); `promote` False (a DVC experiment) registers without moving the alias."""
    mlflow = store.client(cfg.logger)
    digest = provenance.sha256(weights)
    started_ms = int(time.time() * 1000)
    name = cfg.logger.registered_model
    with logged.global_store(mlflow.tracking_uri):
        run = _run_of(mlflow, cfg, digest, run_id)
        logged.fail_abandoned(mlflow, run.experiment, started_ms)
        run.artifacts(*files)
        version = registered(mlflow, name, digest)
        new = version is None and not (name is None and logged_before(run, digest))
        if new:
            logged.dataset(run, prepared)
            info = logged.served(run, cfg.model.name, weights, prepared)
            if name is not None:
                tags = {ACC_TAG: str(metrics["test_acc"]), store.WEIGHTS_TAG: digest}
                version = register(mlflow, name, info, run.run_id, tags)
    # The test metrics go last: a publish that failed before them left none in the run,
    # and the same command completes it (finding the version it registered, if it did).
    run.metrics(test_metrics(metrics))
    crowned = version is not None and promote and crown(mlflow, name, version, metrics)
    if run.status() != "FINISHED":
        run.close()
    return Published(run, version, crowned, new, digest, promote)


def _run_of(mlflow: Any, cfg: Config, digest: str, run_id: str | None) -> store.TrackedRun:
    trained = f"tags.{store.WEIGHTS_TAG} = '{digest}'"  # the newest run that made these weights
    run_id = run_id or store.newest_run(mlflow, cfg.logger.experiment_name, trained)
    if run_id is not None:
        return store.TrackedRun(mlflow, run_id)
    # e.g. DVC restored the weights from its cache without training
    tags = {store.WEIGHTS_TAG: digest, "note": "weights restored, not trained"}
    return store.TrackedRun.create(mlflow, cfg.logger.experiment_name, tags=tags)


def test_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """test.json's numbers as MLflow metrics; a class with no test image has none."""
    per_class = metrics["per_class_acc"].items()
    classes = {f"test_acc_class_{c}": a for c, a in per_class if a is not None}
    return {"test_loss": metrics["test_loss"], "test_acc": metrics["test_acc"], **classes}


def logged_before(run: store.TrackedRun, digest: str) -> bool:
    """Whether a READY served model of these weights is logged already (registration off)."""
    found = logged.search(run.experiment, f"tags.{store.WEIGHTS_TAG} = '{digest}'")
    return any(m.name == logged.SERVED_MODEL and m.status == LoggedModelStatus.READY for m in found)


def registered(mlflow: Any, name: str | None, digest: str) -> str | None:
    """The version of `name` that holds these weights already, if one does."""
    if name is None:
        return None
    query = f"name = '{name}' and tags.{store.WEIGHTS_TAG} = '{digest}'"
    versions = mlflow.search_model_versions(query)
    return str(versions[0].version) if versions else None


def register(mlflow: Any, name: str, info: Any, run_id: str, tags: dict) -> str:
    """A new version of `name` for the served model `info` (mlflow.register_model would
    print its own lines on stderr beside publish's)."""
    with store.made_meanwhile():  # by a sweep's job beside this one
        mlflow.create_registered_model(name)
    made = mlflow.create_model_version(name, info.model_uri, run_id, tags, model_id=info.model_id)
    return str(made.version)  # MLflow gives a number or a string, by store


def crown(mlflow: Any, name: str, version: str, metrics: dict) -> bool:
    """Move the champion alias to `version` unless the champion is more accurate; whether it
    holds it. Of parallel sweep jobs, the last to compare sets it."""
    holder = mlflow.get_registered_model(name).aliases.get(CHAMPION)
    if holder is not None and str(holder) != version:
        best = mlflow.get_model_version(name, holder).tags.get(ACC_TAG)
        if best is not None and metrics["test_acc"] < float(best):
            return False
    mlflow.set_registered_model_alias(name, CHAMPION, version)
    return True
