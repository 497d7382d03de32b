"""Shared fixtures: the real MNIST files (fetched once per session) and small configs."""

from __future__ import annotations

import gc
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from filelock import FileLock
from mlflow.tracking import MlflowClient

from lenet_mnist.config import parse
from lenet_mnist.data import sources
from lenet_mnist.data.sources import download
from lenet_mnist.tracking import store

REPO = Path(__file__).resolve().parents[1]
# Tests run side by side (pytest -n) and each may start multi-threaded stages: OpenMP's
# default busy-waiting would make such processes collapse on a shared core. The wait
# policy changes no result. Set before any stage process starts, which inherits it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Collection loads torch, Lightning and MLflow: with the collector paused, as the stages load
# them (lenet_mnist.process.importing), then frozen, out of every later collection.
gc.disable()


def pytest_collection_finish(session: pytest.Session) -> None:
    gc.freeze()
    gc.enable()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files of end-to-end tests only first, the fewest (longest) tests first: pytest-xdist
    (`--no-loadscope-reorder`) hands files out in this order, one queued behind each worker's
    current file, so a long file handed out last would end the run on one core."""
    files: dict[Path, list[pytest.Item]] = {}
    for item in items:
        files.setdefault(item.path, []).append(item)

    def end_to_end_first(path: Path) -> tuple[bool, int]:
        tests = files[path]
        return not all(t.get_closest_marker("slow") for t in tests), len(tests)

    items[:] = [item for path in sorted(files, key=end_to_end_first) for item in files[path]]


@pytest.fixture(scope="session")
def mnist_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four real, verified IDX files: the repo's data/raw if present, else the registry copy."""
    local = REPO / "data" / "raw"
    cfg = parse.load(REPO / "params.yaml").data
    out = tmp_path_factory.mktemp("mnist") / "raw"
    if all((local / name).is_file() for name in sources.FILES):
        cfg.sources, cfg.source_dir = ["local"], str(local)
    else:
        cfg.sources = ["registry"]
    download(cfg, out)
    return out


SLICE = {
    "data__train_limit": 5000,
    "data__val_size": 500,
    "data__test_limit": 500,
    "train__epochs": 2,
    "train__batch_size": 50,
    "train__noise_probe__batches": 0,  # on in the probes' own test: 2,048 images more an epoch
    "trainer__enable_progress_bar": False,
}


