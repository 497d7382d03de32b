"""`python -m lenet_mnist.serving.predict`: image files in, the digits evaluate would give out."""

from __future__ import annotations

import os
import re
import socket
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import ExifTags, Image

from lenet_mnist.errors import PipelineError, exit_on_error
from lenet_mnist.serving import predict, pyfunc
from tests.conftest import REPO, new_store, run_module, write_params
from tests.trained import raw_test_images, trained_slice


@pytest.fixture(scope="module")
def params(tmp_path_factory) -> Path:
    return write_params(tmp_path_factory.mktemp("predict") / "params.yaml")


@pytest.fixture
def digit(mnist_raw) -> np.ndarray:
    return raw_test_images(mnist_raw, 1)[0]


def chunk(kind: bytes, data: bytes) -> bytes:
    """A PNG chunk: its length, kind, data and CRC."""
    crc = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def write_png(path: Path, width: int, height: int, colour: int, pixels: bool = True) -> Path:
    """A black 8-bit PNG written row by row (a huge one costs kilobytes, not its pixels),
    or with `pixels=False` only its header: what a decoder would find truncated."""

    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    with path.open("wb") as file:
        file.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header))
        if pixels:
            deflate, row = zlib.compressobj(9), bytes(1 + width * channels)
            data = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
            file.write(chunk(b"IDAT", data))
        file.write(chunk(b"IEND", b""))
    return path


def one_line_exit(argv: list, capsys, code: int = 2) -> str:
    """predict's main as its command line ends: exit `code` (2: the input's fault, 1: the
    environment's) and stderr's one line, nothing printed."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as ended:
        exit_on_error(lambda: predict.main(list(map(str, argv))))
    out, err = capsys.readouterr()
    assert ended.value.code == code and out == ""
    assert err.count("\n") == 1, err
    return err


def test_a_dark_digit_on_light_paper_is_inverted_to_mnist_polarity(digit, tmp_path):
    Image.fromarray(digit).save(tmp_path / "white-on-black.png")
    Image.fromarray(255 - digit).save(tmp_path / "black-on-white.png")
    assert np.array_equal(predict.read_image(tmp_path / "white-on-black.png"), digit)
    assert np.array_equal(predict.read_image(tmp_path / "black-on-white.png"), digit)
    assert predict.SIZE == pyfunc.RAW_SIZE


def test_any_size_and_colour_becomes_28x28_grayscale(digit, tmp_path):
    big = Image.fromarray(digit).convert("RGB").resize((200, 200), Image.Resampling.BICUBIC)
    big.save(tmp_path / "big.jpg", quality=95)
    big.save(tmp_path / "phone.jpg", format="MPO", save_all=True, append_images=[big])
    turned = Image.Exif()
    turned[ExifTags.Base.Orientation] = 6  # stored a quarter turn anticlockwise
    big.rotate(90).save(tmp_path / "held-sideways.jpg", quality=95, exif=turned)
    for name in ("big.jpg", "phone.jpg", "held-sideways.jpg"):  # a phone's MPO is a JPEG too
        pixels = predict.read_image(tmp_path / name)
        assert pixels.shape == (28, 28) and pixels.dtype == np.uint8
        assert np.abs(pixels.astype(int) - digit).mean() < 10  # the same digit, blurred a little


def test_a_large_jpeg_is_decoded_at_an_eighth_of_its_size(digit, tmp_path, monkeypatch):
    """Under a limit that its full size exceeds 64 times over, a JPEG still reads: only a
    PNG, which cannot be decoded smaller, is refused."""
    big = Image.fromarray(digit).resize((896, 896), Image.Resampling.BICUBIC)
    big.save(tmp_path / "big.jpg", quality=95)
    big.save(tmp_path / "big.png")
    monkeypatch.setattr(predict, "MAX_PIXELS", 896 * 896 // 64)
    assert np.abs(predict.read_image(tmp_path / "big.jpg").astype(int) - digit).mean() < 10
    with pytest.raises(PipelineError, match=r"big.png is 896x896 pixels \(802,816\)"):
        predict.read_image(tmp_path / "big.png")


def test_a_16_bit_png_is_scaled_to_8_bits_not_clipped(digit, tmp_path):
    """A digit on a near-black 16-bit background (1000 of 65535) stays that digit."""
    on_dark = np.maximum(digit, 4)  # 1000 / 257 rounds to 4
    Image.fromarray(np.maximum(digit.astype(np.uint16) * 257, 1000)).save(tmp_path / "16.png")
    assert np.array_equal(predict.read_image(tmp_path / "16.png"), on_dark)
    big = np.asarray(Image.fromarray(on_dark).resize((84, 84), Image.Resampling.BICUBIC))
    Image.fromarray(big.astype(np.uint16) * 257).save(tmp_path / "16-big.png")
    Image.fromarray(big).save(tmp_path / "8-big.png")
    sixteen, eight = (predict.read_image(tmp_path / f"{b}-big.png") for b in (16, 8))
    assert np.abs(sixteen.astype(int) - eight).max() <= 1


def test_transparent_ink_of_either_shade_reads_as_the_digit(digit, tmp_path):
    """A drawing app's canvas: the ink's alpha is the digit, every other pixel transparent."""
    for ink in ("white", "black"):
        rgba = Image.new("RGBA", (28, 28), ink)
        rgba.putalpha(Image.fromarray(digit))
        rgba.save(tmp_path / f"{ink}.png")
        assert np.array_equal(predict.read_image(tmp_path / f"{ink}.png"), digit), ink
        big = rgba.resize((112, 112), Image.Resampling.BICUBIC)
        big.save(tmp_path / f"{ink}-big.png")
        big.getchannel("A").save(tmp_path / f"{ink}-opaque.png")
        got, opaque = (predict.read_image(tmp_path / f"{ink}-{k}.png") for k in ("big", "opaque"))
        assert np.abs(got.astype(int) - opaque).max() <= 1, ink
    la = Image.merge("LA", [Image.new("L", (28, 28), 255), Image.fromarray(digit)])
    la.save(tmp_path / "la.png")
    assert np.array_equal(predict.read_image(tmp_path / "la.png"), digit)


def test_an_image_over_the_pixel_limit_is_refused_before_it_is_decoded(tmp_path):
    """Headers only: decoding would find the files truncated. 13000x13000 is where Pillow
    decodes after a warning, 15000x15000 where it raises without naming the size."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for side, colour in ((13000, 6), (15000, 0)):
            path = write_png(tmp_path / f"{side}.png", side, side, colour, pixels=False)
            pattern = rf"{side}.png is {side}x{side} pixels \({side * side:,}\); at most 40,000,000"
            with pytest.raises(PipelineError, match=pattern):
                predict.read_image(path)


