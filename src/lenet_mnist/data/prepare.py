"""The prepare stage's work: images scaled to [0, 1], zero-padded from 28x28 to LeNet-5's
32x32 (so strokes reach the centre of the last conv's receptive fields), and standardized
with the training split's mean and std only, so validation and test stay unseen."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from lenet_mnist.config.schema import DataConfig
from lenet_mnist.data import idx
from lenet_mnist.errors import PipelineError
from lenet_mnist.outputs import replacing

RAW_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
PAD = 2  # 28 + 2 + 2 = 32


def read_raw_split(raw: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode one split and check that images and labels are a consistent MNIST pair."""
    images_file, labels_file = RAW_FILES[split]
    images, labels = idx.read(raw / images_file), idx.read(raw / labels_file)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise PipelineError(f"{images_file}: shape {images.shape}, expected (N, 28, 28)")
    if labels.ndim != 1 or len(labels) != len(images):
        raise PipelineError(
            f"{labels_file}: {labels.shape} labels for {len(images)} images in {images_file}"
        )
    if labels.size and labels.max() > 9:
        raise PipelineError(f"{labels_file}: label {labels.max()} found; labels must be 0-9")
    return images, labels


def pad_and_scale(images: np.ndarray) -> np.ndarray:
    """Pixels (N, 28, 28) 0-255 -> float32 (N, 1, 32, 32) in [0, 1], zeros around the digit."""
    scaled = images.astype(np.float32) / np.float32(255.0)
    return np.pad(scaled, ((0, 0), (PAD, PAD), (PAD, PAD)))[:, None]


def split_indices(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation indices from one seeded permutation, each kept in file order."""
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[val_size:]), np.sort(perm[:val_size])


def standardize(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    return ((x - np.float32(mean)) / np.float32(std)).astype(np.float32)


def prepare(raw: Path, out: Path, cfg: DataConfig) -> dict:
    """Write {train,val,test}_{x,y}.npy and stats.json into `out`; return the stats."""
    train_images, train_labels = (a[: cfg.train_limit] for a in read_raw_split(raw, "train"))
    test_images, test_labels = (a[: cfg.test_limit] for a in read_raw_split(raw, "test"))
    if not cfg.val_size < len(train_images):
        raise PipelineError(
            f"data.val_size={cfg.val_size} is not allowed; use an integer smaller than the "
            f"training set ({len(train_images)} images)"
        )
    train_idx, val_idx = split_indices(len(train_images), cfg.val_size, cfg.split_seed)
    x_train = pad_and_scale(train_images[train_idx])
    mean, std = float(x_train.mean(dtype=np.float64)), float(x_train.std(dtype=np.float64))
    arrays = {
        "train": (x_train, train_labels[train_idx]),
        "val": (pad_and_scale(train_images[val_idx]), train_labels[val_idx]),
        "test": (pad_and_scale(test_images), test_labels),
    }
    digest = hashlib.sha256()
    with replacing(out) as staging:
        for split, (x, y) in arrays.items():
            for suffix, array in (("x", standardize(x, mean, std)), ("y", y.astype(np.int64))):
                np.save(staging / f"{split}_{suffix}.npy", array)
                digest.update((staging / f"{split}_{suffix}.npy").read_bytes())
        stats = {
            "mean": mean,
            "std": std,
            "sizes": {split: len(y) for split, (_, y) in arrays.items()},
            "split_seed": cfg.split_seed,
            "digest": digest.hexdigest(),
        }
        (staging / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def read_split(prepared: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One prepared split, memory-mapped, once its values are in prepare's range: a planted
    NaN would otherwise surface epochs later as a diverged loss, blamed on the rate."""
    x_file, y_file = prepared / f"{split}_x.npy", prepared / f"{split}_y.npy"
    x, y = np.load(x_file, mmap_mode="r"), np.load(y_file, mmap_mode="r")
    stats = read_stats(prepared)
    lo, hi = standardize(np.array([0.0, 1.0], np.float32), stats["mean"], stats["std"])
    _check_range(x_file, x, float(lo), float(hi), "images")
    _check_range(y_file, y, 0, 9, "labels")
    if x.shape[1:] != (1, 32, 32) or y.shape != (len(x),):
        raise PipelineError(
            f"{x_file}: shape {x.shape} with {y.shape} labels; prepare writes (N, 1, 32, 32) "
            "images and N labels: run `dvc repro prepare` to write it again"
        )
    return x, y


def _check_range(path: Path, values: np.ndarray, lo: float, hi: float, what: str) -> None:
    """Min and max in two passes over the map; a NaN makes them NaN, so it fails too."""
    if not values.size:
        return
    low, high = float(values.min()), float(values.max())
    if not (np.isfinite(low) and np.isfinite(high)):
        found = "values that are not finite (NaN or infinity)"
    elif low < lo - 1e-4 or high > hi + 1e-4:
        found = f"values from {low:g} to {high:g}, outside the {lo:g} to {hi:g} of prepared {what}"
    else:
        return
    raise PipelineError(f"{path} holds {found}; run `dvc repro prepare` to write it again")


def read_stats(prepared: Path) -> dict:
    """stats.json: the sizes, the normalization and the data's digest."""
    path = Path(prepared) / "stats.json"
    if not path.is_file():
        raise PipelineError(f"{prepared} holds no prepared data; run `dvc repro prepare` first")
    return json.loads(path.read_text())
