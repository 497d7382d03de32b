"""Read the digit in image files: each one's digit and three likeliest classes (docs/serving.md)."""

from __future__ import annotations

import argparse
import stat
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lenet_mnist.config import parse
from lenet_mnist.config.schema import Config
from lenet_mnist.errors import PipelineError, run_stage

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient
    from PIL import Image

# Each format's first bytes; a phone's multi-picture JPEG (MPO) is a JPEG to Pillow too.
FORMATS = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}
# What a path may be besides a file or a folder: opening a FIFO or a device waits forever.
SPECIAL = {stat.S_ISFIFO: "a named pipe", stat.S_ISSOCK: "a socket", stat.S_ISCHR: "a device"}
SIZE = 28  # pyfunc.RAW_SIZE, not imported from there: a refused file costs no torch import
MAX_PIXELS = 40_000_000  # decoded pixels: a PNG cannot be decoded at a reduced size
DRAFT = 4 * SIZE  # a JPEG is decoded at 1/2, 1/4 or 1/8 size while both sides stay above
BRIGHT = 127  # border mean above this: a light background, so the image is inverted
TOP = 3

Probabilities = Callable[[np.ndarray], np.ndarray]  # (N, 28, 28) pixels -> (N, 10)


def image_files(paths: list[Path]) -> list[Path]:
    """Each path, a folder standing for its PNG and JPEG files by content, hidden ones left
    out; only what stat calls a regular file is opened (a FIFO would block)."""
    files: list[Path] = []
    for path in paths:
        mode = path.stat().st_mode  # a missing path: the boundary's one line
        if stat.S_ISREG(mode):
            files.append(path)
        elif not stat.S_ISDIR(mode):
            what = next((name for test, name in SPECIAL.items() if test(mode)), "a device")
            raise PipelineError(f"{path} is {what}; give PNG or JPEG files or folders")
        elif found := sorted(
            f for f in path.iterdir() if f.is_file() and f.name[0] != "." and _format(f)
        ):
            files += found
        else:
            raise PipelineError(f"{path} holds no PNG or JPEG files; give images or their folder")
    return files


def _format(path: Path) -> str | None:
    """PNG or JPEG by the file's first bytes, whatever Pillow makes of the rest."""
    with path.open("rb") as file:
        head = file.read(8)
    return next((kind for start, kind in FORMATS.items() if head.startswith(start)), None)


def read_image(path: Path) -> np.ndarray:
    """A PNG or JPEG as MNIST pixels: (28, 28) uint8, white digit on black."""
    from PIL import ImageOps, JpegImagePlugin, PngImagePlugin, UnidentifiedImageError

    kind = _format(path)  # the file opens and reads here, or the system's error is the line
    if kind is None:
        raise PipelineError(f"{path} is not an image (PNG or JPEG)")
    # Image.open's call, less its bomb check: _decode_small names the size, after JPEG's draft.
    opener = PngImagePlugin.PngImageFile if kind == "PNG" else JpegImagePlugin.jpeg_factory
    try:
        try:
            img = opener(path)
        except (SyntaxError, IndexError, TypeError, struct.error) as err:  # as Image.open has it
            raise UnidentifiedImageError("no header Pillow can read") from err
        with img:
            _decode_small(path, img)
            ImageOps.exif_transpose(img, in_place=True)  # a photo as it was held: EXIF's turn
            pixels = _gray(img)
    except (SyntaxError, ValueError, OSError) as err:  # Pillow's words for what is wrong
        reason = str(err)
        if "Decompressed data too large" in reason:  # a PNG's text or colour profile
            reason = f"a decompression bomb ({reason})"
        raise PipelineError(f"{path} is a {kind} that cannot be read: {reason}") from err
    # MNIST's border is black; a bright one means dark ink on a light background
    ring = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])
    return 255 - pixels if float(ring.mean()) > BRIGHT else pixels


