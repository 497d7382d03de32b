"""The pyfunc "digits" a training run logs to MLflow, from code, with safetensors weights
(docs/serving.md). A logged model its killed writer left PENDING is marked FAILED later."""

from __future__ import annotations

import importlib.metadata
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import LocalArtifactDatasetSource
from mlflow.entities import DatasetInput, InputTag, LoggedModelStatus
from mlflow.models import Model, ModelSignature
from mlflow.types import Schema, TensorSpec
from mlflow.types.schema import Array, ColSpec

import lenet_mnist
from lenet_mnist.data import prepare
from lenet_mnist.serving import pyfunc
from lenet_mnist.tracking import provenance, store

SERVED_MODEL = "digits"  # the name of the run's logged model
DATASET = "mnist-prepared"
# The file MLflow runs to build the pyfunc: a path, as importing it would build one here.
MODEL_CODE = Path(__file__).with_name("digits_code.py")
PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
URI_ENV = "MLFLOW_TRACKING_URI"
# Explicit, so that MLflow does not load the model in a subprocess to infer them.
REQUIREMENTS = ("mlflow", "torch", "numpy", "pandas", "safetensors", "hydra-core", "pyyaml")


def dataset(run: store.TrackedRun, prepared: Path) -> None:
    """The prepared arrays as the run's input; MLflow keeps at most 36 digest characters."""
    digest = prepare.read_stats(prepared)["digest"][:12]
    dataset = MetaDataset(LocalArtifactDatasetSource(str(prepared)), name=DATASET, digest=digest)
    context = InputTag("mlflow.data.context", "training")
    inputs = [DatasetInput(dataset._to_mlflow_entity(), tags=[context])]
    with store.made_meanwhile():  # by a sweep's job beside this one: then found and linked
        return run.mlflow.log_inputs(run.run_id, datasets=inputs)
    run.mlflow.log_inputs(run.run_id, datasets=inputs)


def served(run: store.TrackedRun, network: str, weights: Path, prepared: Path) -> Any:
    """Log the pyfunc into the run's experiment (Model.log alone would pick MLflow's active
    one, and evaluate keeps none); its example is a real raw test image. Needs global_store."""
    signature = ModelSignature(
        Schema([TensorSpec(np.dtype(np.float32), (-1, pyfunc.RAW_SIZE, pyfunc.RAW_SIZE))]),
        Schema([ColSpec("long", "digit"), ColSpec(Array("double"), "probabilities")]),
    )
    model_id = pending(run.mlflow, run.experiment, SERVED_MODEL, run.run_id, weights).model_id
    pins = [f"{p}=={importlib.metadata.version(p).split('+')[0]}" for p in REQUIREMENTS]
    return Model.log(
        artifact_path=None, name=SERVED_MODEL, flavor=mlflow.pyfunc, run_id=run.run_id,
        model_id=model_id, python_model=str(MODEL_CODE), signature=signature,
        input_example=_raw_example(prepared), model_config={pyfunc.NETWORK: network},
        artifacts={pyfunc.WEIGHTS: str(weights), pyfunc.STATS: str(prepared / "stats.json")},
        code_paths=[str(Path(lenet_mnist.__file__).parent)],  # the code that defines it
        pip_requirements=pins,  # without a local label such as torch's +cpu
    )  # fmt: skip


def pending(mlflow: Any, experiment: str, name: str, run_id: str | None, weights: Path) -> Any:
    """The logged model Model.log fills in, PENDING until then, tagged with the weights and
    its writer, so that a later publish can tell that it died."""
    tags = {store.WEIGHTS_TAG: provenance.sha256(weights), **store.writer_tags()}
    return mlflow.create_logged_model(experiment, name, run_id, tags=tags)


def fail_abandoned(mlflow: Any, experiment: str, started_ms: int) -> None:
    """Mark FAILED the PENDING logged models whose writer on this host is gone, or that name
    none and are older than this publish; another host's are left alone. Needs global_store."""
    for model in (m for m in search(experiment) if m.status == LoggedModelStatus.PENDING):
        tags = model.tags
        named = store.HOST_TAG in tags and tags.get(store.PID_TAG, "").isdigit()
        if store.writer_gone(tags) if named else model.creation_timestamp < started_ms:
            mlflow.finalize_logged_model(model.model_id, "FAILED")


def search(experiment: str, query: str | None = None) -> list[Any]:
    """The experiment's logged models matching `query` (never a status: sqlite stores it as a
    number, and `status = 'READY'` matches nothing), every page. Needs global_store."""
    return mlflow.search_logged_models([experiment], query, output_format="list")


def _raw_example(prepared: Path) -> np.ndarray:
    """The first test image back in raw pixels (prepare's steps undone), as float32 0-255."""
    stats = prepare.read_stats(prepared)
    inner = slice(prepare.PAD, -prepare.PAD)
    x = np.array(prepare.read_split(prepared, "test")[0][:1, 0, inner, inner])
    return np.round((x * stats["std"] + stats["mean"]) * 255).clip(0, 255).astype(np.float32)


@contextmanager
def global_store(uri: str) -> Iterator[None]:
    """MLflow's global store at `uri` for these calls only, quiet (no download bars, no INFO
    on the input example). The environment is put back: the MLFLOW_TRACKING_URI that
    set_tracking_uri writes would override logger.tracking_uri for the rest of a process."""
    before, pyfunc_log = mlflow.get_tracking_uri(), logging.getLogger("mlflow.pyfunc")
    level, saved = pyfunc_log.level, {k: os.environ.get(k) for k in (PROGRESS_BAR, URI_ENV)}
    os.environ[PROGRESS_BAR] = "false"
    mlflow.set_tracking_uri(uri)
    pyfunc_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        pyfunc_log.setLevel(level)
        mlflow.set_tracking_uri(before)
        os.environ.update({name: value for name, value in saved.items() if value is not None})
        for name in (name for name, value in saved.items() if value is None):
            os.environ.pop(name, None)
