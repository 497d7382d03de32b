"""The download stage as DVC runs it: every source fails, and it says so in one line."""

from .conftest import run_dvc_stage, write_params


def test_cli_failure_is_one_line_and_leaves_nothing(tmp_path):
    p = write_params(
        tmp_path / "params.yaml",
        data__sources=["http", "local"],
        data__mirrors=["http://127.0.0.1:1/"],
        data__source_dir=str(tmp_path / "nowhere"),
    )
    done = run_dvc_stage("download", tmp_path, p)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: could not get MNIST from any source; http: ")
    assert "local: " in lines[-1] and "Traceback" not in done.stderr
    assert [p.name for p in tmp_path.rglob("*") if not p.is_dir()] == ["params.yaml"]
