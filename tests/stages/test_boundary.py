"""The one error boundary every entry point ends through: each class of failure (a file
system that refuses, a full disk, an unreadable MLflow store, a value too long to echo, a
second signal while the last good outputs go back) is one line and its exit code, seen
through several entry points, with real processes and real files."""

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import (
    hydra_train,
    run_dvc_stage,
    run_module,
    run_ok,
    stage_folder,
    write_params,
)
from tests.trained import trained_slice

pytestmark = pytest.mark.slow
EAGER = {"trainer__compile": False}  # two epochs: the first one's end writes a checkpoint
# Lightning's banner, in every training, and MLflow's note as it makes a new store
BANNER = ("GPU available", "TPU available", "HPU available")
NEW_STORE = " INFO mlflow.store.db.utils: "


def _the_line(done: subprocess.CompletedProcess) -> str:
    """The one line a failure printed: stderr holds nothing else, Lightning's banner aside."""
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [x for x in done.stderr.splitlines() if x.strip() and not x.startswith(BANNER)
             and NEW_STORE not in x]  # fmt: skip
    assert len(lines) == 1, done.stderr[-3000:]
    return lines[0]


@contextmanager
def _immutable(folder: Path) -> Iterator[None]:
    """`chattr +i`: not even root may add, remove or rename what the folder holds."""
    folder.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        pytest.skip("this file system has no immutable attribute (chattr +i)")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


@contextmanager
def _full_disk(folder: Path, size: str = "64k") -> Iterator[None]:
    """A small tmpfs at `folder` (64 KiB: the first large write finds the disk full)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]
    if subprocess.run(mounted, capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def _run_job(folder, prepared: Path, *extra: str) -> subprocess.CompletedProcess:
    """`python -m lenet_mnist.run`, one epoch on the slice, writing under folder.root/run."""
    overrides = [f"paths.prepared={prepared}", f"hydra.run.dir={folder.root / 'run'}"]
    quick = ["train.epochs=1", "trainer.compile=false", "trainer.enable_progress_bar=false"]
    return hydra_train(*overrides, *quick, *extra, cwd=folder.root, db=folder.db)


@pytest.mark.parametrize("entry", ["check", "prepare", "train"])
def test_a_folder_the_system_refuses_to_write_is_one_line_and_exit_1(
    entry, prepared_slice, mnist_raw, tmp_path
):
    """EPERM from an immutable folder, whichever call meets it: Python's open, or torch's
    writer (the checkpoint) whose RuntimeError carries the OSError as its context."""
    prepared, _ = prepared_slice
    folder = stage_folder(tmp_path, prepared, **EAGER)
    refusing = {"check": folder.data, "prepare": folder.data, "train": folder.data / "checkpoints"}
    with _immutable(refusing[entry]):
        if entry == "prepare":
            argv = ["stages.prepare", mnist_raw, folder.data / "again", "--params", folder.params]
            done = run_module(*argv, cwd=folder.root)
        else:
            done = folder.run(entry)
    assert done.returncode == 1
    line = _the_line(done)
    assert f"{refusing[entry].relative_to(tmp_path)}/" in line, line  # the path it refused
    assert "Operation not permitted" in line and "chattr -i" in line


@pytest.mark.parametrize("entry", ["train", "run"])
def test_a_full_disk_is_one_line_and_exit_1(entry, prepared_slice, tmp_path):
    """ENOSPC as torch's checkpoint writer meets it (train) and as safetensors meets it
    (the weights of a Hydra run): each hides it in its own exception, found all the same."""
    prepared, _ = prepared_slice
    folder = stage_folder(tmp_path, prepared, **EAGER)
    full = folder.data / "checkpoints" if entry == "train" else folder.root / "run" / "model"
    with _full_disk(full.parent if entry == "run" else full):
        done = folder.run("train") if entry == "train" else _run_job(folder, prepared)
    assert done.returncode == 1, done.stderr[-3000:]
    line = _the_line(done)
    assert "No space left on device" in line and "the disk is full" in line, line
    if entry == "train":
        assert not (folder.data / "model").exists()  # nothing half-written


def test_a_full_mlflow_store_is_one_line_naming_it_and_publish_writes_nothing(
    prepared_slice, tmp_path_factory, tmp_path
):
    """The store's disk fills up after MLflow made its tables: the publish stage fails in
    one line that names the store, and nothing it would publish reaches the store."""
    done = trained_slice(prepared_slice, tmp_path_factory)
    shutil.copytree(done["data"], tmp_path / "copy" / "data", symlinks=True)
    with _full_disk(tmp_path / "store", size="8m"):
        uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
        made = run_ok(
            sys.executable,
            "-c",
            f"import mlflow; mlflow.MlflowClient({uri!r}).search_experiments()",
            cwd=tmp_path,
        )
        filler = tmp_path / "store" / "filler"
        with open(filler, "wb") as f, contextlib.suppress(OSError):
            while True:  # until the disk is full
                f.write(bytes(1 << 16))
                f.flush()
        published = run_dvc_stage(
            "publish", tmp_path / "copy", done["params"], {"MLFLOW_TRACKING_URI": uri}
        )
        assert published.returncode == 1, published.stderr[-3000:]
        line = _the_line(published)
        assert line.startswith(f"error: the MLflow store {uri} is full"), line
        filler.unlink()
        # Read in a process of its own, so that no connection keeps the disk busy.
        held = run_ok(sys.executable, "-c", _WHAT_THE_STORE_HOLDS, uri, cwd=tmp_path)
    assert made == "" and held == "metrics: [] models: []\n"


_WHAT_THE_STORE_HOLDS = """
import sys, mlflow
client = mlflow.MlflowClient(sys.argv[1])
experiments = [e.experiment_id for e in client.search_experiments()]
runs = client.search_runs(experiments) if experiments else []
print("metrics:", sorted(k for r in runs for k in r.data.metrics if k.startswith("test_")),
      "models:", client.search_registered_models())
