"""A sweep ends as one thing: a signal to its process stops its jobs and marks every run.

Real sweeps on the prepared slice, each with its own sqlite store, stopped as a user or a
scheduler stops them: a signal to the sweep's own process, or a disk that cannot be written.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from lenet_mnist.tracking import store
from tests.conftest import hydra_train, mlflow_runs, new_store, sweep_overrides

pytestmark = pytest.mark.slow

SIZES = ("50", "100")


@pytest.fixture(scope="module")
def stopped(prepared_slice, tmp_path_factory) -> dict:
    """A 2-job submitit_local sweep, sent SIGTERM once both jobs train, and what it left.

    Five epochs a job, so that neither ends between the moment both runs are seen open and
    the signal; the processes are those the sweep had started when the signal came."""
    root = tmp_path_factory.mktemp("stopped")
    db = new_store(root)
    grid = ("launcher=submitit_local", f"train.batch_size={','.join(SIZES)}")
    one_epoch = sweep_overrides(prepared_slice[0], root / "sweep", *grid)
    overrides = ["train.epochs=5" if o == "train.epochs=1" else o for o in one_epoch]
    # Its output to a file, not a pipe, which job processes that outlived it would hold open.
    log = root / "sweep.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lenet_mnist.run", *overrides], cwd=root, stdout=out,
            stderr=subprocess.STDOUT, env={**os.environ, "MLFLOW_TRACKING_URI": db},
            start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 300
    while sorted(_running(db)) != sorted(SIZES):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the jobs never started"
        time.sleep(0.2)
    jobs = psutil.Process(proc.pid).children(recursive=True)
    assert len(jobs) >= 2  # submitit's controller and job process, per job
    os.kill(proc.pid, signal.SIGTERM)  # the sweep's own process only, as `kill PID` does
    code = proc.wait(timeout=120)
    left = [job.cmdline() for job in jobs if _alive(job)]
    return {"root": root, "db": db, "overrides": overrides, "code": code,
            "said": log.read_text(), "left": left}  # fmt: skip


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _running(db: str) -> list[str]:
    """The batch sizes of the job runs RUNNING in the store, once it exists."""
    if not Path(db.removeprefix("sqlite:///")).is_file():
        return []
    jobs = [r for r in mlflow_runs(db)[1] if store.PARENT_TAG in r.data.tags]
    return [r.data.params.get("train.batch_size", "") for r in jobs if r.info.status == "RUNNING"]


def test_a_signalled_sweep_exits_143_with_one_line(stopped):
    assert stopped["code"] == 128 + signal.SIGTERM
    lines = stopped["said"].splitlines()
    assert [x for x in lines if x.startswith(("stopped:", "error:"))] == lines[-1:]
    assert lines[-1].startswith("stopped: sweep train.batch_size=50,100 ")
    assert lines[-1].endswith(" (SIGTERM): 2 jobs stopped; run the same command to resume")
    assert "Traceback" not in stopped["said"]


def test_a_signalled_sweep_leaves_no_job_process_running(stopped):
    assert stopped["left"] == []


def test_a_signalled_sweep_marks_its_runs_killed(stopped):
    _, runs = mlflow_runs(stopped["db"])
    (parent,) = [r for r in runs if store.SWEEP_TAG in r.data.tags]
    children = [r for r in runs if r.data.tags.get(store.PARENT_TAG) == parent.info.run_id]
    assert parent.info.status == "KILLED"
    assert sorted(r.data.params["train.batch_size"] for r in children) == sorted(SIZES)
    assert {r.info.status for r in children} == {"KILLED"}


def test_the_same_command_resumes_a_signalled_sweep(stopped):
    """It reruns both stopped jobs, as new runs beside the killed ones."""
    done = hydra_train(*stopped["overrides"], cwd=stopped["root"], db=stopped["db"])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _, runs = mlflow_runs(stopped["db"])
    (parent,) = [r for r in runs if store.SWEEP_TAG in r.data.tags]  # the same, reopened
    assert parent.info.status == "FINISHED"
    complete = [r for r in runs if r.data.tags.get(store.COMPLETE_TAG) == "true"]
    assert sorted(r.data.params["train.batch_size"] for r in complete) == sorted(SIZES)
    status = sorted(r.info.status for r in runs if store.PARENT_TAG in r.data.tags)
    assert status == ["FINISHED", "FINISHED", "KILLED", "KILLED"]


def test_a_full_disk_under_the_sweep_fails_its_parent_and_names_the_folder(
    prepared_slice, tmp_path
):
    """A job's folder whose config file Hydra writes onto /dev/full: every write there fails
    as on a full disk (ENOSPC), and Python's error names no file."""
    db = new_store(tmp_path)
    sweep_dir = tmp_path / "sweep"
    hydra_dir = sweep_dir / "train.batch_size=50,train.epochs=1,trainer.compile=False" / ".hydra"
    hydra_dir.mkdir(parents=True)
    (hydra_dir / "config.yaml").symlink_to("/dev/full")
    overrides = sweep_overrides(prepared_slice[0], sweep_dir, "train.batch_size=50")
    done = hydra_train(*overrides, cwd=tmp_path, db=db)
    assert done.returncode == 1  # the environment's, as every OSError (docs/pipeline.md)
    assert done.stderr.splitlines()[-1].startswith(f"error: {sweep_dir}: No space left on device")
    assert "Traceback" not in done.stderr
    _, runs = mlflow_runs(db)
    assert [r.info.status for r in runs] == ["FAILED"]  # the parent; no job got to start
