"""The gradient noise scale B_simple = tr(Σ) / |G|² (McCandlish et al. 2018, "An Empirical
Model of Large-Batch Training", appendix A.1): |mean gradient|² of B examples has
expectation |G|² + tr(Σ)/B, so two batch sizes give unbiased estimates of both terms. The
small batches are k disjoint ones and the big one their union: k backward passes give both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (outputs, targets) -> mean loss


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
    k = small.shape[0]
    small, big = float(small.pow(2).sum(1).mean()), float(small.mean(0).pow(2).sum())
    b_small, b_big = batch_size, batch_size * k
    grad_sq = (b_big * big - b_small * small) / (b_big - b_small)
    trace = (small - big) / (1 / b_small - 1 / b_big)
    return NoiseScale(grad_sq, trace)


def probe(
    net: torch.nn.Module,
    loss: Loss,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    batches: int,
    seed: int,
) -> NoiseScale:
    """The noise scale of `net` now, on `batches` disjoint batches drawn from (x, y) by
    `seed`. Its own generator and torch.autograd.grad leave the training's RNG, weights and
    `.grad` untouched."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    order = torch.randperm(len(y), generator=generator, device=x.device)
    params = [p for p in net.parameters() if p.requires_grad]
    rows = []
    for i in range(batches):
        idx = order[i * batch_size : (i + 1) * batch_size]
        grads = torch.autograd.grad(loss(net(x[idx]), y[idx]), params)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return estimate(torch.stack(rows), batch_size)
