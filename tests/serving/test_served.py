"""The model as MLflow users meet it: the served pyfunc, the run's models, the registry."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient
from safetensors.torch import save_file

from lenet_mnist.config import parse
from lenet_mnist.data import prepare
from lenet_mnist.errors import PipelineError
from lenet_mnist.evaluation import evaluate
from lenet_mnist.model import inference, networks
from lenet_mnist.serving import logged, publish, pyfunc
from lenet_mnist.tracking import store
from tests.conftest import SLICE, mlflow_runs, new_store, write_params
from tests.trained import raw_test_images, trained_slice


def test_raw_images_become_the_prepared_test_arrays_bit_for_bit(prepared_slice, mnist_raw):
    """A served image must reach the network exactly as the test set did in evaluate."""
    prepared, _ = prepared_slice
    stats = prepare.read_stats(prepared)
    x, _ = prepare.read_split(prepared, "test")
    raw = raw_test_images(mnist_raw, len(x))
    got = pyfunc.to_network_input(raw, stats["mean"], stats["std"])
    assert got.dtype == np.float32 and got.shape == x.shape
    assert np.array_equal(got, x)
    as_json = json.loads(json.dumps(raw[:3].tolist()))  # what a client posts: plain numbers
    assert np.array_equal(pyfunc.to_network_input(as_json, stats["mean"], stats["std"]), x[:3])


def test_the_input_example_is_the_first_raw_test_image(prepared_slice, mnist_raw):
    example = logged._raw_example(prepared_slice[0])
    assert np.array_equal(example, raw_test_images(mnist_raw, 1).astype(np.float32))


def test_an_image_of_the_wrong_size_is_refused_with_its_shape():
    with pytest.raises(Exception, match=r"images of shape \(1, 32, 32\); expected \(N, 28, 28\)"):
        pyfunc.to_network_input(np.zeros((1, 32, 32)), 0.1, 0.3)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, -1.0, -0.5, 255.5, 1e9])
def test_a_pixel_no_mnist_image_holds_is_refused_by_name(bad):
    images = np.zeros((3, 28, 28))
    images[2, 5, 7] = bad
    said = f"image 2 has pixel {np.float32(bad):g} at row 5, column 7; pixels must be finite"
    with pytest.raises(PipelineError, match=re.escape(said)):
        pyfunc.to_network_input(images, 0.1, 0.3)


def test_the_ends_of_the_pixel_range_are_accepted():
    images = np.zeros((2, 28, 28))
    images[1] = 255
    assert np.isfinite(pyfunc.to_network_input(images, 0.1, 0.3)).all()


@pytest.mark.slow
def test_the_run_has_the_dataset_and_the_served_model_with_no_pickle(
    prepared_slice, tmp_path_factory
):
    """One logged model, from code: its safetensors weights alone give evaluate's digits."""
    done = trained_slice(prepared_slice, tmp_path_factory)
    client, (run,) = mlflow_runs(done["db"])
    (dataset,) = [d.dataset for d in run.inputs.dataset_inputs]
    digest = prepare.read_stats(prepared_slice[0])["digest"]
    assert (dataset.name, dataset.digest) == (logged.DATASET, digest[:12])
    (served,) = client.search_logged_models([run.info.experiment_id])
    assert served.name == logged.SERVED_MODEL and served.status == LoggedModelStatus.READY
    assert [o.model_id for o in run.outputs.model_outputs] == [served.model_id]
    folder = Path(urllib.parse.urlparse(served.artifact_location).path)
    files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    assert logged.MODEL_CODE.name in files and "artifacts/weights.safetensors" in files
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".pt", ".pth"))], files
    net = networks.load("lenet5", folder / "artifacts" / "weights.safetensors")
    x, _ = prepare.read_split(prepared_slice[0], "test")
    assert inference.logits(net, x).argmax(1).tolist() == done["predicted"]


def _evaluate_and_publish(
    weights: Path, prepared: Path, params: Path, out: Path, promote: bool = True
) -> tuple[float, publish.Published]:
    """The evaluate and publish stages' code on these weights (MLFLOW_TRACKING_URI names
    the store)."""
    cfg = parse.load(params)
    outputs = evaluate.Outputs(out / "test.json", out / "predictions.csv", out / "figures")
    history = out / "history.csv"
    history.write_text("epoch,train_loss,train_acc,val_loss,val_acc\n1,1,0.1,1,0.1\n")
    metrics = evaluate.evaluate(cfg.model.name, weights, prepared, history, outputs)
    files = outputs.files()
    return metrics["test_acc"], publish.publish(
        cfg, weights, prepared, metrics, files, None, promote
    )


