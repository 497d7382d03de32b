"""`python -m lenet_mnist.serving.serve`: the champion served with bounded requests and replies."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator

import pytest
from pydantic import ValidationError

from lenet_mnist.serving import serve
from tests.serving.test_served import _free_port, _wait_for
from tests.trained import raw_test_images, trained_slice

TEN_MB = 10 * 1024 * 1024
SMALL_REPLY = 4096  # bytes: an error reply never holds the request


@pytest.fixture(scope="module")
def served(prepared_slice, tmp_path_factory) -> Iterator[dict]:
    """The trained slice's champion behind `serve`, MLflow's pickle loading off; its log kept."""
    done = trained_slice(prepared_slice, tmp_path_factory)
    port, log_path = _free_port(), tmp_path_factory.mktemp("serve") / "serve.log"
    argv = [sys.executable, "-m", "lenet_mnist.serving.serve", "models:/lenet-mnist@champion",
            "--port", str(port)]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": done["db"],
           "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}  # fmt: skip
    with log_path.open("w") as log:
        server = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_for(f"http://127.0.0.1:{port}/ping", server, log_path)
            yield {"port": port, "log": log_path, "done": done}
        finally:
            with contextlib.suppress(ProcessLookupError):
                server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)


def post(port: int, body: bytes | Iterable[bytes], chunked: bool = False) -> tuple[int, bytes]:
    """POST /invocations as JSON: (status, the reply's bytes); chunked streams `body`."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        headers = {"Content-Type": "application/json"}
        connection.request("POST", "/invocations", body, headers, encode_chunked=chunked)
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


def image_with(pixel: object) -> bytes:
    """One black 28x28 image whose pixel at row 3, column 4 is `pixel`, as a request body."""
    image = [[0] * 28 for _ in range(28)]
    image[3][4] = pixel
    return json.dumps({"inputs": [image]}).encode()


@pytest.mark.slow
def test_real_images_get_evaluates_digits(served, mnist_raw):
    images = raw_test_images(mnist_raw, 10).tolist()
    status, reply = post(served["port"], json.dumps({"inputs": images}).encode())
    assert status == 200, reply[:1000]
    digits = [p["digit"] for p in json.loads(reply)["predictions"]]
    assert digits == served["done"]["predicted"][:10]


@pytest.mark.slow
def test_a_body_over_the_limit_is_refused_at_once_with_a_short_reply(served):
    """10 MB of random bytes: a 413 by its Content-Length in under a second, nothing echoed."""
    started = time.monotonic()
    status, reply = post(served["port"], os.urandom(TEN_MB))
    assert time.monotonic() - started < 1
    assert status == 413 and len(reply) < SMALL_REPLY, reply[:1000]
    assert reply == b"Content Too Large"  # Starlette's limit answers, before MLflow reads


@pytest.mark.slow
def test_a_streamed_body_is_refused_once_it_passes_the_limit(served):
    """Chunked, with no Content-Length to check: counted as it arrives."""
    chunks = (os.urandom(64 * 1024) for _ in range(TEN_MB // (64 * 1024)))
    status, reply = post(served["port"], chunks, chunked=True)
    assert status == 413 and len(reply) < SMALL_REPLY, reply[:1000]


@pytest.mark.slow
def test_nesting_deeper_than_an_image_is_a_short_400_and_no_traceback(served):
    deep = b'{"inputs": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    status, reply = post(served["port"], deep)
    assert status == 400 and len(reply) < SMALL_REPLY, reply[:1000]
    assert "recursion limit exceeded" in json.loads(reply)["message"]
    status, _ = post(served["port"], json.dumps({"inputs": [[[[0] * 28] * 28]]}).encode())
    assert status == 400  # one level too deep
    log = served["log"].read_text()
    assert "Traceback" not in log and "RecursionError" not in log, log[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b"true", "body"),
        (b'"7"', "body"),
        (image_with("7"), "inputs[0][3][4]"),
        (image_with(True), "inputs[0][3][4]"),
        (image_with(None), "inputs[0][3][4]"),
    ],
)
def test_what_is_not_a_json_number_is_no_pixel(served, body, where):
    status, reply = post(served["port"], body)
    assert status == 400 and len(reply) < SMALL_REPLY, reply[:1000]
    assert json.loads(reply)["message"].startswith(f"{where}: Input should be")


@pytest.mark.slow
@pytest.mark.parametrize("pixel", [-1, 255.5, 1e9, float("nan")])
def test_a_number_outside_0_to_255_is_refused_where_it_is(served, pixel):
    status, reply = post(served["port"], image_with(pixel))
    assert status == 400, reply[:1000]
    assert json.loads(reply)["message"].startswith("inputs[0][3][4]: Input should be")


def test_a_long_key_is_cut_in_the_reply():
    """A refusal names where the request went wrong, never more than a few hundred bytes."""
    body = json.loads(image_with(0))
    body["x" * 100_000] = 1
    with pytest.raises(ValidationError) as refused:
        serve.Images.model_validate_json(json.dumps(body))
    reply = serve.refusal(400, serve.first_error(refused.value)).body
    assert len(reply) < SMALL_REPLY and b"characters in all)" in reply, reply
