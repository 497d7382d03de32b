"""The networks, plain nn.Modules so that evaluation and serving never import Lightning."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn


class LeNet5(nn.Module):
    """LeNet-5 as in the reference recipe, with ReLU and average pooling, for 1x32x32 inputs."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5),  # 32 -> 28
            nn.ReLU(),
            nn.AvgPool2d(2),  # 28 -> 14
            nn.Conv2d(6, 16, kernel_size=5),  # 14 -> 10
            nn.ReLU(),
            nn.AvgPool2d(2),  # 10 -> 5
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


MODELS: dict[str, type[nn.Module]] = {"lenet5": LeNet5}
WEIGHTS = "weights.safetensors"  # the file `save` writes into a model folder


def build(name: str) -> nn.Module:
    return MODELS[name]()


def load(name: str, weights: Path) -> nn.Module:
    """The network `name` with the weights a training saved (safetensors)."""
    net = build(name)
    net.load_state_dict(load_file(weights))
    return net


def save(net: nn.Module, folder: Path, name: str, epoch: int) -> None:
    """A new model folder holding the weights, with the network's name and epoch."""
    folder.mkdir()
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    # One metadata key: safetensors writes a map's keys in no fixed order.
    info = json.dumps({"model": name, "epoch": epoch}, sort_keys=True)
    save_file(state, folder / WEIGHTS, metadata={"lenet_mnist": info})
