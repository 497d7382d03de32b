"""The model as MLflow users meet it: the served pyfunc, the run's models, the registry."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import save_file

from lenet_mnist.config import parse
from lenet_mnist.data import prepare
from lenet_mnist.evaluation import evaluate
from lenet_mnist.model import inference, networks
from lenet_mnist.serving import logged, publish, pyfunc
from tests.conftest import SLICE, mlflow_runs, write_params
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


@pytest.mark.slow
def test_the_run_has_the_dataset_and_both_models(prepared_slice, tmp_path_factory):
    done = trained_slice(prepared_slice, tmp_path_factory)
    client, (run,) = mlflow_runs(done["db"])
    (dataset,) = [d.dataset for d in run.inputs.dataset_inputs]
    digest = prepare.read_stats(prepared_slice[0])["digest"]
    assert (dataset.name, dataset.digest) == (logged.DATASET, digest[:12])
    models = client.search_logged_models([run.info.experiment_id])
    assert sorted(m.name for m in models) == ["digits", "model"]
    assert {o.model_id for o in run.outputs.model_outputs} == {m.model_id for m in models}
    (network,) = [m for m in models if m.name == logged.NETWORK_MODEL]
    import mlflow.pytorch

    net = mlflow.pytorch.load_model(network.artifact_location)  # its folder in the store
    x, _ = prepare.read_split(prepared_slice[0], "test")
    logits = inference.logits(net, x)
    assert logits.argmax(1).tolist() == done["predicted"]


def _evaluate_and_publish(
    weights: Path, prepared: Path, params: Path, out: Path
) -> tuple[float, publish.Published]:
    """The evaluate and publish stages' code on these weights (MLFLOW_TRACKING_URI names
    the store)."""
    cfg = parse.load(params)
    outputs = evaluate.Outputs(out / "test.json", out / "predictions.csv", out / "figures")
    history = out / "history.csv"
    history.write_text("epoch,train_loss,train_acc,val_loss,val_acc\n1,1,0.1,1,0.1\n")
    done = evaluate.evaluate(cfg.model.name, weights, prepared, history, outputs)
    return done.test_acc, publish.publish(cfg, weights, prepared, done.metrics, outputs.files())


@pytest.mark.slow
def test_the_champion_alias_moves_only_to_a_model_at_least_as_accurate(
    prepared_slice, tmp_path_factory, tmp_path, monkeypatch
):
    """Untrained weights first (the only model, so the champion), then the trained ones
    take the alias, then other untrained weights do not; publishing the trained weights
    once more registers nothing."""
    done = trained_slice(prepared_slice, tmp_path_factory)
    db = f"sqlite:///{tmp_path / 'registry.db'}"
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
def test_with_registration_off_the_same_weights_are_logged_once(
    prepared_slice, tmp_path_factory, tmp_path, monkeypatch
):
    done = trained_slice(prepared_slice, tmp_path_factory)
    db = f"sqlite:///{tmp_path / 'unregistered.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", db)
    params = write_params(tmp_path / "params.yaml", **SLICE, logger__registered_model=None)
    weights = done["data"] / "model" / "weights.safetensors"
    said = []
    for attempt in ("first", "again"):
        (tmp_path / attempt).mkdir()
        _, published = _evaluate_and_publish(weights, prepared_slice[0], params, tmp_path / attempt)
        said.append((published.version, published.new, published.lines(None)[-1]))
    assert said[0][:2] == (None, True) and said[1][:2] == (None, False)
    assert said[1][2] == "publish: a logged model holds these weights already"
    client, (run,) = mlflow_runs(db)
    models = client.search_logged_models([run.info.experiment_id])
    assert sorted(m.name for m in models) == ["digits", "model"]  # once, not twice
    assert client.search_registered_models() == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_served_champion_answers_raw_images_as_evaluate_predicted(
    prepared_slice, tmp_path_factory, mnist_raw
):
    """`mlflow models serve` on models:/lenet-mnist@champion, asked about 10 raw images."""
    done = trained_slice(prepared_slice, tmp_path_factory)
    port = _free_port()
    mlflow = str(Path(sys.executable).parent / "mlflow")
    argv = [mlflow, "models", "serve", "-m", "models:/lenet-mnist@champion",
            "--env-manager", "local", "-p", str(port), "-h", "127.0.0.1"]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": done["db"]}
    log = (done["root"] / "serve.log").open("w")
    server = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{url}/ping", server, done["root"] / "serve.log")
        body = json.dumps({"inputs": raw_test_images(mnist_raw, 10).tolist()}).encode()
        request = urllib.request.Request(
            f"{url}/invocations", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answers = json.load(response)["predictions"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # mlflow's own process and its uvicorn
        server.wait(timeout=30)
        log.close()
    assert [a["digit"] for a in answers] == done["predicted"][:10]
    for a in answers:
        assert len(a["probabilities"]) == 10 and sum(a["probabilities"]) == pytest.approx(1)
        assert max(a["probabilities"]) == a["probabilities"][a["digit"]]


def _wait_for(ping: str, server: subprocess.Popen, log: Path, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(
                f"mlflow models serve exited {server.returncode}: {log.read_text()[-3000:]}"
            )
        try:
            urllib.request.urlopen(ping, timeout=2).close()
            return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"mlflow models serve did not answer {ping} in {timeout_s} s")
