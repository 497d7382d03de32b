"""dvc.yaml itself: `dvc exp run -S` composes conf/ into params.yaml and runs every stage.

The repository's tracked files are copied into a fresh git repo, so the test sees the
working tree as a new clone would, and the real MNIST files come from the local source.
"""

import hashlib
import json
import re
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import REPO, mlflow_runs, user_shell
from tests.conftest import run_ok as _run
from tests.trained import committed_sets, committed_slice

pytestmark = pytest.mark.slow


DVC = (sys.executable, "-m", "dvc")


def test_exp_run_composes_overrides_and_runs_all_stages(mnist_raw, tmp_path_factory, tmp_path):
    # committed_slice's `dvc exp run -n slice -S ...`, with the fast preset, then committed.
    clone = committed_slice(mnist_raw, tmp_path_factory, tmp_path / "repo")
    env = user_shell()
    composed = yaml.safe_load((clone / "params.yaml").read_text())
    assert composed["train"]["batch_size"] == 50 and composed["data"]["train_limit"] == 3000
    assert composed["optimizer"]["scheduler"] == "onecycle"  # from the preset
    metrics = json.loads((clone / "data/metrics/test.json").read_text())
    assert 0.5 < metrics["test_acc"] <= 1
    shown = json.loads(_run(*DVC, "exp", "show", "--json", "-n", "2", cwd=clone, env=env))
    assert "slice" in json.dumps(shown) and "test_acc" in json.dumps(shown)
    # Nothing changed since: the pipeline is up to date.
    assert "up to date" in _run(*DVC, "status", cwd=clone, env=env)
    # A bad value is refused by the check stage, before DVC removes any stage's outputs.
    kept = [clone / "dvc.lock", clone / "data/params-valid.txt", *(clone / "data").rglob("*.*")]
    before = {p: p.read_bytes() for p in kept if p.is_file()}
    params = (clone / "params.yaml").read_text()
    # A value out of range or of the wrong type: the schema's one line, from the check stage.
    for value, allowed in (("0", "an integer >= 1"), ("1.5", "an integer"), ("abc", "an integer")):
        bad = subprocess.run(
            [*DVC, "exp", "run", "-S", f"train.batch_size={value}"],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
        )
        assert bad.returncode != 0
        said = f"error: train.batch_size={value} is not allowed; use {allowed}\n"
        assert said in bad.stderr, bad.stderr
    assert {p: p.read_bytes() for p in before if p.is_file()} == before  # every file intact
    changed = json.loads(_run(*DVC, "status", "--json", cwd=clone, env=env))
    assert changed and all(
        set(entry) == {"changed deps"} and set(entry["changed deps"]) == {"params.yaml"}
        for entries in changed.values()
        for entry in entries
    ), changed
    (clone / "params.yaml").write_text(params)  # the user's way back: the old params
    assert "up to date" in _run(*DVC, "status", cwd=clone, env=env)
    # A value the check allows fails in training: DVC deleted train's outputs before it
    # ran, and the failed stage checks them out again, so the last good results stay.
    diverging = yaml.safe_load(params)
    diverging["optimizer"].update(lr=1e6, scheduler="cosine")
    (clone / "params.yaml").write_text(yaml.safe_dump(diverging, sort_keys=False))
    failed = subprocess.run([*DVC, "repro"], cwd=clone, env=env, capture_output=True, text=True)
    assert failed.returncode != 0
    assert "error: training diverged: the val loss was " in failed.stderr, failed.stderr[-3000:]
    lock = clone / "dvc.lock"
    assert {p: p.read_bytes() for p in before if p.is_file() and p != lock} == {
        p: b for p, b in before.items() if p != lock
    }  # every output and committed file intact
    stages = yaml.safe_load(lock.read_text())["stages"]
    stages_before = yaml.safe_load(before[lock])["stages"]
    assert {k: v for k, v in stages.items() if k != "check"} == {
        k: v for k, v in stages_before.items() if k != "check"
    }  # only the check stage, which passed, recorded its new params
    changed = json.loads(_run(*DVC, "status", "--json", cwd=clone, env=env))
    assert changed == {"train": [{"changed deps": {"params.yaml": {"optimizer": "modified"}}}]}
    (clone / "params.yaml").write_text(params)  # back: only the check runs, to the same verdict
    again = _run(*DVC, "repro", cwd=clone, env=env)
    assert again.count("Running stage") == 1 and "Running stage 'check'" in again, again
    # Editing the module that defines LeNet-5 makes train and what follows it stale, and
    # neither download nor prepare: their code deps are the packages they import.
    module = clone / "src/lenet_mnist/model/networks.py"
    module.write_text(module.read_text() + "# a comment\n")
    changed = json.loads(_run(*DVC, "status", "--json", cwd=clone, env=env))
    assert set(changed) == {"train", "evaluate", "publish"}, changed
    for stage in changed:
        deps = [e["changed deps"] for e in changed[stage] if "changed deps" in e]
        assert deps == [{"src/lenet_mnist/model": "modified"}], (stage, changed)


