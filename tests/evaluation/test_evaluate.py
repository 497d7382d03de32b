"""evaluate's arithmetic, on hand-made logits and on the real prepared test slice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lenet_mnist.evaluation import evaluate
from lenet_mnist.model import networks


def _logits_for(predicted: list[int]) -> torch.Tensor:
    logits = torch.zeros(len(predicted), evaluate.NUM_CLASSES)
    logits[torch.arange(len(predicted)), torch.tensor(predicted)] = 5.0
    return logits


def test_score_counts_the_confusion_matrix_by_actual_row_and_predicted_column():
    labels = torch.tensor([0, 0, 0, 1, 2, 2, 9])
    predicted = [0, 0, 1, 1, 0, 2, 9]
    m = evaluate.score(_logits_for(predicted), labels)
    confusion = np.array(m["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == 7
    assert confusion[0, 0] == 2 and confusion[0, 1] == 1 and confusion[2, 0] == 1
    assert confusion[1, 1] == confusion[2, 2] == confusion[9, 9] == 1
    assert m["errors"] == 2
    assert m["test_acc"] == pytest.approx(5 / 7, abs=1e-6)
    assert m["per_class_acc"]["0"] == pytest.approx(2 / 3, abs=1e-6)
    assert m["per_class_acc"]["2"] == pytest.approx(0.5)
    assert m["per_class_acc"]["1"] == m["per_class_acc"]["9"] == 1.0


def test_a_class_absent_from_the_labels_has_no_accuracy_not_a_zero():
    m = evaluate.score(_logits_for([0, 1]), torch.tensor([0, 1]))
    assert m["per_class_acc"] == {"0": 1.0, "1": 1.0, **{str(c): None for c in range(2, 10)}}


def test_weights_that_give_a_non_finite_loss_write_no_metrics(prepared_slice, tmp_path):
    from safetensors.torch import save_file

    from lenet_mnist.errors import PipelineError

    net = networks.build("lenet5")
    state = {k: torch.full_like(v, float("nan")) for k, v in net.state_dict().items()}
    save_file(state, tmp_path / "weights.safetensors")
    out = evaluate.Outputs(tmp_path / "m.json", tmp_path / "p.csv", tmp_path / "figures")
    with pytest.raises(PipelineError, match="gives a test loss of nan; retrain it"):
        evaluate.evaluate(
            "lenet5", tmp_path / "weights.safetensors", prepared_slice[0], tmp_path, out
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.safetensors"]


@pytest.mark.parametrize("text", ["{oops", "[1, 2]", '{"test_acc": 0.9}', ""])
def test_publishing_refuses_metrics_that_evaluate_did_not_write(tmp_path, text):
    from lenet_mnist.errors import PipelineError

    out = evaluate.Outputs(tmp_path / "test.json", tmp_path / "p.csv", tmp_path / "figures")
    out.metrics.write_text(text)
    out.per_class.write_text('{"per_class_acc": {}}')
    refused = r"test\.json is not evaluate's metrics .*\(dvc repro -f evaluate\)$"
    with pytest.raises(PipelineError, match=refused):
        evaluate.read_metrics(out)