def test_a_folder_is_read_as_its_image_files_by_name(digit, tmp_path, params, capsys):
    folder = tmp_path / "drawings"
    (folder / "inner").mkdir(parents=True)
    Image.fromarray(digit).save(folder / "b.png")
    Image.fromarray(digit).save(folder / "a.JPG", format="JPEG")
    Image.fromarray(digit).save(folder / "scan", format="PNG")  # no suffix: by its bytes
    Image.fromarray(digit).save(folder / "inner" / "c.png")
    (folder / "notes.txt").write_text("not a picture")
    (folder / "._b.png").write_bytes(b"\x00\x05\x16\x07")  # macOS's metadata beside b.png
    alone = tmp_path / "alone.png"
    Image.fromarray(digit).save(alone)
    files = predict.image_files([folder, alone])
    assert files == [folder / "a.JPG", folder / "b.png", folder / "scan", alone]
    assert np.array_equal(predict.read_image(folder / "scan"), digit)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a picture")
    err = one_line_exit([alone, empty, "--params", params], capsys)
    assert err == f"error: {empty} holds no PNG or JPEG files; give images or their folder\n"


def run_measured(*args: object) -> tuple[subprocess.CompletedProcess, int]:
    """predict in a fresh process, and that process's peak resident memory in KiB."""
    argv = [sys.executable, "-m", "lenet_mnist.serving.predict", *map(str, args)]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)  # its own rusage, not every child's
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    proc.stdout.close(), proc.stderr.close()
    done = subprocess.CompletedProcess(argv, os.waitstatus_to_exitcode(status), out, err)
    return done, usage.ru_maxrss


