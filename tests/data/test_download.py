"""The download stage as DVC runs it: why each source failed, in one line each."""

from tests.conftest import run_dvc_stage, write_params


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


def test_cli_says_why_each_source_failed_before_the_one_that_worked(tmp_path, mnist_raw):
    p = write_params(
        tmp_path / "params.yaml",
        data__sources=["http", "local"],
        data__mirrors=["http://nonexistent.invalid/", "http://127.0.0.1:1/"],
        data__source_dir=str(mnist_raw),
    )
    done = run_dvc_stage("download", tmp_path, p)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "download: http failed: no mirror served train-images-idx3-ubyte.gz "
        "(2 tried: name not resolved, connection refused); trying local",
    ]
    assert done.stdout.startswith("download: 4 verified MNIST files in ")
