import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lenet_mnist.data import idx
from lenet_mnist.errors import PipelineError


def test_round_trip_images_and_labels():
    images = np.random.default_rng(0).integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = np.arange(7, dtype=np.uint8)
    assert np.array_equal(idx.decode(idx.encode(images)), images)
    assert np.array_equal(idx.decode(idx.encode(labels)), labels)
    assert idx.encode(images)[:4] == idx.IMAGES_MAGIC.to_bytes(4, "big")
    assert idx.encode(labels)[:4] == idx.LABELS_MAGIC.to_bytes(4, "big")


def test_encode_refuses_non_uint8():
    with pytest.raises(ValueError, match="uint8"):
        idx.encode(np.zeros(3, dtype=np.float32))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b"\x00\x00\x09" + b[3:], "bad magic"),
        (lambda b: b"", "bad magic"),
        (lambda b: b[:6], "truncated header"),
        (lambda b: b[:-1], "needs exactly"),
        (lambda b: b + b"\x00", "needs exactly"),
        (lambda b: b[:4] + (99).to_bytes(4, "big") + b[8:], "needs exactly"),
    ],
    ids=["wrong-type", "empty", "short-header", "truncated", "trailing", "wrong-count"],
)
def test_corruption_is_refused(mutate, message):
    data = idx.encode(np.ones((3, 28, 28), dtype=np.uint8))
    with pytest.raises(PipelineError, match=message):
        idx.decode(mutate(data))


def test_real_files_decode(mnist_raw):
    images = idx.read(mnist_raw / "t10k-images-idx3-ubyte")
    labels = idx.read(mnist_raw / "t10k-labels-idx1-ubyte")
    assert images.shape == (10_000, 28, 28)
    assert labels.shape == (10_000,)
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]  # the well-known first test digits


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_decode_or_raise_the_projects_own_error(data):
    try:
        array = idx.decode(data)
    except PipelineError:
        return
    assert array.dtype == np.uint8 and array.ndim in (1, 3)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 2**32 - 1), min_size=3, max_size=3), st.binary(max_size=16))
@example(dims=[2**31, 2**31, 4], body=b"")  # 2**64 elements: zero in 64-bit arithmetic
@example(dims=[0, 3_036_988_439, 3_037_012_561], body=b"")  # empty, yet too big to shape
def test_headers_whose_sizes_overflow_are_refused_in_one_line(dims, body):
    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in dims)
    try:
        array = idx.decode(header + body)
    except PipelineError as err:
        assert "\n" not in str(err)
        return
    assert array.size == len(body)
