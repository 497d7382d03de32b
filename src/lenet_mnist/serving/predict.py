"""Read the digit in image files: each file's digit and its three likeliest classes.

    python -m lenet_mnist.serving.predict IMG.png [IMG.jpg ...] [--model data/model | MODEL_URI]

A PNG or JPEG of any size becomes what MNIST is: 28x28 grayscale (transparency on white),
resized with Lanczos, white digit on black. An image whose outermost ring of pixels is
bright on average (mean > 127 of 255) is taken as dark ink on paper and inverted. The
digit is not re-centred: like MNIST's, it should fill the middle of the picture.

`--model` is a folder with weights.safetensors (the train stage's data/model: the stats
come from its stats.json if it has one, else from the prepared data, paths.prepared), or
an MLflow model URI such as models:/lenet-mnist@champion, which carries its own stats.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lenet_mnist.config import parse
from lenet_mnist.config.schema import Config
from lenet_mnist.errors import PipelineError, run_stage
from lenet_mnist.serving import pyfunc

FORMATS = ("PNG", "JPEG")
BRIGHT = 127  # border mean above this: a light background, so the image is inverted
TOP = 3

Probabilities = Callable[[np.ndarray], np.ndarray]  # (N, 28, 28) pixels -> (N, 10)


def read_image(path: Path) -> np.ndarray:
    """A PNG or JPEG as MNIST pixels: (28, 28) uint8, white digit on black."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.format not in FORMATS:
                raise UnidentifiedImageError(img.format)
            gray = _on_white(img).convert("L")
            if gray.size != (pyfunc.RAW_SIZE, pyfunc.RAW_SIZE):
                gray = gray.resize((pyfunc.RAW_SIZE,) * 2, Image.Resampling.LANCZOS)
            pixels = np.asarray(gray, dtype=np.uint8)
    except (UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise PipelineError(f"{path} is not an image (PNG or JPEG)") from err
    except OSError as err:
        if err.errno is not None:  # a missing or unreadable file: exit_on_error says so
            raise
        raise PipelineError(f"{path} is not an image (PNG or JPEG)") from err  # truncated
    return 255 - pixels if border_is_bright(pixels) else pixels


def _on_white(img: object) -> object:
    """Transparent pixels become paper: a drawing's background is usually transparent."""
    from PIL import Image

    if "A" not in img.getbands():  # type: ignore[attr-defined]
        return img
    rgba = img.convert("RGBA")  # type: ignore[attr-defined]
    return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)


def border_is_bright(pixels: np.ndarray) -> bool:
    """MNIST's border is black; a bright one means dark ink on a light background."""
    ring = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])
    return float(ring.mean()) > BRIGHT


def reader(model: str, cfg: Config, stats: Path | None) -> Probabilities:
    """The model at a path or URI, as a function from raw pixels to probabilities."""
    path = Path(model)
    if "://" in model or ":/" in model or (path / "MLmodel").is_file():
        return _from_mlflow(model, cfg)
    weights = path if path.is_file() else path / "weights.safetensors"
    if not weights.is_file():
        raise PipelineError(f"{model} holds no weights.safetensors; run `dvc repro train`")
    if stats is None:
        beside = weights.parent / "stats.json"
        stats = beside if beside.is_file() else Path(cfg.paths.prepared) / "stats.json"
    if not stats.is_file():
        raise PipelineError(f"{stats} not found; run `dvc repro prepare` or pass --stats")
    return pyfunc.Reader(cfg.model.name, weights, stats).probabilities


def _from_mlflow(uri: str, cfg: Config) -> Probabilities:
    """An MLflow pyfunc (such as the registered "digits"), read from the configured store."""
    import mlflow.pyfunc

    from lenet_mnist.tracking import store

    mlflow.set_tracking_uri(store.tracking_uri(cfg.logger))
    pyfunc = mlflow.pyfunc.load_model(uri)
    return lambda images: np.array(
        pyfunc.predict(images.astype(np.float32))["probabilities"].tolist()
    )


def describe(name: str, probabilities: np.ndarray) -> str:
    """`7.png: 7   top 3: 7 (0.9990), 9 (0.0006), 2 (0.0002)`"""
    best = np.argsort(-probabilities, kind="stable")[:TOP]
    top = ", ".join(f"{d} ({probabilities[d]:.4f})" for d in best)
    return f"{name}: {best[0]}   top {TOP}: {top}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path, help="PNG or JPEG files")
    parser.add_argument("--model", default="data/model", help="folder or MLflow model URI")
    parser.add_argument("--stats", type=Path, help="stats.json for a folder's weights")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    cfg = parse.load(args.params)
    pixels = np.stack([read_image(path) for path in args.images])  # every file, before work
    probabilities = reader(args.model, cfg, args.stats)(pixels)
    for path, p in zip(args.images, probabilities, strict=True):
        print(describe(str(path), p))


if __name__ == "__main__":
    run_stage(main)
