"""Provenance tags: the code, data and machine behind a run."""

import subprocess

from lenet_mnist import numerics
from lenet_mnist.tracking import provenance, store
from tests.conftest import REPO


def test_dvc_lock_hash_reads_the_stage_output(tmp_path):
    lock = tmp_path / "dvc.lock"
    lock.write_text(
        "schema: '2.0'\nstages:\n  prepare:\n    outs:\n    - path: data/prepared\n"
        "      md5: abc.dir\n"
    )
    assert provenance.dvc_lock_hash("prepare", "data/prepared", lock) == "abc.dir"
    assert provenance.dvc_lock_hash("train", "data/model", lock) == "unknown"
    assert provenance.dvc_lock_hash("prepare", "x", tmp_path / "missing.lock") == "unknown"


def test_run_tags_name_the_data_and_the_machine(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_EXP_NAME", "quick-fig")
    tags = provenance.run_tags(tmp_path / "prepared", "d1g3st")
    assert tags["dataset_digest"] == "d1g3st" and tags["dvc_exp_name"] == "quick-fig"
    assert tags["dvc_data_md5"] == "unknown"  # no dvc.lock in this folder
    assert numerics.cpu_info().get("model name", "") in tags[store.MACHINE_TAG]
    assert tags["git_commit"] == "unknown"  # tmp_path is no git repository


def test_git_commit_is_the_checkout_head(monkeypatch):
    monkeypatch.chdir(REPO)
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO)
    assert provenance.run_tags(REPO / "data/prepared", "d")["git_commit"] == head.stdout.strip()


def test_sha256_is_the_file_digest(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert provenance.sha256(tmp_path / "f") == expected
