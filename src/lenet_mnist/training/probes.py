"""Measurements beside training that leave it as it was: validation accuracy every N
updates, test accuracy and the gradient noise scale at each epoch's end, and when the
validation accuracy first reached each target.

A probe reads the network and data under torch.no_grad, or takes gradients with
torch.autograd.grad (lenet_mnist.training.noise_scale), and draws its samples with a generator of
its own. So it changes no weight, no `.grad` and no random state of the training: the
weights come out bit-identical with every probe on or off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812

from lenet_mnist.config.schema import TrainConfig
from lenet_mnist.errors import PipelineError
from lenet_mnist.model import inference
from lenet_mnist.training import noise_scale

EVAL_BATCH = 1024
# Added to train.seed for the probe's own samples, so they differ from the batch order's.
PROBE_SEED_OFFSET = 0x5EED


class Reading(NamedTuple):
    """One validation accuracy and where in the fit it was read."""

    iteration: int  # optimizer updates done
    epoch: int  # the epoch it was read in (1-based)
    seconds: float  # training seconds so far, the probes' own time left out
    acc: float


def accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return int((inference.logits(net, x, EVAL_BATCH).argmax(1) == y).sum()) / len(y)


def target_key(target: float) -> str:
    """`0.985` -> `val_acc_0.985`, the suffix of the to-target metrics in MLflow."""
    return f"val_acc_{target:g}"


def first_reached(readings: list[Reading], targets: list[float]) -> dict[str, float]:
    """For each target the first reading at or above it: its iteration and seconds, and
    the first epoch whose end-of-epoch reading reached it. Targets never reached are left
    out, so an absent metric means "not reached"."""
    out: dict[str, float] = {}
    ends = {r.epoch: r for r in readings}  # the last reading of each epoch is its end's
    for target in targets:
        key = target_key(target)
        if hit := next((r for r in readings if r.acc >= target), None):
            out[f"iterations_to_{key}"] = hit.iteration
            out[f"seconds_to_{key}"] = hit.seconds
        if end := next((r for e, r in sorted(ends.items()) if r.acc >= target), None):
            out[f"epochs_to_{key}"] = end.epoch
    return out


@dataclass
class Probes:
    """What train.* asks to measure, on this fit's data; EpochRecorder calls it and logs."""

    cfg: TrainConfig
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor] | None
    next_check: int = field(init=False)
    best: float = field(init=False, default=0.0)  # the best validation accuracy read so far

    def __post_init__(self) -> None:
        self.next_check = self.cfg.val_every_n_steps or 0
        probe, images = self.cfg.noise_probe, len(self.train[1])
        if probe.batches * probe.batch_size > images:
            raise PipelineError(
                f"train.noise_probe needs {probe.batches} x {probe.batch_size} training images, "
                f"more than the {images} there are; lower its batches or batch_size, or set "
                "batches: 0"
            )

    def due(self, iteration: int) -> bool:
        """Whether validation is due between epochs' ends (after `val_every_n_steps` more):
        only until the highest target is reached, since it times nothing after that."""
        every, top = self.cfg.val_every_n_steps, max(self.cfg.targets, default=0.0)
        if every is None or iteration < self.next_check or self.best >= top:
            return False
        self.next_check = (iteration // every + 1) * every
        return True

    def val_acc(self, net: torch.nn.Module) -> float:
        return self.note(accuracy(net, *self.val))

    def note(self, val_acc: float) -> float:
        """Keep the best validation accuracy, from between epochs or an epoch's end."""
        self.best = max(self.best, val_acc)
        return val_acc

    def at_epoch_end(self, net: torch.nn.Module, epoch: int, val_acc: float) -> dict[str, float]:
        """Test accuracy and the noise scale, as MLflow metrics of this epoch."""
        out: dict[str, float] = {}
        self.note(val_acc)
        if self.test is not None:
            out["epoch_test_acc"] = accuracy(net, *self.test)
        probe = self.cfg.noise_probe
        if probe.batches:
            seed = self.cfg.seed + PROBE_SEED_OFFSET + epoch  # a fresh sample every epoch
            loss = F.cross_entropy
            found = noise_scale.probe(net, loss, *self.train, probe.batch_size, probe.batches, seed)
            out |= {"noise_grad_sq": found.grad_sq, "noise_trace": found.trace}
            if 0 < found.simple < float("inf"):  # MLflow cannot hold inf
                out["noise_scale"] = found.simple
        return out
