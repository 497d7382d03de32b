"""Benchmark: the pipeline's training path against a hand-written PyTorch loop, side by side.

Speed is a ratio measured in one process on one machine at one time: each round runs one
epoch of the pipeline (Lightning's Trainer.fit with the configured speed options), then one
epoch of each plain loop on the same model definition, data, batch size and step count.
Interleaving means a noisy neighbour slows all variants alike. The first round (warm-up,
compilation) is reported separately and left out of the medians.

    python -m lenet_mnist.training.bench [--rounds 25] [--steps 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import json
import resource
import statistics
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch
from rich.console import Console
from rich.table import Table

from lenet_mnist import numerics
from lenet_mnist.config import parse
from lenet_mnist.config.schema import Config
from lenet_mnist.errors import PipelineError, run_stage
from lenet_mnist.model import networks
from lenet_mnist.tracking import provenance
from lenet_mnist.training import data, fit, recorder
from lenet_mnist.training.module import Classifier, forward_loss
from lenet_mnist.training.optimizer import effective_lr, make_optimizer

PIPELINE = "pipeline (Lightning)"
PLAIN_EAGER = "plain PyTorch, eager"
PLAIN_SAME = "plain PyTorch, same step"


def plain_loop(
    cfg: Config, x: torch.Tensor, y: torch.Tensor, steps: int, rounds: int, same_step: bool
) -> Callable[[], float]:
    """A hand-written loop over the pipeline's model, data and batches; returns one epoch.

    same_step=True applies the pipeline's speed options (compile, fused optimizer);
    False is the plain eager baseline with the default optimizer. Both sum loss and
    accuracy on the device, as the pipeline does and any loop that reports them must.
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


class Interleave(pl.Callback):
    """Runs one epoch of every plain loop around each pipeline epoch, in a rotating order.

    Round r starts at a different variant, so no variant always runs right after
    another (the position alone shifts a variant's time; docs/benchmarks.md).
    """

    def __init__(self, cfg: Config, steps: int, rounds: int) -> None:
        self.cfg, self.steps, self.rounds = cfg, steps, rounds
        self.plain: dict[str, Callable[[], float]] = {}
        self.device = torch.device("cpu")
        self.times: dict[str, list[float]] = {PIPELINE: []}
        self.round = 0

    def on_fit_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        """The plain loops train on the datamodule's own tensors: the data is in memory once,
        as in a hand-written loop, so the peak memory reported is the pipeline's."""
        x, y = trainer.datamodule.train_xy
        self.device = x.device
        self.plain = {
            PLAIN_EAGER: plain_loop(self.cfg, x, y, self.steps, self.rounds, same_step=False),
            PLAIN_SAME: plain_loop(self.cfg, x, y, self.steps, self.rounds, same_step=True),
        }
        self.times.update({name: [] for name in self.plain})

    def _order(self) -> list[str]:
        names = list(self.times)
        shift = self.round % len(names)
        return names[shift:] + names[:shift]

    def _run_plain(self, names: list[str]) -> None:
        for name in names:
            self.times[name].append(self.plain[name]())

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        order = self._order()
        self._run_plain(order[: order.index(PIPELINE)])
        self.start = recorder.clock(self.device)

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.times[PIPELINE].append(recorder.clock(self.device) - self.start)
        order = self._order()
        self._run_plain(order[order.index(PIPELINE) + 1 :])
        self.round += 1


def run(cfg: Config, prepared: Path, rounds: int, steps: int) -> dict:
    """`rounds` rounds of `steps` steps for every variant; returns the summary."""
    bench_cfg = copy.deepcopy(cfg)
    bench_cfg.train.epochs = rounds
    bench_cfg.trainer.enable_progress_bar = False  # it would interleave with the table
    torch.manual_seed(cfg.train.seed)
    net = networks.build(cfg.model.name)
    interleave = Interleave(cfg, steps, rounds)
    trainer = fit.make_trainer(bench_cfg, callbacks=[interleave])
    batches = data.MnistData(prepared, cfg.train, cfg.trainer.batch_group)
    epoch_steps = batches.updates_per_epoch()
    if steps % cfg.trainer.batch_group:
        raise PipelineError(
            f"--steps={steps} is not allowed; use a multiple of trainer.batch_group "
            f"({cfg.trainer.batch_group})"
        )
    trainer.limit_train_batches = steps // cfg.trainer.batch_group
    trainer.limit_val_batches = 0  # the plain loops validate nothing either
    classifier = Classifier(
        net, cfg.optimizer, effective_lr(cfg), steps * rounds, cfg.trainer.compile
    )
    trainer.fit(classifier, datamodule=batches)
    return summarize(interleave.times, steps, epoch_steps, cfg, interleave.device)


