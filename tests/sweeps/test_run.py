"""`python -m lenet_mnist.run` as a user types it: bad input is one line and leaves nothing."""

import re
import subprocess
import sys

import pytest

from tests.conftest import hydra_train, new_store


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["train.epochs=0"], "error: train.epochs=0 is not allowed; use an integer >= 1"),
        (
            ["train.batch_sizee=64"],
            "error: train.batch_sizee is not a config key; did you mean train.batch_size?",
        ),
        (
            ["+train.batch_sizee=64"],
            "error: train.batch_sizee is not a config key; did you mean train.batch_size?",
        ),
        (["train.batch_size=abc"], "error: train.batch_size=abc is not allowed; use an integer"),
        (["launcher=nowhere"], "error: In 'config': Could not find 'launcher/nowhere'"),
        (
            ["launcher=null"],
            "error: launcher=null: a config group takes one of its options "
            "(basic, joblib, slurm, submitit_local); ~launcher leaves it out",
        ),
        (
            ["train.epochs=${nope.x}"],
            "error: train.epochs: Interpolation key 'nope.x' not found",
        ),
        (
            ["hydra.run.dir=/dev/full"],
            "error: /dev/full: cannot write here (not a folder); choose a writable folder",
        ),
    ],
)
def test_a_bad_override_stops_a_run_with_one_line_and_leaves_nothing(tmp_path, overrides, line):
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = hydra_train(*overrides, f"paths.runs={tmp_path / 'runs'}", cwd=tmp_path, db=db)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [line]
    assert not (tmp_path / "mlflow.db").exists()
    assert list((tmp_path / "runs").glob("*")) == []  # Hydra's run folder is removed too


def test_a_refused_value_answers_before_torch_lightning_or_mlflow_load(tmp_path):
    code = (
        "import atexit, runpy, sys\n"
        "heavy = {'torch', 'pytorch_lightning', 'lightning', 'mlflow'}\n"
        "atexit.register(lambda: print(sorted({m.split('.')[0] for m in sys.modules} & heavy)))\n"
        "sys.argv = ['run', 'train.epochs=0']\n"
        "runpy.run_module('lenet_mnist.run', run_name='__main__')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == "[]\n", done.stdout


def test_a_sweep_whose_folder_cannot_be_made_stops_before_any_mlflow_run(prepared_slice, tmp_path):
    """The sweep's parent run opened before Hydra made the folder, and stayed RUNNING."""
    prepared, _ = prepared_slice
    (blocker := tmp_path / "results").write_text("a file where the sweeps folder should be")
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    grid = ("-m", "train.batch_size=50,100", f"paths.prepared={prepared}")
    done = hydra_train(*grid, f"paths.sweeps={blocker / 'sweeps'}", cwd=tmp_path, db=db)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == [
        f"error: {blocker}: cannot write here (not a folder); choose a writable folder"
    ]
    # No MLflow store was even created, so no run can be RUNNING; nor any folder made.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


@pytest.mark.slow
def test_two_runs_started_at_once_get_a_folder_each(prepared_slice, tmp_path):
    prepared, _ = prepared_slice
    runs = tmp_path / "runs"
    common = [
        "train.epochs=1",
        "trainer.compile=false",
        "trainer.enable_progress_bar=false",
        f"paths.prepared={prepared}",
        f"paths.runs={runs}",
    ]
    procs = [
        hydra_train(f"train.batch_size={size}", *common, cwd=tmp_path, db=db, background=True)
        for size, db in (
            (250, new_store(tmp_path / "a")),
            (500, new_store(tmp_path / "b")),
        )
    ]
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
    folders = sorted(runs.iterdir())
    assert len(folders) == 2
    for folder in folders:
        assert (folder / "model" / "weights.safetensors").is_file()
        assert (folder / "test.json").is_file()


def test_help_explains_the_command_without_loading_lightning_or_mlflow(tmp_path):
    """`--help` prints the pipeline's own page, and stays quick by loading neither."""
    code = (
        "import sys\n"
        "sys.argv = ['lenet_mnist.run', '--help']\n"
        "from lenet_mnist import run\n"
        "try:\n"
        "    run.main()\n"
        "finally:\n"  # Hydra exits after the help
        "    print('loaded:', [m for m in ('pytorch_lightning', 'mlflow') if m in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert out.startswith("lenet_mnist.run: train LeNet-5 on MNIST and test it")
    assert "python -m lenet_mnist.run -m train.batch_size=32,64,128" in out
    for group in ("data", "model", "optimizer", "train", "trainer", "logger", "launcher"):
        assert re.search(rf"^  {group} +\S", out, re.M), group  # one line per group
    assert "experiment: fast" in out  # the options come from conf/ itself
    assert out.rstrip().endswith("loaded: []")