def _wait_for_queue(clone, env, timeout_s=900):
    deadline = time.monotonic() + timeout_s
    while True:
        status = _run(*DVC, "queue", "status", cwd=clone, env=env)
        if not re.search(r"\b(Queued|Running)\b", status):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(2)


def _training_runs(db):
    return mlflow_runs(f"sqlite:///{db}")[1]


def _readme_exp_show(clone, env) -> str:
    """The README's `dvc exp show` line, run at 120 columns: it must fit, nothing elided."""
    readme = (REPO / "README.md").read_text()
    (line,) = [x for x in readme.splitlines() if x.startswith("dvc exp show ")]
    table = subprocess.run(
        line + " --no-pager",
        shell=True,
        cwd=clone,
        env={**env, "COLUMNS": "120"},
        capture_output=True,
        text=True,
    ).stdout
    header = table.splitlines()[1].split()
    for column in ("train.batch_size", "train.epochs", "optimizer.lr", "test_acc"):
        assert column in header, table
    assert "…" not in table and max(map(len, table.splitlines())) <= 120, table
    return table


def test_queued_grid_runs_shows_and_is_not_trained_twice(mnist_raw, tmp_path_factory, tmp_path):
    # No MLFLOW_TRACKING_URI: the queued copies must log into the clone's own mlflow.db,
    # which holds committed_slice's run, at batch size 50.
    clone = committed_slice(mnist_raw, tmp_path_factory, tmp_path / "repo")
    env = user_shell()
    (committed,) = _training_runs(clone / "mlflow.db")
    _run("dvc", "exp", "run", "--queue", *committed_sets(mnist_raw, "50,100"), cwd=clone, env=env)
    _run(*DVC, "queue", "start", cwd=clone, env=env)
    status = _wait_for_queue(clone, env)
    assert status.count("Success") == 2, status
    shown = json.loads(_run(*DVC, "exp", "show", "--json", cwd=clone, env=env))
    exps = [e for rev in shown for e in (rev.get("experiments") or [])]
    points, names = {}, {}
    for exp in exps:
        data = exp["revs"][0]["data"]
        size = data["params"]["params.yaml"]["data"]["train"]["batch_size"]
        points[size] = data["metrics"]["data/metrics/test.json"]["data"]["test_acc"]
        names[size] = exp["name"]
    assert set(points) == {50, 100} and all(0.2 < a <= 1 for a in points.values()), points
    # The committed point is not trained again: DVC's run cache restores its training.
    trained = _training_runs(clone / "mlflow.db")
    (new,) = [r for r in trained if r.info.run_id != committed.info.run_id]
    assert new.data.params["train.batch_size"] == "100"
    assert new.data.tags["dvc_exp_name"] == names[100]  # MLflow run <-> DVC exp
    table = _readme_exp_show(clone, env)
    # One row per point, beside the workspace's and HEAD's (the committed batch size 50).
    assert table.count(" 100 ") == 1 and table.count(" 50 ") == 3, table


def _git(*args, cwd):
    return _run("git", "-c", "user.name=t", "-c", "user.email=t@t", *args, cwd=cwd)


