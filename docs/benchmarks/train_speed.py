"""Benchmark: what a user should expect of each numeric mode, against a hand-written loop.

    python docs/benchmarks/train_speed.py [--repeats 2] [--rounds 3] [--steps 100] [--json FILE]
        [--variants 2,5]

Every variant is a process of its own, as a stage or a sweep job is: the baseline is a
hand-written eager PyTorch loop at PyTorch's default threads and OpenMP's default
waiting, which is what a user writes; each numeric mode runs the pipeline's own fit
(train_steps.py, beside this file). The oversubscribed variants start two such processes at
once on the same cores, as two sweep jobs or a neighbour's job do. Each repeat runs every
variant once, in a rotating order, and a variant's ratio is paired with the baseline of
its own repeat: a shared machine's speed moves within minutes. Seconds per epoch are
medians of the timed rounds (the first one warms up), scaled to a full epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lenet_mnist import numerics, process
from lenet_mnist.config import parse
from lenet_mnist.data import prepare
from lenet_mnist.errors import PipelineError, run_stage
from lenet_mnist.training.batches import iterations_per_epoch

WAIT = "OMP_WAIT_POLICY"


@dataclass(frozen=True)
class Variant:
    label: str
    worker: str  # "plain" or a numeric mode the pipeline runs in
    copies: int = 1  # processes started at once on the same cores
    env: dict[str, str | None] = field(default_factory=dict)  # None: unset


PLAIN_WAIT = {WAIT: None}  # OpenMP's default waiting, as in a user's own script
BASELINE = Variant("hand-written eager loop, PyTorch's threads", "plain", env=PLAIN_WAIT)
VARIANTS = (
    BASELINE,
    Variant("pipeline, portable", "portable"),
    Variant("pipeline, machine", "machine"),
    Variant("2 at once: hand-written loop", "plain", 2, PLAIN_WAIT),
    Variant("2 at once: pipeline, portable", "portable", 2),
    Variant("2 at once: pipeline, machine, OpenMP's default waiting", "machine", 2, PLAIN_WAIT),
    Variant("2 at once: pipeline, machine", "machine", 2),
)


def worker_env(variant: Variant) -> dict[str, str]:
    """The environment a stage gets (lenet_mnist.process: the user's own values kept),
    changed as the variant says."""
    env = {**process.ENV, **os.environ}
    for name, value in variant.env.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def run_variant(variant: Variant, args: argparse.Namespace, folder: Path) -> list[dict]:
    """Start the variant's processes at once; each one's timings, once all have ended."""
    common = ["--prepared", str(args.prepared), "--params", str(args.params)]
    common += ["--rounds", str(args.rounds), "--steps", str(args.steps)]
    outs = [folder / f"{variant.worker}-{i}.json" for i in range(variant.copies)]
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", variant.worker, "--out", str(out)] + common,
            env=worker_env(variant),
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        for out in outs
    ]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode:
            lines = err.strip().splitlines() or ["no output"]
            raise PipelineError(f"bench variant '{variant.label}' failed: {lines[-1]}")
    return [json.loads(out.read_text()) for out in outs]


def s_per_epoch(times: list[float], steps: int, epoch_steps: int) -> float:
    """The median of the timed rounds (round 0 warms up), scaled to a full epoch."""
    return statistics.median(times[1:]) * epoch_steps / steps


def measure(args: argparse.Namespace, epoch_steps: int) -> dict[str, list[dict]]:
    """Every variant, `args.repeats` times, in an order that rotates by one each repeat."""
    chosen = args.variants
    found: dict[str, list[dict]] = {v.label: [] for v in chosen}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            order = chosen[repeat % len(chosen) :] + chosen[: repeat % len(chosen)]
            for variant in order:
                results = run_variant(variant, args, Path(tmp))
                seconds = [s_per_epoch(r["main"], args.steps, epoch_steps) for r in results]
                entry = {"s_per_epoch": statistics.mean(seconds), "processes": results}
                if "same_step" in results[0]:
                    same = [s_per_epoch(r["same_step"], args.steps, epoch_steps) for r in results]
                    entry["vs_plain_same_step"] = statistics.mean(seconds) / statistics.mean(same)
                found[variant.label].append(entry)
                print(f"repeat {repeat + 1}/{args.repeats}: {variant.label}: "
                      f"{entry['s_per_epoch']:.2f} s/epoch", file=sys.stderr)  # fmt: skip
    return found


def summarize(found: dict[str, list[dict]], args: argparse.Namespace, epoch_steps: int) -> dict:
    """Per variant: seconds per epoch and the ratio to the baseline, repeat by repeat."""
    base = [entry["s_per_epoch"] for entry in found[BASELINE.label]]
    variants = {}
    for variant in args.variants:
        entries = found[variant.label]
        seconds = [e["s_per_epoch"] for e in entries]
        ratios = [s / b for s, b in zip(seconds, base, strict=True)]
        variants[variant.label] = {
            "processes_at_once": variant.copies,
            "s_per_epoch": [round(s, 3) for s in seconds],
            "vs_baseline": [round(r, 3) for r in ratios],
            "vs_baseline_median": round(statistics.median(ratios), 3),
            "threads": entries[0]["processes"][0]["threads"],
            "omp_wait_policy": entries[0]["processes"][0]["omp_wait_policy"],
        }
        if "vs_plain_same_step" in entries[0]:
            same = statistics.median(e["vs_plain_same_step"] for e in entries)
            variants[variant.label]["pipeline_vs_plain_same_step"] = round(same, 3)
    first = found[BASELINE.label][0]["processes"][0]
    return {
        "machine": first["machine"],
        "torch": first["torch"],
        "compile": first["compile"],
        "batch_size": first["batch_size"],
        "steps_per_epoch": epoch_steps,
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "repeats": args.repeats,
        "baseline": BASELINE.label,
        "variants": variants,
    }


def print_table(result: dict, console: Console) -> None:
    m = result["machine"]
    table = Table(
        title=f"{m['cpu']} ({m['family_model']}, {m['cores']} cores), torch {result['torch']}, "
        f"batch {result['batch_size']}, compile {result['compile']}: {result['repeats']} repeats "
        f"of {result['rounds'] - 1} timed rounds of {result['steps_per_round']} steps, "
        f"scaled to {result['steps_per_epoch']} steps/epoch"
    )
    for column in ("", "variant", "threads", "s/epoch", "× baseline", "÷ same step by hand"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    numbers = {v.label: str(i) for i, v in enumerate(VARIANTS, 1)}  # as --variants names them
    for name, v in result["variants"].items():
        same = v.get("pipeline_vs_plain_same_step")
        table.add_row(
            numbers[name],
            name,
            str(v["threads"]),
            " ".join(f"{s:.2f}" for s in v["s_per_epoch"]),
            f"{v['vs_baseline_median']:.2f}",
            f"{same:.3f}" if same is not None else "",
        )
    console.print(table)
    console.print(f"machine: {m['cpu']}, family/model {m['family_model']}, {m['isa_flags']}")


def work(args: argparse.Namespace) -> None:
    """One variant's process: time its rounds and write them to `args.out`."""
    cfg = parse.load(args.params)
    with process.importing():  # after parse: a bad file fails at once
        import train_steps as timing

        from lenet_mnist.training import fit

    fit.quiet_lightning()
    if args.worker == "plain":  # PyTorch's own threads and kernels, as a user's script
        found = {"main": timing.plain_rounds(cfg, args.prepared, args.rounds, args.steps)}
    else:
        cfg.trainer.reproducible = args.worker
        numerics.pin(cfg.trainer)
        times = timing.pipeline_rounds(cfg, args.prepared, args.rounds, args.steps)
        found = {"main": times[timing.PIPELINE], "same_step": times[timing.PLAIN_SAME]}
    record = numerics.record(cfg.trainer)
    found |= {
        "threads": int(record["numerics.threads"]),
        "omp_wait_policy": os.environ.get(WAIT, "default"),
        "torch": record["numerics.torch"],
        "compile": cfg.trainer.compile,
        "batch_size": cfg.train.batch_size,
        "machine": {
            "cpu": record["numerics.cpu"],
            "family_model": record["numerics.cpu_family_model"],
            "isa_flags": record["numerics.isa_flags"],
            "cores": len(os.sched_getaffinity(0)),
        },
    }
    args.out.write_text(json.dumps(found))


def variants(text: str) -> tuple[Variant, ...]:
    """`--variants`: positions in VARIANTS, from 1; the baseline (1) runs in any case, as
    every ratio is to it."""
    allowed = f"use numbers from 1 to {len(VARIANTS)}, comma-separated"
    try:
        picked = {int(n) for n in text.split(",")}
    except ValueError:
        raise PipelineError(f"--variants={text} is not allowed; {allowed}") from None
    if not picked <= set(range(1, len(VARIANTS) + 1)):
        raise PipelineError(f"--variants={text} is not allowed; {allowed}")
    return tuple(v for i, v in enumerate(VARIANTS, 1) if i == 1 or i in picked)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--repeats", type=int, default=2, help="runs of every variant")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, the first one warm-up")
    parser.add_argument("--steps", type=int, default=100, help="steps per round")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    parser.add_argument(
        "--variants", default=None, help="only these rows of the table (numbers from 1), and 1"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # one variant's own process
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return work(args)
    args.variants = variants(args.variants) if args.variants else VARIANTS
    if args.rounds < 2:
        raise PipelineError(f"--rounds={args.rounds} is not allowed; use 2 or more")
    cfg = parse.load(args.params)
    if args.steps % cfg.trainer.batch_group:
        raise PipelineError(
            f"--steps={args.steps} is not allowed; use a multiple of trainer.batch_group "
            f"({cfg.trainer.batch_group})"
        )
    sizes = prepare.read_stats(args.prepared)["sizes"]
    epoch_steps = iterations_per_epoch(sizes["train"], cfg.train.batch_size, cfg.train.drop_last)
    result = summarize(measure(args, epoch_steps), args, epoch_steps)
    print_table(result, Console(width=None if sys.stdout.isatty() else 160))  # a log: wide
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    run_stage(main)
