"""What an MLflow user expects of a training run: its data set, its models, the registry.

Evaluate calls `publish` on the run that trained the weights. The run gets the prepared
data as a dataset input (the runs table's Dataset column), the network in MLflow's
PyTorch flavor ("model": standardized 1x32x32 tensors in, 10 logits out) and the pyfunc
that serves raw images ("digits", lenet_mnist.served). "digits" becomes a new version of
`logger.registered_model`, and the alias `champion` moves to it when its test accuracy
is at least the champion's, so `models:/lenet-mnist@champion` is always the best one.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

import lenet_mnist
from lenet_mnist import model, prepare, provenance, served, tracking
from lenet_mnist.schema import Config

NETWORK_MODEL, SERVED_MODEL = "model", "digits"  # names of the run's logged models
CHAMPION = "champion"
ACC_TAG = "test_acc"  # on each model version: what the champion is compared by
DATASET = "mnist-prepared"
PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
# What the global store's switch changes in the environment, put back as it was after it:
# a restored MLFLOW_TRACKING_URI would override logger.tracking_uri for the rest of a process.
RESTORED_ENV = (PROGRESS_BAR, "MLFLOW_TRACKING_URI")
# Explicit, so that MLflow does not load the model in a subprocess to infer them.
REQUIREMENTS = ("mlflow", "torch", "numpy", "pandas", "safetensors", "hydra-core", "pyyaml")


class Published(NamedTuple):
    model_uri: str  # models:/<id> of the served pyfunc
    version: str | None  # its registered version, None when registration is off
    champion: bool  # whether that version now holds the alias


def publish(
    run: tracking.Recorder, cfg: Config, weights: Path, prepared: Path, acc: float
) -> Published:
    """Dataset input, both models and the registry entry, for the run that made `weights`."""
    stats = prepare.read_stats(prepared)
    log_dataset(run, prepared, stats)
    name = cfg.logger.registered_model
    with _tracking_uri(run.mlflow.tracking_uri):
        log_network(run, cfg.model.name, weights, prepared)
        info = log_served(run, cfg.model.name, weights, prepared)
        if name is None:
            return Published(info.model_uri, None, False)
        return register(run, name, info, acc)


def log_dataset(run: tracking.Recorder, prepared: Path, stats: dict) -> None:
    """The prepared arrays as the run's input; MLflow keeps at most 36 digest characters."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource
    from mlflow.entities import DatasetInput, InputTag

    source = LocalArtifactDatasetSource(str(prepared))
    dataset = MetaDataset(source, name=DATASET, digest=stats["digest"][:12])
    context = InputTag("mlflow.data.context", "training")
    inputs = [DatasetInput(dataset._to_mlflow_entity(), tags=[context])]
    tracking.retry_locked(lambda: run.mlflow.log_inputs(run.run_id, datasets=inputs))


def log_network(run: tracking.Recorder, network: str, weights: Path, prepared: Path):
    """The plain nn.Module in the PyTorch flavor, with one real test image as its example."""
    import mlflow.pytorch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    net = model.load(network, weights)
    example = np.array(prepare.load(prepared, "test")[0][:1])
    signature = ModelSignature(
        Schema([TensorSpec(np.dtype(np.float32), (-1, 1, 32, 32))]),
        Schema([TensorSpec(np.dtype(np.float32), (-1, 10))]),
    )
    return _log(
        run, NETWORK_MODEL, mlflow.pytorch, weights, pytorch_model=net, signature=signature,
        input_example=example, serialization_format="pickle",
        pickle_module=mlflow.pytorch.pickle_module,
    )  # fmt: skip


def log_served(run: tracking.Recorder, network: str, weights: Path, prepared: Path):
    """The pyfunc for raw 28x28 images, pixels 0-255; its example is a real raw test image."""
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec
    from mlflow.types.schema import Array, ColSpec

    stats = Path(prepared) / "stats.json"
    example = _raw_example(prepared)
    signature = ModelSignature(
        Schema([TensorSpec(np.dtype(np.float32), (-1, served.RAW_SIZE, served.RAW_SIZE))]),
        Schema([ColSpec("long", "digit"), ColSpec(Array("double"), "probabilities")]),
    )
    return _log(
        run, SERVED_MODEL, mlflow.pyfunc, weights, python_model=served.Digits(),
        artifacts={served.WEIGHTS: str(weights), served.STATS: str(stats)},
        model_config={served.NETWORK: network}, signature=signature, input_example=example,
    )  # fmt: skip