def _tree(root):
    """Every file under root by its relative path, with its bytes' MD5 (DVC's own hash)."""
    return {
        p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _locked_tree(repo, out):
    """The files that dvc.lock records for a cached directory output, from repo's cache."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    (md5,) = [
        o["md5"] for s in lock["stages"].values() for o in s.get("outs", []) if o["path"] == out
    ]
    assert md5.endswith(".dir"), (out, md5)
    manifest = repo / ".dvc/cache/files/md5" / md5[:2] / md5[2:]
    return {e["relpath"]: e["md5"] for e in json.loads(manifest.read_text())}


CACHED_OUTS = ("data/raw", "data/prepared", "data/model", "data/figures")


def test_pushed_results_pull_into_a_fresh_clone_without_recomputing(
    mnist_raw, tmp_path_factory, tmp_path
):
    # Each clone logs to its own mlflow.db, as on two team members' machines.
    env = user_shell()
    # Committed as this repository commits them: the uncached outputs (the check stage's
    # verdict, the metrics) in git, the cached ones only as hashes in dvc.lock.
    clone = committed_slice(mnist_raw, tmp_path_factory, tmp_path / "repo")
    assert len(_training_runs(clone / "mlflow.db")) == 1
    assert _git("ls-files", "data/params-valid.txt", "data/metrics/test.json", cwd=clone)
    remote = tmp_path / "team-remote"
    _run(*DVC, "remote", "add", "-d", "team", str(remote), cwd=clone, env=env)
    _git("add", ".dvc/config", cwd=clone)
    _git("commit", "-qm", "team remote", cwd=clone)
    assert not _git("status", "--porcelain", cwd=clone)
    _run(*DVC, "push", cwd=clone, env=env)
    assert any(remote.rglob("*.dir"))

    fresh = tmp_path / "fresh"
    _run("git", "clone", "-q", str(clone), str(fresh), cwd=tmp_path)
    assert not any((fresh / out).exists() for out in CACHED_OUTS)
    assert (fresh / "data/params-valid.txt").is_file()  # from git, not from the remote
    _run(*DVC, "pull", cwd=fresh, env=env)  # the remote comes from the committed .dvc/config
    for out in CACHED_OUTS:
        pulled = _tree(fresh / out)
        assert pulled and pulled == _tree(clone / out) == _locked_tree(fresh, out), out
    assert (fresh / "data/model/weights.safetensors").is_file()
    # Only the publishing receipt is missing: each clone publishes into its own store.
    status = json.loads(_run(*DVC, "status", "--json", cwd=fresh, env=env))
    assert status == {"publish": [{"changed outs": {"data/published.json": "deleted"}}]}, status
    repro = subprocess.run([*DVC, "repro"], cwd=fresh, env=env, capture_output=True, text=True)
    said = repro.stdout + repro.stderr
    assert repro.returncode == 0 and said.count("Running stage") == 1, said
    assert "Running stage 'publish'" in said, said
    for stage in ("check", "download", "prepare", "train", "evaluate"):
        assert f"Stage '{stage}' didn't change, skipping" in said, said
    assert not _git("status", "--porcelain", cwd=fresh)
    (run,) = _training_runs(fresh / "mlflow.db")  # no training: the pulled weights, published
    assert run.data.tags["note"] == "weights restored, not trained"
    assert "registered lenet-mnist version 1 (now the champion)" in said, said
    assert "Data and pipelines are up to date." in _run(*DVC, "status", cwd=fresh, env=env)

    # Without the committed verdict file, only the check stage runs: it writes the same
    # bytes, so every other stage still matches dvc.lock.
    (fresh / "data/params-valid.txt").unlink()
    repro = subprocess.run([*DVC, "repro"], cwd=fresh, env=env, capture_output=True, text=True)
    said = repro.stdout + repro.stderr
    assert repro.returncode == 0 and said.count("Running stage") == 1, said
    assert "Running stage 'check'" in said, said
    assert not _git("status", "--porcelain", cwd=fresh)
    assert len(_training_runs(fresh / "mlflow.db")) == 1
