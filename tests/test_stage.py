"""The stage contract: one readable line on bad input, outputs whole or not at all."""

import subprocess
import sys

import pytest

from lenet_mnist.stage import PipelineError, replacing


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
        "from lenet_mnist.stage import PipelineError, run_stage\n"
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
