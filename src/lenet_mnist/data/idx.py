"""The IDX file format that MNIST is published in: download encodes it (the registry
copy), prepare decodes it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from lenet_mnist.errors import PipelineError

# Magic numbers: two zero bytes, a type code (0x08 = unsigned byte) and the number of dims.
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


def encode(array: np.ndarray) -> bytes:
    """Serialise a uint8 array as IDX: big-endian magic, one big-endian size per dim, data."""
    if array.dtype != np.uint8:
        raise ValueError(f"IDX encoding needs uint8 data, got {array.dtype}")
    sizes = np.array(array.shape, dtype=">u4").tobytes()
    return bytes([0, 0, 0x08, array.ndim]) + sizes + np.ascontiguousarray(array).tobytes()


def decode(data: bytes, name: str = "IDX data") -> np.ndarray:
    """Parse IDX bytes, refusing anything whose header and length disagree."""
    if len(data) < 4 or data[0:3] != b"\x00\x00\x08" or data[3] not in (1, 3):
        raise PipelineError(
            f"{name}: bad magic number {data[:4].hex() or 'empty'}; "
            f"allowed: {IMAGES_MAGIC:08x} (images) or {LABELS_MAGIC:08x} (labels)"
        )
    ndim = data[3]
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise PipelineError(f"{name}: truncated header ({len(data)} bytes)")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if 0 in shape:  # numpy cannot even shape an empty array whose other sides overflow
        raise PipelineError(f"{name}: the header {shape} has an empty side; allowed: >= 1")
    expected = header_len + math.prod(shape)  # Python ints: no 64-bit overflow to a small size
    if len(data) != expected:
        raise PipelineError(
            f"{name}: {len(data)} bytes but the header {shape} needs exactly {expected}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(shape)


def read(path: Path) -> np.ndarray:
    return decode(Path(path).read_bytes(), name=Path(path).name)
