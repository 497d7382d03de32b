"""Publishing: what an MLflow user expects of a training run, as a step of its own.

The run that trained the weights (found by their SHA-256) gets the test metrics and
evaluate's files, the prepared data as its dataset input (the runs table's Dataset
column), and the served model (lenet_mnist.serving.logged); logged models that a killed
publish left PENDING are marked FAILED first. "digits" becomes a version
of `logger.registered_model`, and the alias `champion` moves to it when its test accuracy
is at least the champion's, so `models:/lenet-mnist@champion` is the best one published
from a workspace. A DVC experiment's publish registers its version but leaves the alias:
trying a config never changes what is served; committed or applied (`dvc exp apply`) and
published from the workspace (`dvc repro -f -s publish`), its version competes for it.

Idempotent: the registry holds one version per weights hash, so publishing the same
weights again (`dvc repro -f publish`, a run-cache restore) logs and registers nothing new.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lenet_mnist.config.schema import Config
from lenet_mnist.data import prepare
from lenet_mnist.serving import logged
from lenet_mnist.tracking import provenance, store

CHAMPION = "champion"
ACC_TAG = "test_acc"  # on each model version: what the champion is compared by


@dataclass(frozen=True)
class Published:
    run: store.TrackedRun  # the run that trained the weights, or one made for restored weights
    model_uri: str | None  # models:/<id> of the served pyfunc; None if it was published before
    version: str | None  # its registered version, None when registration is off
    champion: bool  # whether that version now holds the alias
    new: bool  # False when these weights were published before: nothing was added
    weights_sha256: str
    promote: bool = True  # False in a DVC experiment, whose versions never take the alias

    def receipt(self, name: str | None, test_acc: float) -> str:
        """The publish stage's output: which weights went to which registered model.

        No run id or version, which differ from store to store: the same weights give the
        same receipt in every clone, so DVC hashes nothing that is not a result."""
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
        """What became of the champion alias, for the version's line."""
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
    """Test metrics and files, dataset input, the served model and the registry entry, for the
    run that made `weights`; without `run_id` it is the newest run tagged with them.
    `promote` False (a DVC experiment) registers without moving the champion alias."""
    mlflow = store.client(cfg.logger)
    digest = provenance.sha256(weights)
    started_ms = int(time.time() * 1000)
    run = _run_of(mlflow, cfg, digest, run_id)
    logged.fail_abandoned(mlflow, run.experiment, started_ms)
    run.artifacts(*files)
    name = cfg.logger.registered_model
    version = registered(mlflow, name, digest)
    new = version is None and not (name is None and logged_before(mlflow, run, digest))
    model_uri = None
    if new:
        logged.dataset(run, prepared, prepare.read_stats(prepared))
        with logged.global_store(mlflow.tracking_uri):  # a version's source is read through it
            info = logged.served(run, cfg.model.name, weights, prepared)
            if name is not None:
                version = register(run, name, info, metrics, digest)
        model_uri = info.model_uri
    # The test metrics go last: a publish that failed before them left none in the run,
    # and the same command completes it (finding the version it registered, if it did).
    run.metrics(test_metrics(metrics))
    crowned = version is not None and promote and crown(mlflow, name, version, metrics)
    if run.status() != "FINISHED":
        run.close()
    return Published(run, model_uri, version, crowned, new, digest, promote)


def _run_of(mlflow: Any, cfg: Config, digest: str, run_id: str | None) -> store.TrackedRun:
    run_id = run_id or store.find_run(mlflow, cfg.logger.experiment_name, digest)
    if run_id is not None:
        return store.TrackedRun(mlflow, run_id)
    # e.g. DVC restored the weights from its cache without training
    tags = {store.WEIGHTS_TAG: digest, "note": "weights restored, not trained"}
    return store.TrackedRun.create(mlflow, cfg.logger.experiment_name, tags=tags)


def test_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """test.json's numbers as MLflow metrics; a class with no test image has none."""
    per_class = metrics["per_class_acc"].items()
    return {
        "test_loss": metrics["test_loss"],
        "test_acc": metrics["test_acc"],
        **{f"test_acc_class_{c}": a for c, a in per_class if a is not None},
    }


def logged_before(mlflow: Any, run: store.TrackedRun, digest: str) -> bool:
    """Whether the served model of these weights is logged already (registration off).

    Only a READY one counts: a PENDING or FAILED one never got its artifacts."""
    from mlflow.entities import LoggedModelStatus

    query = f"tags.{store.WEIGHTS_TAG} = '{digest}'"
    found = logged.models(mlflow, run.experiment, query)
    return any(m.name == logged.SERVED_MODEL and m.status == LoggedModelStatus.READY for m in found)


def registered(mlflow: Any, name: str | None, digest: str) -> str | None:
    """The version of `name` that holds these weights already, if one does."""
    if name is None:
        return None
    versions = store.retry_locked(lambda: mlflow.search_model_versions(f"name = '{name}'"))
    return next((str(v.version) for v in versions if v.tags.get(store.WEIGHTS_TAG) == digest), None)


def register(run: store.TrackedRun, name: str, info: Any, metrics: dict, digest: str) -> str:
    """A new version of `name` for the served model `info`, tagged with what the champion is
    compared by and the weights it holds."""
    from mlflow.exceptions import MlflowException

    mlflow = run.mlflow
    try:
        store.retry_locked(lambda: mlflow.create_registered_model(name))
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    made = store.retry_locked(
        lambda: mlflow.create_model_version(
            name,
            info.model_uri,
            run.run_id,
            tags={ACC_TAG: str(metrics["test_acc"]), store.WEIGHTS_TAG: digest},
            model_id=info.model_id,
        )
    )
    return str(made.version)  # MLflow gives a number or a string, by store


def crown(mlflow: Any, name: str, version: str, metrics: dict) -> bool:
    """Move the champion alias to `version` unless the champion is better; whether it holds it.

    Parallel sweep jobs may register at once; the last to compare sets the alias."""
    holder, best = champion(mlflow, name)
    if holder == version or (best is not None and metrics["test_acc"] < best):
        return holder == version
    store.retry_locked(lambda: mlflow.set_registered_model_alias(name, CHAMPION, version))
    return True


def champion(mlflow: Any, name: str) -> tuple[str | None, float | None]:
    """The version that holds the alias and its test accuracy, or None for each."""
    from mlflow.exceptions import MlflowException

    try:
        holder = store.retry_locked(lambda: mlflow.get_model_version_by_alias(name, CHAMPION))
    except MlflowException as err:
        if err.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        return None, None
    acc = float(holder.tags[ACC_TAG]) if ACC_TAG in holder.tags else None
    return str(holder.version), acc