def _log(run: tracking.Recorder, name: str, flavor: ModuleType, weights: Path, **kwargs: Any):
    """Model.log into the run's own experiment, with this package's code and pinned needs.

    The logged model is created here because Model.log would put it in MLflow's active
    experiment, and evaluate keeps none active.
    """
    from mlflow.models import Model

    mlflow = run.mlflow
    experiment = tracking.retry_locked(lambda: mlflow.get_run(run.run_id)).info.experiment_id
    tags = {tracking.WEIGHTS_TAG: provenance.sha256(weights)}
    logged = tracking.retry_locked(
        lambda: mlflow.create_logged_model(experiment, name, run.run_id, tags=tags)
    )
    with _tracking_uri(mlflow.tracking_uri):
        return tracking.retry_locked(
            lambda: Model.log(
                artifact_path=None,
                name=name,
                flavor=flavor,
                run_id=run.run_id,
                model_id=logged.model_id,
                code_paths=[_package()],
                pip_requirements=_pins(),
                **kwargs,
            )  # fmt: skip
        )


def _raw_example(prepared: Path) -> np.ndarray:
    """The first test image back in raw pixels (prepare's steps undone), as float32 0-255."""
    stats = prepare.read_stats(prepared)
    inner = slice(prepare.PAD, -prepare.PAD)
    x = np.array(prepare.load(prepared, "test")[0][:1, 0, inner, inner])
    return np.round((x * stats["std"] + stats["mean"]) * 255).clip(0, 255).astype(np.float32)


def register(run: tracking.Recorder, name: str, info, acc: float) -> Published:
    """A new version of `name`; the champion alias moves to it unless the champion is better.

    Parallel sweep jobs may register at once; the last to compare sets the alias.
    """
    from mlflow.exceptions import MlflowException

    mlflow = run.mlflow
    try:
        tracking.retry_locked(lambda: mlflow.create_registered_model(name))
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    made = tracking.retry_locked(
        lambda: mlflow.create_model_version(
            name, info.model_uri, run.run_id, tags={ACC_TAG: str(acc)}, model_id=info.model_id
        )
    )
    version = str(made.version)  # MLflow gives a number or a string, by store
    best = champion_acc(mlflow, name)
    takes = best is None or acc >= best
    if takes:
        tracking.retry_locked(lambda: mlflow.set_registered_model_alias(name, CHAMPION, version))
    return Published(info.model_uri, version, takes)


def champion_acc(mlflow, name: str) -> float | None:
    """The test accuracy of the version that holds the alias, or None if none holds it."""
    from mlflow.exceptions import MlflowException

    try:
        champion = tracking.retry_locked(lambda: mlflow.get_model_version_by_alias(name, CHAMPION))
    except MlflowException as err:
        if err.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        return None
    return float(champion.tags[ACC_TAG]) if ACC_TAG in champion.tags else None


@contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    """Model.log, and the registry as it looks up a logged model, use MLflow's global store:
    point it at the run's for these calls only.

    Quiet too: no download bars for its own check of the input example, and no warning
    that pickles run code (these are the package's own classes, logged by its own stage).
    """
    import mlflow

    before, saved = mlflow.get_tracking_uri(), {k: os.environ.get(k) for k in RESTORED_ENV}
    mlflow.set_tracking_uri(uri)
    os.environ[PROGRESS_BAR] = "false"
    loggers = [logging.getLogger(f"mlflow.{flavor}") for flavor in ("pytorch", "pyfunc")]
    for logger in loggers:
        logger.addFilter(_no_pickle_warning)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
        for key, value in saved.items():  # set_tracking_uri writes MLFLOW_TRACKING_URI too
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for logger in loggers:
            logger.removeFilter(_no_pickle_warning)


def _no_pickle_warning(record: logging.LogRecord) -> bool:
    return "ickle" not in record.getMessage()


def _package() -> str:
    """This package's source folder: the model carries the code that defines it."""
    return str(Path(lenet_mnist.__file__).parent)


def _pins() -> list[str]:
    """The installed versions, without a local label such as torch's +cpu."""
    return [f"{p}=={importlib.metadata.version(p).split('+')[0]}" for p in REQUIREMENTS]