@pytest.mark.slow
def test_the_champion_alias_moves_only_to_a_model_at_least_as_accurate(
    prepared_slice, tmp_path_factory, tmp_path, monkeypatch
):
    """Untrained weights first (the only model, so the champion), then the trained ones
    take the alias, then other untrained weights do not; publishing the trained weights
    once more registers nothing."""
    done = trained_slice(prepared_slice, tmp_path_factory)
    db = new_store(tmp_path / "registry")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", db)
    untrained = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        untrained.append(tmp_path / f"untrained{seed}.safetensors")
        save_file(networks.build("lenet5").state_dict(), untrained[-1])
    trained = done["data"] / "model" / "weights.safetensors"
    accs = []
    for i, weights in enumerate([untrained[0], trained, untrained[1]]):
        (tmp_path / str(i)).mkdir()
        acc, published = _evaluate_and_publish(
            weights, prepared_slice[0], done["params"], tmp_path / str(i)
        )
        accs.append(acc)
        assert published.version == str(i + 1) and published.new
        assert published.champion == (i < 2), (i, accs)
    assert accs[0] < accs[1] and accs[2] < accs[1]
    (tmp_path / "again").mkdir()
    _, again = _evaluate_and_publish(trained, prepared_slice[0], done["params"], tmp_path / "again")
    assert (again.version, again.new) == ("2", False)
    client = MlflowClient(db)
    assert len(client.search_model_versions("name = 'lenet-mnist'")) == 3
    champion = client.get_model_version_by_alias("lenet-mnist", publish.CHAMPION)
    assert str(champion.version) == "2" and float(champion.tags[publish.ACC_TAG]) == accs[1]


@pytest.mark.slow
def test_an_experiments_version_takes_the_champion_alias_only_from_the_workspace(
    prepared_slice, tmp_path_factory, tmp_path, monkeypatch
):
    """Untrained weights are the champion; the trained ones published as a DVC experiment
    register a version and leave the alias; published again from the workspace, they take it."""
    done = trained_slice(prepared_slice, tmp_path_factory)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", new_store(tmp_path / "registry"))
    untrained = tmp_path / "untrained.safetensors"
    save_file(networks.build("lenet5").state_dict(), untrained)
    trained = done["data"] / "model" / "weights.safetensors"
    said = []
    for i, (weights, promote) in enumerate([(untrained, True), (trained, False), (trained, True)]):
        (tmp_path / str(i)).mkdir()
        _, published = _evaluate_and_publish(
            weights, prepared_slice[0], done["params"], tmp_path / str(i), promote
        )
        said.append((published.version, published.new, published.champion))
    assert said == [("1", True, True), ("2", True, False), ("2", False, True)]


@pytest.mark.slow
def test_a_publish_that_fails_leaves_no_test_metrics_and_the_same_command_completes_it(
    prepared_slice, tmp_path_factory, tmp_path, monkeypatch
):
    """The experiment's artifacts go where a file stands in the way of a folder: publish
    fails writing, and the run holds no test metrics and the registry no version; with the
    way cleared, the same publish completes."""
    done = trained_slice(prepared_slice, tmp_path_factory)
    db = new_store(tmp_path / "registry")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", db)
    blocker = tmp_path / "artifacts"
    blocker.write_text("a file, not a folder")
    client = MlflowClient(db)
    name = parse.load(done["params"]).logger.experiment_name
    client.create_experiment(name, artifact_location=blocker.joinpath("runs").as_uri())
    trained = done["data"] / "model" / "weights.safetensors"
    (tmp_path / "out").mkdir()
    with pytest.raises(OSError):
        _evaluate_and_publish(trained, prepared_slice[0], done["params"], tmp_path / "out")
    (run,) = mlflow_runs(db)[1]
    assert not [k for k in run.data.metrics if k.startswith("test_")], run.data.metrics
    assert client.search_model_versions("name = 'lenet-mnist'") == []
    blocker.unlink()
    blocker.mkdir()
    _, published = _evaluate_and_publish(
        trained, prepared_slice[0], done["params"], tmp_path / "out"
    )
    assert (published.version, published.champion) == ("1", True)
    (run,) = mlflow_runs(db)[1]
    assert (
        run.data.metrics["test_acc"]
        == json.loads((tmp_path / "out/test.json").read_text())["test_acc"]
    )


_KILLED_MID_LOG = """
import os, signal, sys
from pathlib import Path
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient
from lenet_mnist.serving import logged
db, experiment, weights = sys.argv[1:]
logged.pending(MlflowClient(db), experiment, logged.SERVED_MODEL, None, Path(weights))
os.kill(os.getpid(), signal.SIGKILL)  # kill -9 between MLflow's create and finalize
"""