def _decode_small(path: Path, img: Image.Image) -> None:
    """A JPEG decoded at a reduced size; refused, what is still too large, and a JPEG shorter
    than a bit per 8x8 block: libjpeg greys out what is missing before an end marker."""
    width, height, size = *img.size, path.stat().st_size
    if img.format in ("JPEG", "MPO"):
        if size < (width // 8) * (height // 8) // 8:
            raise ValueError(f"truncated: {size:,} bytes for {width}x{height}")
        img.draft("L", (DRAFT, DRAFT))
    if img.width * img.height > MAX_PIXELS:
        reduced = "" if img.size == (width, height) else f", {img.width}x{img.height} reduced"
        raise PipelineError(
            f"{path} is {width}x{height} pixels ({width * height:,}{reduced}); "
            f"at most {MAX_PIXELS:,} pixels are decoded: scale it down"
        )


def _gray(img: Image.Image) -> np.ndarray:
    """(28, 28) uint8 luminance by Lanczos, as MNIST's own: 16-bit scaled, transparency laid."""
    from PIL import Image

    size, lanczos = (SIZE, SIZE), Image.Resampling.LANCZOS
    if img.mode.startswith("I"):  # a 16-bit grayscale PNG, 0-65535: resized, then scaled
        wide = np.asarray(img.resize(size, lanczos), dtype=np.float64)
        return np.round(wide * (255 / 65535)).astype(np.uint8)
    if not img.has_transparency_data:
        return np.asarray(img.convert("L").resize(size, lanczos), dtype=np.uint8)
    # Pillow resizes LA premultiplied, so a transparent pixel's colour counts for nothing. The
    # ink is laid on the shade opposite its alpha-weighted mean: white on white would vanish.
    la = np.asarray(img.convert("LA").resize(size, lanczos), np.float64)
    luminance, alpha = la[..., 0], la[..., 1] / 255
    paper = 0.0 if (luminance * alpha).sum() > BRIGHT * alpha.sum() else 255.0
    return np.round(luminance * alpha + paper * (1 - alpha)).astype(np.uint8)


def reader(model: str, cfg: Config, stats: Path | None) -> Probabilities:
    """The model at a path or URI, as a function from raw pixels to probabilities."""
    path = Path(model)
    if ":/" in model or (path / "MLmodel").is_file():
        return _from_mlflow(model, cfg)
    weights = path if path.is_file() else path / "weights.safetensors"
    if not weights.is_file():
        raise PipelineError(f"{model} holds no weights.safetensors; run `dvc repro train`")
    if stats is None:
        beside = weights.parent / "stats.json"
        stats = beside if beside.is_file() else Path(cfg.paths.prepared) / "stats.json"
    if not stats.is_file():
        raise PipelineError(f"{stats} not found; run `dvc repro prepare` or pass --stats")
    from lenet_mnist.serving import pyfunc

    return pyfunc.Reader(cfg.model.name, weights, stats).probabilities


def _from_mlflow(uri: str, cfg: Config) -> Probabilities:
    """An MLflow pyfunc from the configured store, which must exist (MLflow would create an
    empty one) and answer; a failure in MLflow's words, with the URIs the store holds."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    from lenet_mnist.tracking import store

    tracking = store.tracking_uri(cfg.logger)
    db = Path(tracking.removeprefix(store.SQLITE))
    try:
        if tracking.startswith(store.SQLITE) and not db.is_file():
            raise PipelineError(
                f"no MLflow store {db}; run `dvc repro publish` or set MLFLOW_TRACKING_URI"
            )
        client = store.client(cfg.logger)  # a server must answer its health check first
        mlflow.set_tracking_uri(tracking)  # models:/ URIs resolve through the global store
        served = mlflow.pyfunc.load_model(uri)
    except PipelineError as err:  # its class kept: a silent server is the environment's
        raise type(err)(f"cannot load {uri}: {err}") from None
    except MlflowException as err:
        reason = f"{str(err.message).splitlines()[0].rstrip('.')}; {_held(client)}"
        raise PipelineError(f"cannot load {uri} from {tracking}: {reason}") from None
    return lambda images: np.stack(served.predict(images.astype(np.float32))["probabilities"])


def _held(client: MlflowClient) -> str:
    """The models:/ URIs the store can load: each registered model's aliases and versions."""
    uris = []
    for model in client.search_registered_models():
        uris += [f"models:/{model.name}@{alias}" for alias in sorted(model.aliases)]
        versions = client.search_model_versions(f"name = '{model.name}'")
        uris += [f"models:/{model.name}/{n}" for n in sorted(int(v.version) for v in versions)]
    return f"it holds {', '.join(uris) or 'no registered model'}"


def describe(name: str, probabilities: np.ndarray) -> str:
    """`7.png: 7   top 3: 7 (0.9990), 9 (0.0006), 2 (0.0002)`"""
    best = np.argsort(-probabilities, kind="stable")[:TOP]
    top = ", ".join(f"{d} ({probabilities[d]:.4f})" for d in best)
    return f"{name}: {best[0]}   top {TOP}: {top}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path, help="PNG or JPEG files, or folders")
    parser.add_argument("--model", default="data/model", help="folder or MLflow model URI")
    parser.add_argument("--stats", type=Path, help="stats.json for a folder's weights")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    cfg = parse.load(args.params)
    files = image_files(args.images)
    pixels = np.stack([read_image(path) for path in files])  # every file, before any work
    probabilities = reader(args.model, cfg, args.stats)(pixels)
    for path, p in zip(files, probabilities, strict=True):
        print(describe(str(path), p))


if __name__ == "__main__":
    run_stage(main)
