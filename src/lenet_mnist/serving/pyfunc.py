"""The model as a user serves it: raw 28x28 MNIST images in, digits and probabilities out,
through prepare's own steps with the weights' stats.json, so a test image gives the test set's
bits. Pixels outside 0-255 or NaN are refused: the network would still name a digit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel

from lenet_mnist.data import prepare
from lenet_mnist.errors import PipelineError
from lenet_mnist.model import inference, networks

RAW_SIZE = 28
MAX_PIXEL = 255
WEIGHTS, STATS = "weights", "stats"  # the pyfunc's artifact keys
NETWORK = "network"  # the pyfunc's model_config key: a name in networks.MODELS


def to_network_input(images: Any, mean: float, std: float) -> np.ndarray:
    """(N, 28, 28) pixels 0-255 -> (N, 1, 32, 32) float32 as prepare makes them; float32 holds
    each integer 0-255 exactly, so JSON numbers and uint8 arrays agree."""
    pixels = np.asarray(images, dtype=np.float32)
    if pixels.ndim != 3 or pixels.shape[1:] != (RAW_SIZE, RAW_SIZE):
        raise PipelineError(f"images of shape {pixels.shape}; expected (N, 28, 28) pixels 0-255")
    bad = ~((pixels >= 0) & (pixels <= MAX_PIXEL))  # False for NaN too
    if bad.any():
        image, row, col = (int(i) for i in np.argwhere(bad)[0])
        raise PipelineError(
            f"image {image} has pixel {pixels[image, row, col]:g} at row {row}, column {col}; "
            f"pixels must be finite numbers from 0 to {MAX_PIXEL}"
        )
    return prepare.standardize(prepare.pad_and_scale(pixels), mean, std)


class Reader:
    """The network with the statistics it was trained on: raw images to probabilities."""

    def __init__(self, network: str, weights: Path, stats: Path) -> None:
        self.net = networks.load(network, weights)
        normalization = json.loads(Path(stats).read_text())
        self.mean, self.std = normalization["mean"], normalization["std"]

    def probabilities(self, images: Any) -> np.ndarray:
        """Softmax of the logits, (N, 10) float32: one row per image."""
        x = to_network_input(images, self.mean, self.std)
        return torch.softmax(inference.logits(self.net, x), dim=1).numpy()


class Digits(PythonModel):
    """The pyfunc registered and served, logged as code (digits_code.py)."""

    def load_context(self, context: Any) -> None:
        self.reader = Reader(
            context.model_config[NETWORK], context.artifacts[WEIGHTS], context.artifacts[STATS]
        )

    def predict(
        self, context: Any, model_input: np.ndarray, params: dict | None = None
    ) -> pd.DataFrame:
        """One row per image of (N, 28, 28) pixels: its digit and the ten probabilities. An
        ndarray hint is one MLflow does not turn into a second schema."""
        try:
            probabilities = self.reader.probabilities(model_input)
        except PipelineError as err:  # the scoring server answers this error code with a 400
            raise MlflowException.invalid_parameter_value(str(err)) from None
        rows = [list(map(float, p)) for p in probabilities]
        return pd.DataFrame({"digit": probabilities.argmax(1), "probabilities": rows})
