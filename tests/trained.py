"""The slice's trainings that several tests share, each made once per test session by the
real stages: a training costs seconds of imports before any work, so a test that would
train the same values again reads the shared one instead.

The stage tests of tests/test_pipeline_slice.py, serving, the predict command line and the
MLflow model all answer for the same weights, so they share one run of train, evaluate and
publish (its own sqlite store); a one-epoch training and a committed `dvc exp run` serve
the tests named in their docstrings.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lenet_mnist.data import idx
from tests.conftest import (
    clone_repo,
    made_once,
    new_store,
    run_ok,
    slice_overrides,
    stage_argv,
    stage_folder,
    train_evaluate_publish,
    user_shell,
)

_done: dict[str, dict] = {}


def _shared(tmp_path_factory: pytest.TempPathFactory, name: str, make) -> dict:
    """made_once's record, read once per worker and kept for the session."""
    if name not in _done:
        _done[name] = made_once(tmp_path_factory, name, make)
    return _done[name]


def trained_slice(prepared_slice, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The stages' outputs and store: {"root", "data", "db", "params", "predicted"}.

    Made once per session for every worker (tests only read it): the prepared slice each
    worker makes holds the same bits, so the weights fit any worker's."""
    prepared, params = prepared_slice

    def make(root: Path) -> dict:
        db = new_store(root)
        data = train_evaluate_publish(prepared, params, root, {"MLFLOW_TRACKING_URI": db})
        rows = list(csv.DictReader((data / "metrics" / "test_predictions.csv").open()))
        predicted = [int(r["predicted"]) for r in rows]
        return {"root": root, "data": data, "db": db, "params": params, "predicted": predicted}

    return _shared(tmp_path_factory, "trained_slice", make)


def one_epoch(prepared_slice, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The train stage's outputs for the slice trained one epoch: {"data", "params", "wait"}.

    Made once per session, as trained_slice is, for the tests that compare another way of
    training the same values with the stage's own (a sweep job, other numerics) or read
    its history (DVC's plots). Started as from a user's shell, which sets no OpenMP wait
    policy (the tests' own processes have one): "wait" is the one it was started with."""

    def make(root: Path) -> dict:
        folder = stage_folder(root, prepared_slice[0], train__epochs=1)
        shell = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        env = {**shell, **folder.env()}
        done = subprocess.run(
            [*stage_argv("train"), "--params", str(folder.params)],
            cwd=root, capture_output=True, text=True, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return {"data": folder.data, "params": folder.params, "wait": env.get("OMP_WAIT_POLICY")}

    return _shared(tmp_path_factory, "one_epoch", make)


def committed_sets(mnist_raw: Path, batch_size: int | str = 50) -> list[str]:
    """`dvc exp run`'s `-S` arguments for committed_slice's values at `batch_size` (a Hydra
    sweep such as "50,100" too): the slice, one epoch, with the `fast` preset."""
    overrides = ["experiment=fast", *slice_overrides(mnist_raw), f"train.batch_size={batch_size}"]
    return [a for o in overrides for a in ("-S", o)]


def committed_slice(mnist_raw: Path, tmp_path_factory: pytest.TempPathFactory, dest: Path) -> Path:
    """A copy, at `dest`, of a clone whose last commit is `dvc exp run -n slice` of
    committed_sets, logged to the clone's own mlflow.db (git-ignored): the state a user's
    repository is in once a run is committed, for the tests that go on from there.

    The clone is made once per session; each test gets a copy with its own DVC cache and
    store, whose experiment keeps the clone's artifact folder (MLflow records it absolute)."""

    def make(root: Path) -> dict:
        repo = clone_repo(root / "repo")
        env = user_shell()
        dvc = (sys.executable, "-m", "dvc")
        run_ok(*dvc, "exp", "run", "-n", "slice", *committed_sets(mnist_raw), cwd=repo, env=env)
        run_ok("git", "add", "-A", cwd=repo)
        run_ok("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "run", cwd=repo)
        return {"repo": repo}

    shutil.copytree(_shared(tmp_path_factory, "committed_slice", make)["repo"], dest, symlinks=True)
    return dest


def raw_test_images(mnist_raw: Path, n: int) -> np.ndarray:
    """The first `n` MNIST test images as published: (n, 28, 28) uint8, pixels 0-255."""
    return np.array(idx.read(mnist_raw / "t10k-images-idx3-ubyte")[:n])