"""


@pytest.mark.parametrize(
    ("store", "entry"),
    [("corrupt", "train"), ("corrupt", "run"), ("corrupt", "report"), ("a folder", "report")],
)  # the folder is told apart in the same line: one entry point (the cheapest) shows it
def test_an_unreadable_mlflow_store_is_one_line_naming_it_and_exit_1(
    entry, store, prepared_slice, tmp_path
):
    prepared, _ = prepared_slice
    db = tmp_path / "mlflow.db"
    folder = stage_folder(tmp_path, prepared, db=f"sqlite:///{db}", **EAGER)
    if store == "corrupt":
        db.write_bytes(random.Random(0).randbytes(4096))
    else:
        db.mkdir()
    started = time.monotonic()
    if entry == "report":
        argv = ["study.report", "--params", folder.params, "--out", tmp_path / "report"]
        done = run_module(*argv, cwd=tmp_path, env=folder.env())
    else:
        done = folder.run("train") if entry == "train" else _run_job(folder, prepared)
    assert done.returncode == 1, done.stderr[-3000:]
    line = _the_line(done)
    why = "a folder" if store == "a folder" else "file is not a database"
    assert line.startswith(f"error: the MLflow store {folder.db} is unreadable ({why})"), line
    assert time.monotonic() - started < 60  # not MLflow's minutes of retries


@pytest.mark.parametrize("entry", ["check", "run"])
def test_a_long_value_is_echoed_cut_with_its_length(entry, tmp_path):
    from lenet_mnist.errors import LINE_MAX

    long = "9" * 10_000
    if entry == "check":
        p = write_params(tmp_path / "params.yaml", train__batch_size=long)
        done = run_module("stages.check", tmp_path / "ok.txt", "--params", p, cwd=tmp_path)
    else:
        done = hydra_train(f"train.batch_size={long}x", cwd=tmp_path, db="sqlite:///x.db")
    assert done.returncode == 2
    line = _the_line(done)
    assert len(line) < LINE_MAX + 60 and "characters in all)" in line, line
    assert line.startswith("error: train.batch_size="), line


def test_a_bug_keeps_its_traceback():
    code = "from lenet_mnist.errors import run_stage\nrun_stage(lambda: {}['missing'])\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "KeyError: 'missing'" in done.stderr


def test_exit_on_error_ends_a_bug_too_so_that_no_framework_swallows_it(capsys):
    """Hydra's jobs and callbacks catch every Exception: a SystemExit passes them."""
    from lenet_mnist.errors import exit_on_error

    with pytest.raises(SystemExit) as ended:
        exit_on_error(lambda: {}["missing"])
    assert ended.value.code == 1
    assert "Traceback" in capsys.readouterr().err


def test_one_line_cuts_at_the_limit_it_is_given():
    from lenet_mnist.errors import one_line

    assert one_line("a\nb") == "a b"
    assert one_line("x" * 50, limit=10) == "xxxxxxxxxx... (cut: 50 characters in all)"


def test_a_second_sigint_during_the_restore_waits_until_the_last_outputs_are_back(
    prepared_slice, tmp_path
):
    """Ctrl-C twice, half a second apart, in a train stage that DVC runs: the last good
    weights and history go back from DVC's cache whole, then exit 130 with one line."""
    prepared, _ = prepared_slice
    folder = stage_folder(tmp_path, prepared, train__epochs=20, trainer__compile=False)
    model, history = folder.data / "model", folder.data / "metrics/train_history.csv"
    (folder.root / "dvc.yaml").write_text(
        "stages:\n  train:\n    cmd: python -m lenet_mnist.stages.train\n"
        "    outs:\n      - data/model\n      - data/metrics/train_history.csv\n"
    )
    model.mkdir()
    history.parent.mkdir()
    good = {model / "weights.safetensors": os.urandom(4096), history: b"epoch,iteration\n1,90\n"}
    for path, data in good.items():
        path.write_bytes(data)
    dvc = [sys.executable, "-m", "dvc"]
    for cmd in (["init", "--no-scm", "-q"], ["commit", "-f", "-q", "train"]):
        subprocess.run([*dvc, *cmd], cwd=folder.root, check=True, capture_output=True)
    for path in good:  # as DVC deletes a stage's outputs before it runs it
        path.unlink()
    model.rmdir()

    proc = folder.start("train", capture=True, DVC_STAGE="train", DVC_ROOT=str(folder.root))
    checkpoint = folder.data / "checkpoints/train.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.is_file():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    line = _the_line(subprocess.CompletedProcess([], 130, "", err))
    assert line.startswith("stopped: training stopped by SIGINT"), line
    assert {path: path.read_bytes() for path in good} == good  # byte-identical, back in place
