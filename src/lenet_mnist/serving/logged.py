"""The models a training run logs to MLflow: the network in the PyTorch flavor and the
pyfunc that serves raw images, each with this package's code and pinned requirements.

"model": standardized 1x32x32 tensors in, 10 logits out. "digits": raw 28x28 images,
pixels 0-255, in; digits and probabilities out (lenet_mnist.serving.pyfunc).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

import lenet_mnist
from lenet_mnist.data import prepare
from lenet_mnist.model import networks
from lenet_mnist.serving import pyfunc
from lenet_mnist.tracking import provenance, store

NETWORK_MODEL, SERVED_MODEL = "model", "digits"  # names of the run's logged models
DATASET = "mnist-prepared"
PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
# What the global store's switch changes in the environment, put back as it was after it:
# a restored MLFLOW_TRACKING_URI would override logger.tracking_uri for the rest of a process.
RESTORED_ENV = (PROGRESS_BAR, "MLFLOW_TRACKING_URI")
# Explicit, so that MLflow does not load the model in a subprocess to infer them.
REQUIREMENTS = ("mlflow", "torch", "numpy", "pandas", "safetensors", "hydra-core", "pyyaml")


def dataset(run: store.TrackedRun, prepared: Path, stats: dict) -> None:
    """The prepared arrays as the run's input; MLflow keeps at most 36 digest characters."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource
    from mlflow.entities import DatasetInput, InputTag

    source = LocalArtifactDatasetSource(str(prepared))
    dataset = MetaDataset(source, name=DATASET, digest=stats["digest"][:12])
    context = InputTag("mlflow.data.context", "training")
    inputs = [DatasetInput(dataset._to_mlflow_entity(), tags=[context])]
    store.retry_locked(lambda: run.mlflow.log_inputs(run.run_id, datasets=inputs))


def network(run: store.TrackedRun, network: str, weights: Path, prepared: Path):
    """The plain nn.Module in the PyTorch flavor, with one real test image as its example."""
    import mlflow.pytorch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    net = networks.load(network, weights)
    example = np.array(prepare.read_split(prepared, "test")[0][:1])
    signature = ModelSignature(
        Schema([TensorSpec(np.dtype(np.float32), (-1, 1, 32, 32))]),
        Schema([TensorSpec(np.dtype(np.float32), (-1, 10))]),
    )
    return _log(
        run, NETWORK_MODEL, mlflow.pytorch, weights, pytorch_model=net, signature=signature,
        input_example=example, serialization_format="pickle",
        pickle_module=mlflow.pytorch.pickle_module,
    )  # fmt: skip


def served(run: store.TrackedRun, network: str, weights: Path, prepared: Path):
    """The pyfunc for raw 28x28 images, pixels 0-255; its example is a real raw test image."""
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec
    from mlflow.types.schema import Array, ColSpec

    stats = Path(prepared) / "stats.json"
    example = _raw_example(prepared)
    signature = ModelSignature(
        Schema([TensorSpec(np.dtype(np.float32), (-1, pyfunc.RAW_SIZE, pyfunc.RAW_SIZE))]),
        Schema([ColSpec("long", "digit"), ColSpec(Array("double"), "probabilities")]),
    )
    return _log(
        run, SERVED_MODEL, mlflow.pyfunc, weights, python_model=pyfunc.Digits(),
        artifacts={pyfunc.WEIGHTS: str(weights), pyfunc.STATS: str(stats)},
        model_config={pyfunc.NETWORK: network}, signature=signature, input_example=example,
    )  # fmt: skip


def _log(run: store.TrackedRun, name: str, flavor: ModuleType, weights: Path, **kwargs: Any):
    """Model.log into the run's own experiment, with this package's code and pinned needs.

    The logged model is created here because Model.log would put it in MLflow's active
    experiment, and evaluate keeps none active.
    """
    from mlflow.models import Model

    mlflow = run.mlflow
    experiment = store.retry_locked(lambda: mlflow.get_run(run.run_id)).info.experiment_id
    tags = {store.WEIGHTS_TAG: provenance.sha256(weights)}
    logged = store.retry_locked(
        lambda: mlflow.create_logged_model(experiment, name, run.run_id, tags=tags)
    )
    with global_store(mlflow.tracking_uri):
        return store.retry_locked(
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
    x = np.array(prepare.read_split(prepared, "test")[0][:1, 0, inner, inner])
    return np.round((x * stats["std"] + stats["mean"]) * 255).clip(0, 255).astype(np.float32)


@contextmanager
def global_store(uri: str) -> Iterator[None]:
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
