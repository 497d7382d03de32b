"""The stage contract: one readable line on bad input, outputs whole or not at all."""

import subprocess
import sys

import pytest

from lenet_mnist.errors import PipelineError
from lenet_mnist.outputs import replacing, writing


def test_replacing_swaps_the_folder_in_only_when_the_block_succeeds(tmp_path):
    out = tmp_path / "out"
    with replacing(out) as staging:
        (staging / "a").write_text("first")
    with pytest.raises(OSError), replacing(out) as staging:
        (staging / "a").write_text("half")
        raise OSError("No space left on device")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no partial folder left
    assert (out / "a").read_text() == "first"


def test_a_pipeline_error_is_one_line_on_stderr_and_exit_code_2():
    code = (
        "from lenet_mnist.errors import PipelineError, run_stage\n"
        "def main(): raise PipelineError('x=1 is not allowed; use 2')\n"
        "run_stage(main)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr == "error: x=1 is not allowed; use 2\n"
    assert issubclass(PipelineError, Exception)


def test_staging_left_by_a_killed_run_is_removed_by_the_next(tmp_path):
    dead = tmp_path / ".out-partial-abc123"
    (dead / "half").mkdir(parents=True)
    other = tmp_path / ".raw-partial-keep"  # another output's staging is not this one's
    other.mkdir()
    with replacing(tmp_path / "out") as staging:
        (staging / "a").write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".raw-partial-keep", "out"]


def test_writing_swaps_files_and_folders_in_together_or_not_at_all(tmp_path):
    table, folder = tmp_path / "table.csv", tmp_path / "figures"
    with writing(table, folder) as (table_file, figures_dir):
        table_file.write_text("v1")
        figures_dir.mkdir()
        (figures_dir / "a.png").write_text("v1")
    with pytest.raises(OSError), writing(table, folder) as (table_file, figures_dir):
        table_file.write_text("v2")  # written, then the folder fails: neither may change
        raise OSError(28, "No space left on device")
    assert table.read_text() == "v1" and (folder / "a.png").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures", "table.csv"]


FULL_DISK = """
def main():
    with open("/dev/full", "w") as f:  # the kernel's always-full device
        f.write("x" * 10**6)
"""
MISSING = """
def main():
    open("/nowhere/raw/t10k-labels-idx1-ubyte", "rb")
"""


@pytest.mark.parametrize(
    ("body", "line"),
    [
        (FULL_DISK, "error: No space left on device; the disk is full: free space on it, "
                    "or write elsewhere\n"),
        (MISSING, "error: /nowhere/raw/t10k-labels-idx1-ubyte: No such file or directory; "
                  "check the path, or run the stage that makes it\n"),
    ],
)  # fmt: skip
def test_a_full_disk_or_a_missing_file_is_one_line_naming_what_it_can(body, line):
    code = f"from lenet_mnist.errors import run_stage\n{body}\nrun_stage(main)\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1  # the environment
    assert done.stderr == line
