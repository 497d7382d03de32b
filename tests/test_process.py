"""What an entry point sets before torch loads: OpenMP's passive waiting, unless the user
set a wait policy of their own; and the collector paused while it loads."""

import gc
import json
import os
import subprocess
import sys

import pytest

from lenet_mnist import process
from tests.trained import one_epoch

WAIT = "OMP_WAIT_POLICY"


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != WAIT}  # as a user's shell has it
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**base, **env}
    )


def test_prepare_sets_passive_waiting_and_keeps_a_users_own():
    code = "import os; from lenet_mnist import process; process.prepare(); print(os.environ[%r])"
    assert _python(code % WAIT).stdout.strip() == "PASSIVE"
    assert _python(code % WAIT, OMP_WAIT_POLICY="ACTIVE").stdout.strip() == "ACTIVE"


def test_prepare_refuses_once_torch_is_loaded():
    done = _python("import torch; from lenet_mnist import process; process.prepare()")
    assert done.returncode == 1
    assert "prepare() must run before torch is imported" in done.stderr


def test_importing_pauses_the_collector_and_freezes_what_loaded():
    sys.modules.pop("colorsys", None)
    frozen = gc.get_freeze_count()
    try:
        with process.importing():
            assert not gc.isenabled()
            import colorsys  # noqa: F401

            loaded = [[] for _ in range(1000)]  # containers the collector tracks
        assert gc.isenabled()
        assert gc.get_freeze_count() >= frozen + len(loaded)
    finally:
        gc.unfreeze()
        gc.enable()


def test_importing_nothing_new_freezes_nothing():
    """A sweep's later job: the garbage of the job before it must stay collectable."""
    import colorsys  # noqa: F401

    frozen = gc.get_freeze_count()
    with process.importing():
        import colorsys  # noqa: F401, F811

        garbage = [[] for _ in range(1000)]
    assert gc.isenabled() and garbage
    assert gc.get_freeze_count() == frozen


@pytest.mark.slow
def test_the_train_stage_started_without_a_wait_policy_trains_with_passive_waiting(
    prepared_slice, tmp_path_factory
):
    """What the run records is what OpenMP was started with: the stage set it before torch."""
    staged = one_epoch(prepared_slice, tmp_path_factory)  # started without one
    assert staged["wait"] is None
    timings = json.loads((staged["data"] / "timings" / "train.json").read_text())
    assert timings["numerics"][f"numerics.env.{WAIT}"] == "PASSIVE"