@pytest.mark.slow
def test_with_registration_off_the_same_weights_are_logged_once_and_killed_logs_fail(
    prepared_slice, tmp_path_factory, tmp_path, monkeypatch
):
    """A publish killed mid-log left a PENDING "digits" of these weights: the next publish
    marks it FAILED and logs its own, as it does a PENDING model that names no writer, and
    leaves a live process's PENDING model alone."""
    done = trained_slice(prepared_slice, tmp_path_factory)
    db = new_store(tmp_path / "unregistered")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", db)
    params = write_params(tmp_path / "params.yaml", **SLICE, logger__registered_model=None)
    weights = done["data"] / "model" / "weights.safetensors"
    client = store.open_store(db)
    experiment = store.experiment_id(client, parse.load(params).logger.experiment_name)
    killed = subprocess.run([sys.executable, "-c", _KILLED_MID_LOG, db, experiment, str(weights)])
    assert killed.returncode == -signal.SIGKILL
    live = logged.pending(client, experiment, logged.SERVED_MODEL, None, weights)  # this process
    client.create_logged_model(experiment, logged.SERVED_MODEL)  # no writer tags, older
    said = []
    for attempt in ("first", "again"):
        (tmp_path / attempt).mkdir()
        _, published = _evaluate_and_publish(weights, prepared_slice[0], params, tmp_path / attempt)
        said.append((published.version, published.new, published.lines(None)[-1]))
    assert said[0][:2] == (None, True) and said[1][:2] == (None, False)
    assert said[1][2] == "publish: a logged model holds these weights already"
    client, (run,) = mlflow_runs(db)
    models = client.search_logged_models([run.info.experiment_id])
    by_status = sorted((m.status.value, m.model_id == live.model_id) for m in models)
    assert by_status == [("FAILED", False), ("FAILED", False), ("PENDING", True), ("READY", False)]
    assert all(m.name == logged.SERVED_MODEL for m in models)  # logged once, not twice
    assert client.search_registered_models() == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_served_champion_loads_without_pickle_and_answers_only_real_images(
    prepared_slice, tmp_path_factory, mnist_raw
):
    """`mlflow models serve` on models:/lenet-mnist@champion with MLflow's pickle loading
    off: 10 raw test images get evaluate's digits; a NaN, infinite, negative or huge pixel
    gets a 400 whose JSON names it; a request without a Content-Type gets MLflow's own 500."""
    done = trained_slice(prepared_slice, tmp_path_factory)
    port = _free_port()
    mlflow = str(Path(sys.executable).parent / "mlflow")
    argv = [mlflow, "models", "serve", "-m", "models:/lenet-mnist@champion",
            "--env-manager", "local", "-p", str(port), "-h", "127.0.0.1"]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": done["db"],
           "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}  # fmt: skip
    log = (done["root"] / "serve.log").open("w")
    server = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)  # fmt: skip
    images = raw_test_images(mnist_raw, 10)
    bad_pixels = (float("nan"), float("inf"), -1.0, 1e9)
    try:
        _wait_for(f"http://127.0.0.1:{port}/ping", server, done["root"] / "serve.log")
        status, answers = _post(port, {"inputs": images.tolist()})
        refused = [_post(port, {"inputs": _with_pixel(images[:2], bad)}) for bad in bad_pixels]
        untyped = _post(port, {"inputs": images[:1].tolist()}, content_type=None)
    finally:
        with contextlib.suppress(ProcessLookupError):  # gone already: its log says why
            os.killpg(server.pid, signal.SIGTERM)  # mlflow's own process and its uvicorn
        server.wait(timeout=30)
        log.close()
    assert status == 200, answers
    assert [a["digit"] for a in answers["predictions"]] == done["predicted"][:10]
    for a in answers["predictions"]:
        assert len(a["probabilities"]) == 10 and sum(a["probabilities"]) == pytest.approx(1)
        assert max(a["probabilities"]) == a["probabilities"][a["digit"]]
    for bad, (status, error) in zip(bad_pixels, refused, strict=True):
        assert (status, error["error_code"]) == (400, "INVALID_PARAMETER_VALUE"), error
        said = f"image 1 has pixel {bad:g} at row 14, column 14; pixels must be finite numbers"
        assert said in error["message"]
    assert untyped[0] == 500  # MLflow's scoring server; docs/serving.md says so


def _with_pixel(images: np.ndarray, value: float) -> list:
    changed = images.astype(np.float64)
    changed[1, 14, 14] = value
    return changed.tolist()


def _post(port: int, payload: dict, content_type: str | None = "application/json"):
    """POST /invocations: (status, the reply read as strict JSON, where NaN is no number).

    http.client sends no Content-Type unless told, unlike urllib's form default."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": content_type} if content_type else {}
    try:
        connection.request("POST", "/invocations", json.dumps(payload).encode(), headers)
        reply = connection.getresponse()
        status, body = reply.status, reply.read().decode()
    finally:
        connection.close()
    if status == 500:  # MLflow's own failure: plain text, not the model's answer
        return status, body
    return status, json.loads(body, parse_constant=_not_json)


def _not_json(token: str) -> None:
    raise AssertionError(f"the reply holds {token}, which JSON has no number for")


def _wait_for(ping: str, server: subprocess.Popen, log: Path, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"{server.args[:4]} exited {server.returncode}: {log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(ping, timeout=2).close()
            return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{server.args[:4]} did not answer {ping} in {timeout_s} s")
