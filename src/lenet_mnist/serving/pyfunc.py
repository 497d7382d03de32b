"""The model as a user serves it: raw 28x28 MNIST images in, digits and probabilities out.

The network wants what the prepare stage makes: 32x32, standardized with the training
split's mean and std. A served model cannot ask its callers for that, so `Digits` (the
MLflow pyfunc) and `predict`'s command line both apply prepare's own functions here, with
the stats.json that travelled with the weights, and give the same bits as the test set.

Pixels are raw MNIST values, 0 (background) to 255 (ink): white digit on black. Anything
else (NaN, infinity, a negative or huge number) is refused, not answered: the network would
still name a digit for it, and a NaN probability is not even JSON.
"""

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
    """(N, 28, 28) pixel values 0-255 -> (N, 1, 32, 32) float32, exactly as prepare does.

    float32 holds every integer 0-255 exactly, so JSON numbers and uint8 arrays agree.
    """
    pixels = np.asarray(images, dtype=np.float32)
    if pixels.ndim == 2:  # one image
        pixels = pixels[None]
    if pixels.ndim != 3 or pixels.shape[1:] != (RAW_SIZE, RAW_SIZE):
        raise PipelineError(f"images of shape {pixels.shape}; expected (N, 28, 28) pixels 0-255")
    check_pixels(pixels)
    scaled = np.pad(pixels / np.float32(255.0), ((0, 0), (prepare.PAD,) * 2, (prepare.PAD,) * 2))
    return prepare.standardize(scaled[:, None], mean, std)


def check_pixels(pixels: np.ndarray) -> None:
    """Refuse what no MNIST image holds, naming the first bad pixel.

    The comparisons are False for NaN, so one test catches NaN, infinities and the range.
    """
    bad = ~((pixels >= 0) & (pixels <= MAX_PIXEL))
    if bad.any():
        image, row, col = (int(i) for i in np.argwhere(bad)[0])
        value = pixels[image, row, col]
        raise PipelineError(
            f"image {image} has pixel {value:g} at row {row}, column {col}; "
            f"pixels must be finite numbers from 0 to {MAX_PIXEL}"
        )


class Reader:
    """The network with the statistics it was trained on: raw images to probabilities."""

    def __init__(self, network: str, weights: Path, stats: Path) -> None:
        self.net = networks.load(network, weights)
        self.net.eval()
        normalization = json.loads(Path(stats).read_text())
        self.mean, self.std = normalization["mean"], normalization["std"]

    def probabilities(self, images: Any) -> np.ndarray:
        """Softmax of the logits, (N, 10) float32: one row per image."""
        x = to_network_input(images, self.mean, self.std)
        return torch.softmax(inference.logits(self.net, x), dim=1).numpy()


def answer(probabilities: np.ndarray) -> pd.DataFrame:
    """One row per image: its digit and the ten probabilities, as the server returns them."""
    rows = [list(map(float, p)) for p in probabilities]
    return pd.DataFrame({"digit": probabilities.argmax(1), "probabilities": rows})


class Digits(PythonModel):
    """The MLflow pyfunc registered and served: weights and stats.json are its artifacts.

    Logged as code (lenet_mnist.serving.digits_code), not as a cloudpickle, so that MLflow
    loads it with MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false.
    """

    def load_context(self, context: Any) -> None:
        self.reader = Reader(
            context.model_config[NETWORK], context.artifacts[WEIGHTS], context.artifacts[STATS]
        )

    def predict(
        self, context: Any, model_input: np.ndarray, params: dict | None = None
    ) -> pd.DataFrame:
        """`model_input`: (N, 28, 28) pixels 0-255, the signature's tensor.

        An ndarray hint is one MLflow does not turn into a second schema beside the signature.
        """
        try:
            return answer(self.reader.probabilities(model_input))
        except PipelineError as err:  # the scoring server answers this error code with a 400
            raise MlflowException.invalid_parameter_value(str(err)) from None