@pytest.fixture(scope="session")
def prepared_slice(mnist_raw, tmp_path_factory) -> tuple[Path, Path]:
    """A small prepared data set and the params.yaml that made it (see SLICE)."""
    root = tmp_path_factory.mktemp("slice")
    p = write_params(root / "params.yaml", **SLICE)
    done = run_module("stages.prepare", mnist_raw, root / "prepared", "--params", p, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "prepared", p


def stage_argv(stage: str) -> list[str]:
    """A stage's command exactly as dvc.yaml spells it, run with this interpreter."""
    cmd = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["cmd"]
    argv = shlex.split(cmd)
    assert argv[:2] == ["python", "-m"], cmd
    return [sys.executable, *argv[1:]]


def run_dvc_stage(stage: str, cwd: Path, p: Path, env: dict | None = None):
    """Run a stage in `cwd` the way `dvc repro` would, reading params from `p`."""
    return subprocess.run(
        [*stage_argv(stage), "--params", str(p)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def start_dvc_stage(
    stage: str, cwd: Path, p: Path, env: dict, capture: bool = False
) -> subprocess.Popen:
    """A stage started as DVC would, left running for a test to stop; with `capture`, its
    output is kept as text for `communicate()` (a stage writes a few lines per epoch)."""
    out = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen(
        [*stage_argv(stage), "--params", str(p)],
        cwd=cwd,
        env={**os.environ, **env},
        stdout=out,
        stderr=out,
        text=True,
        # A shell's background job (`cmd &`) ignores SIGINT, and an ignored signal stays
        # ignored across exec: Python would then never raise KeyboardInterrupt. A stage a
        # test stops with SIGINT gets SIGINT's default back, as a terminal gives it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


@dataclass(frozen=True)
class StageFolder:
    """A folder laid out as the repository is for dvc.yaml's stage commands: data/prepared
    links to a prepared slice, beside the folder's own params.yaml and MLflow store."""

    root: Path
    params: Path
    db: str  # the MLflow tracking URI of the folder's own store

    @property
    def data(self) -> Path:
        return self.root / "data"

    def env(self, **extra: str) -> dict[str, str]:
        return {"MLFLOW_TRACKING_URI": self.db, **extra}

    def run(self, stage: str, **env: str) -> subprocess.CompletedProcess:
        """The stage as `dvc repro` runs it; `env` adds to or overrides the store's URI."""
        return run_dvc_stage(stage, self.root, self.params, self.env(**env))

    def start(self, stage: str, capture: bool = False, **env: str) -> subprocess.Popen:
        return start_dvc_stage(stage, self.root, self.params, self.env(**env), capture)

    def runs(self) -> list:
        """Every MLflow run of the folder's store."""
        return mlflow_runs(self.db)[1]


_EMPTY_STORE: list[Path] = []  # the session's empty store, once `empty_store` has made it


@pytest.fixture(scope="session", autouse=True)
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new MLflow sqlite store, made once per session: each test's store starts as a copy
    (`new_store`), since MLflow's migrations cost a new store about a second of CPU."""

    def make(root: Path) -> dict:
        store.open_store(f"sqlite:///{root / 'mlflow.db'}")
        return {"db": root / "mlflow.db"}

    _EMPTY_STORE[:] = [made_once(tmp_path_factory, "empty_store", make)["db"]]
    return _EMPTY_STORE[0]


def new_store(folder: Path) -> str:
    """The tracking URI of folder/mlflow.db, a new, empty store (a copy of `empty_store`)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_EMPTY_STORE[0], folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


def stage_folder(
    root: Path, prepared: Path, params: Path | None = None, db: str | None = None, **overrides
) -> StageFolder:
    """A StageFolder in `root`: params.yaml is SLICE with `overrides`, unless `params` names
    one to use; the store is a new root/mlflow.db unless `db` names another."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / "prepared").symlink_to(prepared)
    params = params or write_params(root / "params.yaml", **{**SLICE, **overrides})
    return StageFolder(root, params, db or new_store(root))


def train_evaluate_publish(prepared: Path, p: Path, root: Path, env: dict) -> Path:
    """train, evaluate and publish as dvc.yaml runs them, in `root`; returns root/data.

    Each stage's console output is kept as root/<stage>.out."""
    folder = stage_folder(root, prepared, params=p, db=env.get("MLFLOW_TRACKING_URI"))
    for stage in ("train", "evaluate", "publish"):
        done = folder.run(stage, **env)
        assert done.returncode == 0, done.stderr[-3000:]
        (root / f"{stage}.out").write_text(done.stdout)
    return folder.data


def run_ok(*cmd, cwd, env=None) -> str:
    """A command's stdout; a failure fails the test with the command's last output."""
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    assert done.returncode == 0, f"{cmd}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done.stdout


def user_shell() -> dict[str, str]:
    """The environment of a user's shell in a clone: the venv active (its bin first on PATH,
    so the `python` of DVC's stage commands and a pasted `mlflow` are the venv's) and no
    MLFLOW_TRACKING_URI, so each repository logs to its own mlflow.db."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"}


def clone_repo(repo: Path) -> Path:
    """The working tree's tracked and new files, committed in a new git repo: what a clone
    of this commit holds, without the committed metrics (a clone's run writes its own)."""
    files = run_ok("git", "ls-files", "-co", "--exclude-standard", cwd=REPO).split()
    for name in files:
        if (REPO / name).is_file() and not name.startswith("data/metrics/"):
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            (repo / name).write_bytes((REPO / name).read_bytes())
            (repo / name).chmod((REPO / name).stat().st_mode)
    run_ok("git", "init", "-q", cwd=repo)
    run_ok("git", "add", "-A", cwd=repo)
    run_ok("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init", cwd=repo)
    return repo


def slice_overrides(mnist_raw: Path) -> list[str]:
    """`-S` values for a one-epoch run on a slice of the real data, read from its local copy."""
    return [
        "data.sources=[local]",
        f"data.source_dir={mnist_raw}",
        "data.train_limit=3000",
        "data.val_size=500",
        "data.test_limit=500",
        "train.epochs=1",
        "trainer.enable_progress_bar=false",
    ]


def write_params(path: Path, **overrides: object) -> Path:
    """params.yaml composed from conf/ with dotted-key overrides applied on top."""
    cfg = parse.compose()
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split("__")
        node = cfg
        for key in parents:
            node = node[key]
        node[leaf] = value
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_module(module: str, *args: str, cwd: Path, env: dict | None = None):
    """Run `python -m lenet_mnist.<module>` in a fresh process, as a user (or DVC) does."""
    return subprocess.run(
        [sys.executable, "-m", f"lenet_mnist.{module}", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def copy_raw(mnist_raw: Path):
    def copy(dest: Path) -> Path:
        shutil.copytree(mnist_raw, dest)
        return dest

    return copy


def hydra_train(*overrides: str, cwd: Path, db: str, background: bool = False):
    """`python -m lenet_mnist.run` as a user types it, with Hydra overrides."""
    argv = [sys.executable, "-m", "lenet_mnist.run", *overrides]
    env = {**os.environ, "MLFLOW_TRACKING_URI": db}
    if background:  # its own process group, so a test can kill the whole sweep
        return subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, text=True,
        )  # fmt: skip
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)


def sweep_overrides(prepared: Path, sweep_dir: Path, *grid: str) -> list[str]:
    """A one-epoch multirun over `grid` on the prepared slice, eager to skip compile time,
    without the noise probe (as SLICE), which is no part of a sweep's key or folders."""
    return [
        "-m",
        *grid,
        "train.epochs=1",
        "trainer.compile=false",
        "train.noise_probe.batches=0",
        "trainer.enable_progress_bar=false",
        f"paths.prepared={prepared}",
        f"hydra.sweep.dir={sweep_dir}",
    ]


def mlflow_runs(db: str) -> tuple[MlflowClient, list]:
    """A sweep's store: its client and every run of the experiment, parents and children."""
    client = store.open_store(db)  # under the lock a sweep takes to create a new store
    experiment = client.get_experiment_by_name("lenet-mnist")
    if experiment is None:  # nothing recorded yet
        return client, []
    return client, client.search_runs([experiment.experiment_id], max_results=1000)


def made_once(tmp_path_factory: pytest.TempPathFactory, name: str, make) -> dict:
    """`make(folder)` run once per test session, not once per xdist worker: the first worker
    makes it under a lock (pytest-xdist's documented pattern for session fixtures), and the
    others read its record. For results the tests only read: a trained slice, a sweep."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return make(tmp_path_factory.mktemp(name))
    shared = tmp_path_factory.getbasetemp().parent  # one folder for every worker
    record = shared / f"{name}.json"
    with FileLock(shared / f"{name}.lock"):
        if not record.is_file():
            (shared / name).mkdir()
            made = make(shared / name)
            encoded = {k: {"path": str(v)} if isinstance(v, Path) else v for k, v in made.items()}
            record.write_text(json.dumps(encoded))
    stored = json.loads(record.read_text())
    return {k: Path(v["path"]) if isinstance(v, dict) else v for k, v in stored.items()}


@pytest.fixture(scope="session")
def sweep_2x1(prepared_slice, tmp_path_factory) -> dict:
    """A 2x1 grid (batch 50 and 100, one epoch) run by the parallel joblib launcher."""
    prepared, _ = prepared_slice

    def make(root: Path) -> dict:
        db = new_store(root)
        grid = ("launcher=joblib", "train.batch_size=50,100")
        done = hydra_train(*sweep_overrides(prepared, root / "sweep", *grid), cwd=root, db=db)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return {"root": root, "db": db, "sweep_dir": root / "sweep", "log": done.stderr}

    return made_once(tmp_path_factory, "sweep_2x1", make)


# MLflow's server starts its GenAI job runner by default: a consumer process for each kind
# of job, each importing MLflow, which costs more CPU than the server itself. No test reads
# those jobs; off, the tracking API and the UI serve as they do with it on.
NO_JOB_RUNNER = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


@contextmanager
def serve_mlflow(*args: str) -> Iterator[str]:
    """A real `mlflow server` or `mlflow ui` on a free local port; yields its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent))
    argv = [mlflow, *args, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {**os.environ, **NO_JOB_RUNNER}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"mlflow {args[0]} did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