def test_refused_files_end_in_one_line_and_a_huge_one_is_never_decoded(tmp_path, params):
    """A real 13000x13000 PNG (20 KB): decoding it takes 169 MB at least, one byte a pixel;
    refused, it costs what a refused text file costs."""
    (tmp_path / "notes.png").write_text("not pixels")
    Image.new("L", (28, 28)).save(tmp_path / "picture.gif")
    for name in ("notes.png", "picture.gif"):
        with pytest.raises(PipelineError, match=f"{name} is not an image \\(PNG or JPEG\\)"):
            predict.read_image(tmp_path / name)
    huge = write_png(tmp_path / "huge.png", 13000, 13000, 0)
    text, text_kib = run_measured(tmp_path / "notes.png", "--params", params)
    assert text.returncode == 2 and text.stdout == ""
    assert text.stderr == f"error: {tmp_path / 'notes.png'} is not an image (PNG or JPEG)\n"
    refused, huge_kib = run_measured(huge, "--params", params)
    assert huge_kib - text_kib < 50 * 1024, (huge_kib, text_kib)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr == (
        f"error: {huge} is 13000x13000 pixels (169,000,000); "
        "at most 40,000,000 pixels are decoded: scale it down\n"
    )


@pytest.fixture
def registry(tmp_path) -> str:
    """A store whose registered lenet-mnist has version 1 under the alias champion."""
    db = new_store(tmp_path)
    client = MlflowClient(db)
    client.create_registered_model("lenet-mnist")
    version = client.create_model_version("lenet-mnist", source=str(tmp_path), run_id=None)
    client.set_registered_model_alias("lenet-mnist", "champion", version.version)
    return db


def test_a_model_the_store_does_not_hold_is_one_line_naming_what_it_holds(
    registry, digit, tmp_path, params, capsys, monkeypatch
):
    Image.fromarray(digit).save(tmp_path / "7.png")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry)
    held = "it holds models:/lenet-mnist@champion, models:/lenet-mnist/1"
    for uri, reason in (
        ("models:/lenet-mnist@nosuch", "Registered model alias nosuch not found"),
        ("models:/lenet-mnist/7", "Model Version (name=lenet-mnist, version=7) not found"),
        ("models:/nosuch@champion", "Registered Model with name=nosuch not found"),
        ("runs:/0123/digits", "Run with id=0123 not found"),
    ):
        err = one_line_exit([tmp_path / "7.png", "--model", uri, "--params", params], capsys)
        assert err == f"error: cannot load {uri} from {registry}: {reason}; {held}\n"


def test_a_store_that_is_missing_or_does_not_answer_is_one_line(
    digit, tmp_path, params, capsys, monkeypatch
):
    Image.fromarray(digit).save(tmp_path / "7.png")
    argv = [tmp_path / "7.png", "--model", "models:/lenet-mnist@champion", "--params", params]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'none.db'}")
    err = one_line_exit(argv, capsys)
    assert err.startswith(
        f"error: cannot load models:/lenet-mnist@champion: no MLflow store {tmp_path / 'none.db'}; "
    )
    assert not (tmp_path / "none.db").exists()
    with socket.socket() as free:  # a port nothing listens on once it is closed
        free.bind(("127.0.0.1", 0))
        server = f"http://127.0.0.1:{free.getsockname()[1]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    err = one_line_exit(argv, capsys, code=1)
    loading = "error: cannot load models:/lenet-mnist@champion: "
    assert err.startswith(f"{loading}MLflow tracking server {server} did not answer")


@pytest.mark.slow
def test_png_and_inverted_jpeg_digits_get_evaluates_predictions(
    prepared_slice, tmp_path_factory, mnist_raw, tmp_path
):
    """Ten real test digits as PNGs in a folder and the first again as a 4x, dark-on-light
    JPEG, read by the weights folder and by the registered champion: evaluate's predictions
    each time."""
    done = trained_slice(prepared_slice, tmp_path_factory)
    digits = raw_test_images(mnist_raw, 10)
    (tmp_path / "digits").mkdir()
    files = []
    for i, digit in enumerate(digits):
        Image.fromarray(digit).save(tmp_path / "digits" / f"{i}.png")
        files.append(tmp_path / "digits" / f"{i}.png")
    paper = Image.fromarray(255 - digits[0]).resize((112, 112), Image.Resampling.BILINEAR)
    paper.save(tmp_path / "0-on-paper.jpg", quality=90)
    files.append(tmp_path / "0-on-paper.jpg")
    expected = [*done["predicted"][:10], done["predicted"][0]]
    env = {"MLFLOW_TRACKING_URI": done["db"]}
    for model in (done["data"] / "model", "models:/lenet-mnist@champion"):
        argv = [tmp_path / "digits", files[-1], "--model", model, "--params", done["params"]]
        ran = run_module("serving.predict", *argv, cwd=done["root"], env=env)
        assert ran.returncode == 0, ran.stderr[-3000:]
        lines = ran.stdout.splitlines()
        assert [int(re.match(r".+: (\d)   top 3: ", line)[1]) for line in lines] == expected
        for line, path in zip(lines, files, strict=True):
            assert line.startswith(f"{path}: ")
            top = [float(p) for p in re.findall(r"\d \((\d\.\d{4})\)", line)]
            assert len(top) == 3 and top == sorted(top, reverse=True)


