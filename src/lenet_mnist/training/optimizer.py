"""The optimizer recipe: which optimizer, which learning-rate schedule, and the rate itself.
The config schema reads the choices of `optimizer.name` and `.scheduler` from the tables."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, OneCycleLR

if TYPE_CHECKING:
    from lenet_mnist.config.schema import Config, OptimizerConfig

OPTIMIZERS: dict[str, type[Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
}

# name -> (optimizer, peak rate, total updates) -> scheduler; None keeps the rate constant.
SCHEDULERS: dict[str, Callable[[Optimizer, float, int], LRScheduler] | None] = {
    "none": None,
    # Anneal the rate to 0 over all updates.
    "cosine": lambda opt, lr, total: CosineAnnealingLR(opt, T_max=total),
    # Warm up to lr, then anneal: fast convergence, big batches.
    "onecycle": lambda opt, lr, total: OneCycleLR(opt, lr, total_steps=total),
}


# name -> the power of batch_size / lr_batch_size that multiplies `optimizer.lr`.
LR_SCALING: dict[str, float] = {
    "none": 0.0,
    # Goyal et al. 2017: k times the batch gives k times fewer updates per epoch, so each
    # update takes a k times larger step (derived for SGD).
    "linear": 1.0,
    # k times the batch has about 1/√k the gradient noise; the rule that Malladi et al.
    # 2022 derive for Adam.
    "sqrt": 0.5,
}


def effective_lr(cfg: Config) -> float:
    """`optimizer.lr`, scaled with train.batch_size by the rule `optimizer.lr_scaling` names."""
    o = cfg.optimizer
    return o.lr * (cfg.train.batch_size / o.lr_batch_size) ** LR_SCALING[o.lr_scaling]


def make_optimizer(
    cfg: OptimizerConfig, lr: float, parameters: Iterable[torch.nn.Parameter], total_updates: int
) -> tuple[Optimizer, LRScheduler | None]:
    """The optimizer and its schedule, shared by the pipeline and the benchmark's plain loop."""
    # fused: one kernel per parameter instead of ~10 small ops, which is what a step of a
    # model this small is made of (SGD takes `fused` too).
    # Only SGD has a momentum argument; Adam's moments are its betas.
    extra = {"momentum": cfg.momentum} if cfg.name == "sgd" else {}
    kind = OPTIMIZERS[cfg.name]
    opt = kind(parameters, lr=lr, weight_decay=cfg.weight_decay, fused=cfg.fused, **extra)
    schedule = SCHEDULERS[cfg.scheduler]
    return opt, None if schedule is None else schedule(opt, lr, total_updates)
