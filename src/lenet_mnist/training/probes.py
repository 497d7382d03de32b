"""Measurements beside training: validation accuracy every N updates, test accuracy and the
gradient noise scale at each epoch's end, and when each target accuracy was first reached.

The noise scale B_simple = tr(Σ) / |G|² (McCandlish et al. 2018, "An Empirical Model of
Large-Batch Training", appendix A.1): |mean gradient|² of B examples has expectation
|G|² + tr(Σ)/B, so two batch sizes give unbiased estimates of both terms. The small batches
are k disjoint ones and the big one their union: k backward passes give both.

A probe reads under torch.no_grad or takes gradients with torch.autograd.grad, and draws its
samples with a generator of its own: the weights come out bit-identical with every probe on
or off (tests/training/test_probes.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812

from lenet_mnist.config.schema import TrainConfig
from lenet_mnist.errors import PipelineError
from lenet_mnist.model import inference

XY = tuple[torch.Tensor, torch.Tensor]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (outputs, targets) -> mean loss


class Reading(NamedTuple):
    """One validation accuracy and where in the fit it was read."""

    iteration: int  # optimizer updates done
    epoch: int  # the epoch it was read in (1-based)
    seconds: float  # training seconds so far, the probes' own time left out
    acc: float


def accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return int((inference.logits(net, x, batch_size=1024).argmax(1) == y).sum()) / len(y)


def target_key(target: float) -> str:
    """`0.985` -> `val_acc_0.985`, the suffix of the to-target metrics in MLflow."""
    return f"val_acc_{target:g}"


def first_reached(readings: list[Reading], targets: list[float]) -> dict[str, float]:
    """Per target, the first reading at or above it (iteration, seconds) and the first epoch
    whose end reached it; a target never reached has no metric."""
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


class NoiseScale(NamedTuple):
    grad_sq: float  # unbiased estimate of |G|², the squared norm of the true gradient
    trace: float  # unbiased estimate of tr(Σ), the per-example gradient covariance's trace

    @property
    def simple(self) -> float:
        """B_simple; infinite when the estimate of |G|² is not positive (noise dominates)."""
        return self.trace / self.grad_sq if self.grad_sq > 0 else float("inf")


def estimate(small: torch.Tensor, batch_size: int) -> NoiseScale:
    """Both terms from `small`, the k×P mean gradients of k >= 2 disjoint batches of
    `batch_size` examples each, and from their mean, which is the gradient of their union."""
    b_small, b_big = batch_size, batch_size * small.shape[0]
    small, big = float(small.pow(2).sum(1).mean()), float(small.mean(0).pow(2).sum())
    grad_sq = (b_big * big - b_small * small) / (b_big - b_small)
    trace = (small - big) / (1 / b_small - 1 / b_big)
    return NoiseScale(grad_sq, trace)


def noise_scale(
    net: torch.nn.Module, loss: Loss, xy: XY, batch_size: int, batches: int, seed: int
) -> NoiseScale:
    """The noise scale of `net` now, on `batches` disjoint batches drawn from `xy` by `seed`."""
    x, y = xy
    generator = torch.Generator(device=x.device).manual_seed(seed)
    order = torch.randperm(len(y), generator=generator, device=x.device)
    params = [p for p in net.parameters() if p.requires_grad]
    rows = []
    for idx in order[: batches * batch_size].split(batch_size):
        grads = torch.autograd.grad(loss(net(x[idx]), y[idx]), params)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return estimate(torch.stack(rows), batch_size)


def check(cfg: TrainConfig, train_size: int) -> None:
    """Refuse a noise probe larger than the training split before the fit, not after an epoch."""
    probe = cfg.noise_probe
    if probe.batches * probe.batch_size > train_size:
        raise PipelineError(
            f"train.noise_probe needs {probe.batches} x {probe.batch_size} training images, "
            f"more than the {train_size} there are; lower its batches or batch_size, or set "
            "batches: 0"
        )


def due(cfg: TrainConfig, before: int, after: int, readings: list[Reading]) -> bool:
    """Whether a step from `before` to `after` updates passed a multiple of
    `val_every_n_steps` while the highest target is unreached (nothing to time after it)."""
    every, top = cfg.val_every_n_steps, max(cfg.targets, default=0.0)
    if every is None or after // every == before // every:
        return False
    return max((r.acc for r in readings), default=0.0) < top


def at_epoch_end(
    cfg: TrainConfig, net: torch.nn.Module, epoch: int, train: XY, test: XY | None
) -> dict[str, float]:
    """Test accuracy and the noise scale, as MLflow metrics of this epoch."""
    out = {} if test is None else {"epoch_test_acc": accuracy(net, *test)}
    probe = cfg.noise_probe
    if probe.batches:
        seed = cfg.seed + 0x5EED + epoch  # its own sample, not the batch order's, fresh every epoch
        found = noise_scale(net, F.cross_entropy, train, probe.batch_size, probe.batches, seed)
        out |= {"noise_grad_sq": found.grad_sq, "noise_trace": found.trace}
        if 0 < found.simple < float("inf"):  # MLflow cannot hold inf
            out["noise_scale"] = found.simple
    return out