def summarize(times: dict[str, list[float]], chunk: int, epoch_steps: int, cfg, device) -> dict:
    """Per-variant medians scaled to a full epoch, and ratios paired round by round.

    A ratio of two times taken seconds apart survives a neighbour who slows the whole
    machine down for a minute; a ratio of two medians does not.
    """
    scale = epoch_steps / chunk
    timed = {name: per_round[1:] for name, per_round in times.items()}  # round 0: warm-up

    def paired(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(timed[a], timed[b], strict=True))

    variants = {
        name: {
            "s_per_epoch": round(statistics.median(t) * scale, 3),
            "samples_per_s": round(chunk * cfg.train.batch_size / statistics.median(t), 1),
            "vs_plain_eager": round(paired(name, PLAIN_EAGER), 3),
            "warmup_round_s": round(times[name][0], 3),
        }
        for name, t in timed.items()
    }
    result = {
        "device": _device_name(device),
        "accelerator": device.type,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch_size": cfg.train.batch_size,
        "steps_per_epoch": epoch_steps,
        "steps_per_round": chunk,
        "rounds_timed": len(timed[PIPELINE]),
        "numerics": numerics.record(cfg.trainer),
        "speed_options": {
            "trainer.compile": cfg.trainer.compile,
            "trainer.threads": cfg.trainer.threads,
            "trainer.batch_group": cfg.trainer.batch_group,
            "optimizer.fused": cfg.optimizer.fused,
        },
        "variants": variants,
        "pipeline_vs_plain_same_step": round(paired(PIPELINE, PLAIN_SAME), 3),
        "pipeline_vs_plain_eager": round(paired(PIPELINE, PLAIN_EAGER), 3),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
        "round_times_s": {name: [round(x, 4) for x in t] for name, t in times.items()},
    }
    return result


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU: {provenance.cpu_model()}"


def print_table(result: dict, console: Console) -> None:
    n = result["numerics"]
    table = Table(
        title=f"{result['device']}, batch {result['batch_size']}, {result['rounds_timed']} rounds "
        f"of {result['steps_per_round']} steps, scaled to {result['steps_per_epoch']} steps/epoch; "
        f"{n['numerics.mode']} numerics: {n['numerics.threads']} threads, "
        f"ATen {n['numerics.aten_capability']}"
    )
    for column in ("variant", "s/epoch", "samples/s", "× plain eager", "warm-up round s"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for name, v in result["variants"].items():
        table.add_row(
            name,
            f"{v['s_per_epoch']:.3f}",
            f"{v['samples_per_s']:.0f}",
            f"{v['vs_plain_eager']:.3f}",
            f"{v['warmup_round_s']:.2f}",
        )
    console.print(table)
    console.print(
        f"pipeline / plain loop with the same step: {result['pipeline_vs_plain_same_step']:.3f}"
        f"   pipeline / plain eager: {result['pipeline_vs_plain_eager']:.3f}"
        f"   peak memory: {result['peak_rss_gib']:.2f} GiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--rounds", type=int, default=25, help="rounds, the first one warm-up")
    parser.add_argument("--steps", type=int, default=100, help="steps per variant per round")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    cfg = parse.load(args.params)
    numerics.pin(cfg.trainer)
    fit.quiet_lightning()
    # The benchmark trains without validation on purpose.
    warnings.filterwarnings("ignore", message="You defined a `validation_step` but have no")
    if args.rounds < 2:
        raise PipelineError(f"--rounds={args.rounds} is not allowed; use 2 or more")
    result = run(cfg, args.prepared, args.rounds, args.steps)
    print_table(result, Console(stderr=False))
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text, file=sys.stdout)


if __name__ == "__main__":
    run_stage(main)
