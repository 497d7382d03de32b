"""In-process timing of training steps: the pipeline's and a hand-written loop's.

One process computes in one numeric mode (lenet_mnist.numerics), so each timed variant of
the benchmark (train_speed.py, beside this file) is a process of its own that runs these.
Inside a pipeline process, one epoch of a hand-written loop with the same compiled step
runs around each pipeline epoch, in a rotating order: a noisy neighbour slows both alike,
and their ratio is what Lightning itself costs. The first round (warm-up, compilation)
is kept, to be left out of the medians.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch

from lenet_mnist.config.schema import Config
from lenet_mnist.model import networks
from lenet_mnist.training import data, fit, recorder
from lenet_mnist.training.module import Classifier, forward_loss
from lenet_mnist.training.optimizer import effective_lr, make_optimizer

PIPELINE = "pipeline (Lightning)"
PLAIN_SAME = "plain PyTorch, same step"


def plain_loop(
    cfg: Config, x: torch.Tensor, y: torch.Tensor, steps: int, rounds: int, same_step: bool
) -> Callable[[], float]:
    """A hand-written loop over the pipeline's model, data and batches; returns one epoch.

    same_step=True applies the pipeline's speed options (compile, fused optimizer);
    False is the plain eager loop a user writes, with the default optimizer. Both sum
    loss and accuracy on the device, as the pipeline does and any loop that reports them
    must.
    """
    torch.manual_seed(cfg.train.seed)
    net = networks.build(cfg.model.name).to(x.device)
    step = forward_loss
    if same_step and cfg.trainer.compile:
        step = torch.compile(forward_loss)
    opt_cfg = dataclasses.replace(cfg.optimizer, fused=same_step and cfg.optimizer.fused)
    opt, sched = make_optimizer(opt_cfg, effective_lr(cfg), net.parameters(), steps * rounds)
    batches = data.train_batches(x, y, cfg.train)

    def epoch() -> float:
        start = recorder.clock(x.device)
        sums = torch.zeros(2, device=x.device)
        for xb, yb in itertools.islice(batches, steps):
            opt.zero_grad(set_to_none=True)
            loss, stats = step(net, xb, yb)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            sums += stats
        sums.tolist()  # the epoch's one host sync, as in the pipeline
        return recorder.clock(x.device) - start

    return epoch


def plain_rounds(cfg: Config, prepared: Path, rounds: int, steps: int) -> list[float]:
    """`rounds` epochs of `steps` steps of the hand-written eager loop, on the CPU."""
    x, y = data.to_tensors(prepared, "train", torch.device("cpu"))
    epoch = plain_loop(cfg, x, y, steps, rounds, same_step=False)
    return [epoch() for _ in range(rounds)]


class Interleave(pl.Callback):
    """Runs one epoch of the plain loop with the same step around each pipeline epoch.

    Round r runs the plain loop before the pipeline's epoch when r is odd and after it
    when r is even, so neither always runs right after the other (the position alone
    shifts a variant's time; docs/benchmarks.md).
    """

    def __init__(self, cfg: Config, steps: int, rounds: int) -> None:
        self.cfg, self.steps, self.rounds = cfg, steps, rounds
        self.plain: Callable[[], float] | None = None  # made once the data is on its device
        self.device = torch.device("cpu")
        self.times: dict[str, list[float]] = {PIPELINE: [], PLAIN_SAME: []}
        self.round = 0

    def on_fit_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        """The plain loop trains on the datamodule's own tensors: the data is in memory once,
        as in a hand-written loop, so the peak memory reported is the pipeline's."""
        x, y = trainer.datamodule.train_xy
        self.device = x.device
        self.plain = plain_loop(self.cfg, x, y, self.steps, self.rounds, same_step=True)

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self.round % 2 and self.plain is not None:
            self.times[PLAIN_SAME].append(self.plain())
        self.start = recorder.clock(self.device)

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.times[PIPELINE].append(recorder.clock(self.device) - self.start)
        if not self.round % 2 and self.plain is not None:
            self.times[PLAIN_SAME].append(self.plain())
        self.round += 1


def pipeline_rounds(cfg: Config, prepared: Path, rounds: int, steps: int) -> dict[str, list[float]]:
    """`rounds` epochs of `steps` steps of Lightning's fit, each beside one of the plain loop
    with the same step; the seconds of each, by variant. `steps` fills whole Lightning calls
    of `trainer.batch_group` updates (the benchmark's command line checks it)."""
    bench_cfg = copy.deepcopy(cfg)
    bench_cfg.train.epochs = rounds
    bench_cfg.trainer.enable_progress_bar = False
    torch.manual_seed(cfg.train.seed)
    net = networks.build(cfg.model.name)
    interleave = Interleave(cfg, steps, rounds)
    trainer = fit.make_trainer(bench_cfg, callbacks=[interleave])
    trainer.limit_train_batches = steps // cfg.trainer.batch_group
    trainer.limit_val_batches = 0  # the plain loop validates nothing either
    classifier = Classifier(
        net, cfg.optimizer, effective_lr(cfg), steps * rounds, cfg.trainer.compile
    )
    trainer.fit(classifier, datamodule=data.MnistData(prepared, cfg.train, cfg.trainer.batch_group))
    return interleave.times
