"""Links into the MLflow UI: the server's own, or the local `mlflow ui` for a store."""

import pytest

from lenet_mnist.tracking import ui


@pytest.mark.parametrize(
    ("uri", "base"),
    [
        ("sqlite:///mlflow.db", "http://127.0.0.1:5000"),
        ("sqlite:////abs/path/m.db", "http://127.0.0.1:5000"),
        ("http://10.0.0.5:8080/", "http://10.0.0.5:8080"),
        ("https://user:secret@mlflow.example.org/team/", "https://mlflow.example.org/team"),
        ("http://[::1]:5001", "http://[::1]:5001"),
    ],
)
def test_ui_links_name_the_server_or_the_local_mlflow_ui(uri, base):
    assert ui.run_url(uri, "3", "abc") == (
        f"{base}/#/experiments/3/runs/abc?workflowType=machine_learning"
    )
    assert ui.experiment_url(uri, "3") == (
        f"{base}/#/experiments/3/runs?workflowType=machine_learning&viewStateShareKey=lenet-runs"
    )
    assert ui.experiment_url(uri, "3", columns=False) == (
        f"{base}/#/experiments/3/runs?workflowType=machine_learning"
    )


def test_only_a_store_without_a_server_needs_mlflow_ui_started():
    assert ui.ui_command("sqlite:///mlflow.db") == (
        "mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1"
    )
    assert ui.ui_command("http://127.0.0.1:5000") is None


def test_the_ui_command_names_a_store_in_the_working_folder_relative_to_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ui.ui_command(f"sqlite:///{tmp_path}/sub/mlflow.db") == (
        "mlflow ui --backend-store-uri sqlite:///sub/mlflow.db --host 127.0.0.1"
    )


def test_the_ui_command_quotes_a_store_path_with_a_space(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ui.ui_command("sqlite:////elsewhere/my runs/mlflow.db") == (
        "mlflow ui --backend-store-uri 'sqlite:////elsewhere/my runs/mlflow.db' --host 127.0.0.1"
    )


def test_a_stage_ends_with_its_run_page_the_runs_table_and_how_to_open_them():
    lines = ui.where("train", "sqlite:///mlflow.db", "1", "abc").splitlines()
    assert lines == [
        "train: MLflow run abc: http://127.0.0.1:5000/#/experiments/1/runs/abc"
        "?workflowType=machine_learning",
        "train: all runs: http://127.0.0.1:5000/#/experiments/1/runs"
        "?workflowType=machine_learning&viewStateShareKey=lenet-runs",
        "train: start the UI first: mlflow ui --backend-store-uri sqlite:///mlflow.db"
        " --host 127.0.0.1",
    ]
    assert len(ui.where("evaluate", "http://10.0.0.5:8080", "1", "abc").splitlines()) == 2