@pytest.mark.parametrize("kind", ["named pipe", "socket", "device"])
def test_what_is_not_a_regular_file_is_refused_without_opening_it(kind, tmp_path, params):
    """Opening a FIFO waits for a writer forever: a fresh process must end, in one line."""
    path, what = tmp_path / "seven.png", f"a {kind}"
    if kind == "named pipe":
        os.mkfifo(path)
    elif kind == "socket":
        listening = socket.socket(socket.AF_UNIX)
        listening.bind(str(path))
    else:
        path = Path(os.devnull)
    argv = [sys.executable, "-m", "lenet_mnist.serving.predict", path, "--params", params]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"error: {path} is {what}; give PNG or JPEG files or folders\n"


def test_a_truncated_jpeg_is_refused_as_one(digit, tmp_path, params, capsys):
    Image.fromarray(digit).resize((200, 200)).save(tmp_path / "cut.jpg", quality=95)
    whole = (tmp_path / "cut.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    err = one_line_exit([tmp_path / "cut.jpg", "--params", params], capsys)
    said = f"error: {tmp_path / 'cut.jpg'} is a JPEG that cannot be read: image file is truncated"
    assert err.startswith(said), err


def test_a_jpeg_too_short_for_its_size_is_refused_even_with_its_end_marker(
    digit, tmp_path, params, capsys
):
    """810 bytes whose header says 40000x40000, closed by an end marker: libjpeg would fill
    the missing blocks with grey, and Pillow decode that without a word."""
    Image.fromarray(digit).resize((200, 200)).save(tmp_path / "huge.jpg", quality=95)
    jpeg = bytearray((tmp_path / "huge.jpg").read_bytes())
    struct.pack_into(">HH", jpeg, jpeg.index(b"\xff\xc0") + 5, 40000, 40000)  # SOF0's size
    (tmp_path / "huge.jpg").write_bytes(jpeg[:808] + b"\xff\xd9")
    err = one_line_exit([tmp_path / "huge.jpg", "--params", params], capsys)
    assert err == (
        f"error: {tmp_path / 'huge.jpg'} is a JPEG that cannot be read: "
        "truncated: 810 bytes for 40000x40000\n"
    )


def test_a_truncated_png_is_refused_as_one(digit, tmp_path, params, capsys):
    Image.fromarray(digit).resize((200, 200)).save(tmp_path / "cut.png")
    whole = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[: len(whole) // 2])
    err = one_line_exit([tmp_path / "cut.png", "--params", params], capsys)
    said = f"error: {tmp_path / 'cut.png'} is a PNG that cannot be read: image file is truncated"
    assert err == said + "\n"


def test_a_png_decompression_bomb_is_named_one(digit, tmp_path, params, capsys):
    """64 MB of text compressed into 64 KB, before the pixels: Pillow stops at 1 MB."""
    Image.fromarray(digit).save(tmp_path / "bomb.png")
    png = (tmp_path / "bomb.png").read_bytes()
    bomb = chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(bytes(64 * 1024 * 1024), 9))
    at = png.index(b"IDAT") - 4
    (tmp_path / "bomb.png").write_bytes(png[:at] + bomb + png[at:])
    err = one_line_exit([tmp_path / "bomb.png", "--params", params], capsys)
    said = f"error: {tmp_path / 'bomb.png'} is a PNG that cannot be read: a decompression bomb ("
    assert err.startswith(said), err


def test_an_error_line_cuts_a_long_path_and_says_its_length(tmp_path, params, capsys):
    folder = tmp_path / ("d" * 200) / ("e" * 200)
    folder.mkdir(parents=True)
    os.mkfifo(folder / "7.png")
    err = one_line_exit([folder / "7.png", "--params", params], capsys)
    full = len(f"error: {folder / '7.png'} is a named pipe; give PNG or JPEG files or folders")
    assert err.startswith(f"error: {tmp_path}") and len(err) < 500, err
    assert err.endswith(f"... (cut: {full:,} characters in all)\n"), err
