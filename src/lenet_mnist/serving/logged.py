"""The model a training run logs to MLflow: the pyfunc that serves raw images, with this
package's code and pinned requirements.

"digits": raw 28x28 images, pixels 0-255, in; digits and probabilities out
(lenet_mnist.serving.pyfunc). It is logged from code (serving/digits_code.py) with the
weights as a safetensors artifact, so loading it unpickles nothing. No PyTorch-flavor copy
of the network is logged: MLflow's loads through pickle (torch.load) or a torch.export
graph, and importing mlflow.pytorch loads Lightning; the weights artifact and
`networks.load` give the same nn.Module.

A process killed while it logs leaves its logged model PENDING; the next publish marks it
FAILED (`fail_abandoned`), as store.close_dead_runs does for runs.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

import lenet_mnist
from lenet_mnist.data import prepare
from lenet_mnist.serving import pyfunc
from lenet_mnist.tracking import provenance, store

SERVED_MODEL = "digits"  # the name of the run's logged model
DATASET = "mnist-prepared"
# The file MLflow runs to build the pyfunc: a path, as importing it would build one here.
MODEL_CODE = Path(__file__).with_name("digits_code.py")
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
        run, SERVED_MODEL, mlflow.pyfunc, weights, python_model=str(MODEL_CODE),
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
    logged = pending(mlflow, run.experiment, name, run.run_id, weights)
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


def pending(mlflow: Any, experiment: str, name: str, run_id: str | None, weights: Path) -> Any:
    """The logged model that Model.log fills in, PENDING until it has: tagged with the
    weights and with the process that writes it, so that a later publish can tell when
    that process died mid-log (`fail_abandoned`)."""
    tags = {store.WEIGHTS_TAG: provenance.sha256(weights), **store.writer_tags()}
    return store.retry_locked(
        lambda: mlflow.create_logged_model(experiment, name, run_id, tags=tags)
    )


def fail_abandoned(mlflow: Any, experiment: str, started_ms: int | None = None) -> list[str]:
    """Mark FAILED the experiment's PENDING logged models that no process will finish.

    MLflow creates a logged model PENDING and makes it READY once its artifacts are in; a
    `kill -9` in between leaves it PENDING for good. Abandoned: its writer, on this host,
    is gone; or it names no writer and was created before `started_ms` (this publish's
    start). A PENDING model of a live process (a concurrent publish), or of one on another
    host, which this process cannot see, is left alone. Returns the ids marked FAILED.
    """
    from mlflow.entities import LoggedModelStatus

    started_ms = int(time.time() * 1000) if started_ms is None else started_ms
    pending = [m for m in models(mlflow, experiment) if m.status == LoggedModelStatus.PENDING]
    failed = [m.model_id for m in pending if _abandoned(m.tags, m.creation_timestamp, started_ms)]
    for model_id in failed:
        store.retry_locked(lambda m=model_id: mlflow.finalize_logged_model(m, "FAILED"))
    return failed


def models(mlflow: Any, experiment: str, query: str | None = None) -> list[Any]:
    """Every page of the experiment's logged models that match `query`.

    No status in `query`: a sqlite store compares `status = 'READY'` with the number it
    stores and matches nothing, so callers filter on `status` themselves.
    """
    found, token = [], None
    while True:
        page = store.retry_locked(
            lambda t=token: mlflow.search_logged_models([experiment], query, page_token=t)
        )
        found += page
        if not (token := page.token):
            return found


def _abandoned(tags: dict[str, str], created_ms: int, started_ms: int) -> bool:
    if store.HOST_TAG not in tags or not tags.get(store.PID_TAG, "").isdigit():
        return created_ms < started_ms  # no writer named: older than this publish
    return store.writer_gone(tags)


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

    Quiet too: no download bars and no INFO line for its own check of the input example.
    """
    import mlflow

    before, saved = mlflow.get_tracking_uri(), {k: os.environ.get(k) for k in RESTORED_ENV}
    mlflow.set_tracking_uri(uri)
    os.environ[PROGRESS_BAR] = "false"
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    pyfunc_log.addFilter(_no_example_check)
    try:
        yield
    finally:
        pyfunc_log.removeFilter(_no_example_check)
        mlflow.set_tracking_uri(before)
        for key, value in saved.items():  # set_tracking_uri writes MLFLOW_TRACKING_URI too
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _no_example_check(record: logging.LogRecord) -> bool:
    return "Validating input example" not in record.getMessage()


def _package() -> str:
    """This package's source folder: the model carries the code that defines it."""
    return str(Path(lenet_mnist.__file__).parent)


def _pins() -> list[str]:
    """The installed versions, without a local label such as torch's +cpu."""
    return [f"{p}=={importlib.metadata.version(p).split('+')[0]}" for p in REQUIREMENTS]
