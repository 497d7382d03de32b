"""A bounded load test of the served model on loopback: requests per second and memory.

    MLFLOW_TRACKING_URI=sqlite:///mlflow.db python docs/benchmarks/serve_load.py \
        [--model models:/lenet-mnist@champion] [--seconds 10] [--servers serve mlflow]

Starts each server in turn on a free local port (`serve`: python -m lenet_mnist.serving.serve;
`mlflow`: mlflow models serve) and, one client at a time, measures: requests per second for
bodies of 1 and of 100 images for `--seconds` each; then sends 10 MB and 100 MB of random
bytes, as a Content-Length body and the 100 MB chunked too, reading and counting the reply.
Memory is the resident set of the server's process tree (mlflow's command and its uvicorn),
sampled every 10 ms: at rest, its peak under load, its peak during the big bodies, and after
them. Prints one JSON object per server.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable

import psutil

MB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(server: str, model: str, port: int) -> list[str]:
    if server == "serve":
        return [sys.executable, "-m", "lenet_mnist.serving.serve", model, "--port", str(port)]
    mlflow = shutil.which("mlflow", path=os.path.dirname(sys.executable))
    return [mlflow, "models", "serve", "-m", model, "--env-manager", "local",
            "-p", str(port), "-h", "127.0.0.1"]  # fmt: skip


class Memory:
    """The resident set of a process and its children, sampled in a thread; peaks on demand."""

    def __init__(self, pid: int) -> None:
        self.root, self.peak, self.now, self.stop = psutil.Process(pid), 0, 0, False
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.stop:
            total = 0
            for p in [self.root, *self.root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):  # a process gone meanwhile
                    total += p.memory_info().rss
            self.now, self.peak = total, max(self.peak, total)
            time.sleep(0.01)

    def reset(self) -> int:
        """The resident set now, after which the peak counts anew."""
        time.sleep(0.05)
        self.peak = self.now
        return self.now


def post(port: int, body: bytes | Iterable[bytes], chunked: bool = False) -> tuple[object, int]:
    """(status or the error that ended the request, bytes of reply read and dropped)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        headers = {"Content-Type": "application/json"}
        connection.request("POST", "/invocations", body, headers, encode_chunked=chunked)
        reply, size = connection.getresponse(), 0
        while chunk := reply.read(MB):
            size += len(chunk)
        return reply.status, size
    except OSError as err:
        return type(err).__name__, 0
    finally:
        connection.close()


def rate(port: int, images: int, seconds: float) -> float:
    pixels = [[[(i * 7 + j) % 256 for j in range(28)] for i in range(28)]] * images
    body, done, started = json.dumps({"inputs": pixels}).encode(), 0, time.monotonic()
    while time.monotonic() - started < seconds:
        status, _ = post(port, body)
        assert status == 200, status
        done += 1
    return round(done / (time.monotonic() - started), 1)


def measure(server: str, model: str, seconds: float) -> dict:
    port = free_port()
    proc = subprocess.Popen(command(server, model, port), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        memory, out = Memory(proc.pid), {"server": server}
        rate(port, 1, 1)  # warm up
        out["rss_mb_at_rest"] = memory.reset() / MB
        out["requests_per_s_1_image"] = rate(port, 1, seconds)
        out["requests_per_s_100_images"] = rate(port, 100, seconds)
        out["rss_mb_peak_under_load"] = memory.peak / MB
        before = memory.reset()
        for name, size, chunked in (("10MB", 10, False), ("100MB", 100, False),
                                    ("100MB_chunked", 100, True)):  # fmt: skip
            body = os.urandom(size * MB)
            started = time.monotonic()
            status, reply = post(port, [body] if chunked else body, chunked)
            out[f"{name}_status"], out[f"{name}_reply_bytes"] = status, reply
            out[f"{name}_seconds"] = round(time.monotonic() - started, 2)
        time.sleep(2)
        out["rss_mb_before_big_bodies"] = before / MB
        out["rss_mb_peak_big_bodies"] = memory.peak / MB
        out["rss_mb_after_big_bodies"] = memory.reset() / MB
        memory.stop = True
        return {k: round(v) if isinstance(v, float) and "rss" in k else v for k, v in out.items()}
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models:/lenet-mnist@champion")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--servers", nargs="+", default=["serve", "mlflow"])
    args = parser.parse_args()
    for server in args.servers:
        print(json.dumps(measure(server, args.model, args.seconds)), flush=True)


if __name__ == "__main__":
    main()
