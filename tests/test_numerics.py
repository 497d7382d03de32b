"""Portable numerics: the same weights whatever ISA and core count the machine offers.

One CPU type is at hand, so another machine is simulated: the environment caps ATen's and
oneDNN's instruction sets below the host's, and `taskset` gives the process one core.
`machine` mode must change its bits there (which shows the simulation bites), and
`portable` must not.
"""

import json
import os
import shutil
import subprocess
import sys
import types

import pytest
import torch

from lenet_mnist import numerics
from lenet_mnist.config import parse
from lenet_mnist.config.schema import TrainerConfig
from lenet_mnist.errors import PipelineError
from tests.conftest import REPO, new_store, stage_argv, stage_folder
from tests.trained import one_epoch

LOWER_ISA = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}


def _weights(prepared, tmp_path, mode, env=None, one_core=False) -> bytes:
    root = tmp_path / f"{mode}-{len(list(tmp_path.iterdir()))}"
    overrides = {"train__epochs": 1, "trainer__compile": False, "trainer__reproducible": mode}
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"  # one store for every run
    if not (tmp_path / "mlflow.db").exists():
        new_store(tmp_path)
    folder = stage_folder(root, prepared, db=db, **overrides)
    wrap = [shutil.which("taskset"), "-c", "0"] if one_core else []
    done = subprocess.run(
        [*wrap, *stage_argv("train"), "--params", str(folder.params)],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, **folder.env(**(env or {}))},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return (folder.data / "model/weights.safetensors").read_bytes()


@pytest.mark.slow
def test_portable_gives_one_result_under_other_isa_caps_and_core_counts(
    prepared_slice, tmp_path, tmp_path_factory
):
    prepared, _ = prepared_slice
    assert torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"), "needs an AVX2 host"
    staged = one_epoch(prepared_slice, tmp_path_factory)  # the host's own ISA and cores
    assert parse.load(staged["params"]).trainer.reproducible == "portable"
    portable = (staged["data"] / "model/weights.safetensors").read_bytes()
    other = {"env": LOWER_ISA, "one_core": len(os.sched_getaffinity(0)) > 1}  # fewer, if any
    assert _weights(prepared, tmp_path, "portable", **other) == portable
    machine = _weights(prepared, tmp_path, "machine")
    assert _weights(prepared, tmp_path, "machine") == machine  # reproducible on this machine
    assert _weights(prepared, tmp_path, "machine", **other) != machine


def _trainer(mode: str, threads: int | None = None, devices: int = 1) -> TrainerConfig:
    return TrainerConfig(
        accelerator="cpu",
        devices=devices,
        strategy="auto",
        num_nodes=1,
        precision="32-true",
        reproducible=mode,
        enable_progress_bar=False,
        compile=False,
        threads=threads,
        batch_group=1,
    )


def test_pin_sets_the_portable_settings_and_the_record_names_them():
    code = (
        "import json, os, torch\n"
        "from lenet_mnist import numerics\n"
        "from tests.test_numerics import _trainer\n"
        "numerics.pin(_trainer('portable'))\n"
        "print(json.dumps([torch.get_num_threads(), numerics.record(_trainer('portable'))]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    threads, record = json.loads(done.stdout)
    assert threads == numerics.PORTABLE_THREADS
    assert record["numerics.aten_capability"] == "AVX2"
    assert record["numerics.env.ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert record["numerics.threads"] == "1" and record["numerics.mode"] == "portable"
    assert "avx2" in record["numerics.isa_flags"].split()


@pytest.mark.parametrize(("devices", "omp"), [(1, None), (2, "1")])
def test_pin_hands_the_pinned_threads_to_ddp_ranks_only(devices, omp):
    """Lightning's DDP sets torch's threads to cores / ranks unless OMP_NUM_THREADS is set;
    its ranks start from this process's environment."""
    code = (
        "import json, os\n"
        "from lenet_mnist import numerics\n"
        "from tests.test_numerics import _trainer\n"
        f"numerics.pin(_trainer('portable', devices={devices}))\n"
        "print(json.dumps(os.environ.get('OMP_NUM_THREADS')))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == omp


def test_one_process_cannot_change_its_numerics(monkeypatch):
    monkeypatch.setattr(numerics, "_applied", ["portable"])
    with pytest.raises(PipelineError, match="trainer.reproducible=machine after portable"):
        numerics.pin(_trainer("machine"))


def test_a_torch_without_inductors_march_key_is_pinned_without_it(monkeypatch):
    """torch 2.11 (a GPU image's) has no cpp.march and refuses unknown keys: pin must not
    fail there. That torch cannot be installed beside the pinned one, so a stand-in
    config object that refuses the key plays it."""

    class Cpp:
        __slots__ = ()  # setting any attribute raises AttributeError, as torch's config does

    monkeypatch.setitem(sys.modules, "torch._inductor.config", types.SimpleNamespace(cpp=Cpp()))
    monkeypatch.setattr(numerics, "_applied", [])
    monkeypatch.setattr(os, "environ", dict(os.environ))  # pin is process-wide: keep it here
    threads = torch.get_num_threads()
    cfg = parse.validate(parse.compose()).trainer
    try:
        numerics.pin(cfg)  # raised AttributeError before
    finally:
        torch.set_num_threads(threads)
    assert numerics._applied == [cfg.reproducible]
