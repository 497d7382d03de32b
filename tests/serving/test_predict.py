"""`python -m lenet_mnist.serving.predict`: image files in, the digits evaluate would give out."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from lenet_mnist.errors import PipelineError
from lenet_mnist.serving import predict
from tests.conftest import REPO, run_module, write_params
from tests.trained import raw_test_images, trained_slice


def test_a_dark_digit_on_light_paper_is_inverted_to_mnist_polarity(mnist_raw, tmp_path):
    digit = raw_test_images(mnist_raw, 1)[0]
    Image.fromarray(digit).save(tmp_path / "white-on-black.png")
    Image.fromarray(255 - digit).save(tmp_path / "black-on-white.png")
    assert np.array_equal(predict.read_image(tmp_path / "white-on-black.png"), digit)
    assert np.array_equal(predict.read_image(tmp_path / "black-on-white.png"), digit)


def test_any_size_and_colour_becomes_28x28_grayscale(mnist_raw, tmp_path):
    digit = raw_test_images(mnist_raw, 1)[0]
    big = Image.fromarray(digit).convert("RGB").resize((200, 200), Image.Resampling.BICUBIC)
    big.save(tmp_path / "big.jpg", quality=95)
    pixels = predict.read_image(tmp_path / "big.jpg")
    assert pixels.shape == (28, 28) and pixels.dtype == np.uint8
    assert np.abs(pixels.astype(int) - digit).mean() < 10  # the same digit, blurred a little


def test_a_file_that_is_not_an_image_is_named_in_one_line(tmp_path):
    (tmp_path / "notes.png").write_text("not pixels")
    Image.new("L", (28, 28)).save(tmp_path / "picture.gif")
    for name in ("notes.png", "picture.gif"):
        with pytest.raises(PipelineError, match=f"{name} is not an image \\(PNG or JPEG\\)"):
            predict.read_image(tmp_path / name)
    params = write_params(tmp_path / "params.yaml")
    done = run_module("serving.predict", tmp_path / "notes.png", "--params", params, cwd=REPO)
    assert done.returncode == 2
    assert done.stderr == f"error: {tmp_path / 'notes.png'} is not an image (PNG or JPEG)\n"
    assert done.stdout == ""


@pytest.mark.slow
def test_png_and_inverted_jpeg_digits_get_evaluates_predictions(
    prepared_slice, tmp_path_factory, mnist_raw, tmp_path
):
    """Ten real test digits as PNGs and the first again as a 4x, dark-on-light JPEG, read
    by the weights folder and by the registered champion: evaluate's predictions each time."""
    done = trained_slice(prepared_slice, tmp_path_factory)
    digits = raw_test_images(mnist_raw, 10)
    files = []
    for i, digit in enumerate(digits):
        Image.fromarray(digit).save(tmp_path / f"{i}.png")
        files.append(tmp_path / f"{i}.png")
    paper = Image.fromarray(255 - digits[0]).resize((112, 112), Image.Resampling.BILINEAR)
    paper.save(tmp_path / "0-on-paper.jpg", quality=90)
    files.append(tmp_path / "0-on-paper.jpg")
    expected = [*done["predicted"][:10], done["predicted"][0]]
    env = {"MLFLOW_TRACKING_URI": done["db"]}
    for model in (done["data"] / "model", "models:/lenet-mnist@champion"):
        argv = [*files, "--model", model, "--params", done["params"]]
        ran = run_module("serving.predict", *argv, cwd=done["root"], env=env)
        assert ran.returncode == 0, ran.stderr[-3000:]
        lines = ran.stdout.splitlines()
        assert [int(re.match(r".+: (\d)   top 3: ", line)[1]) for line in lines] == expected
        for line, path in zip(lines, files, strict=True):
            assert line.startswith(f"{path}: ")
            top = [float(p) for p in re.findall(r"\d \((\d\.\d{4})\)", line)]
            assert len(top) == 3 and top == sorted(top, reverse=True)
