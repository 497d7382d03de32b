"""The tuned study: which batch size and how many epochs, with the rate tuned for each.

    python -m lenet_mnist.study.tuned [--report-only] [--out docs/study/tuned] [--set K=V]

runs six Hydra sweeps, one after the other, then writes the report from MLflow alone:

- adam: batch sizes 16 to 512, each with 4 rates a factor 2 apart around the square-root
  rule's guess (lr 1e-3 at batch 64, so the linear rule's rate lies inside every batch
  size's range too), 2 seeds, 10 epochs with cosine decay as the default recipe;
- adam-wide: a fifth rate, a factor 2 above the top, for every batch size: most were
  fastest at the top rate of the four;
- sgd: SGD with momentum 0.9, 4 rates around the linear rule's guess, 1 seed; these runs
  stop at the highest validation target, since only their updates to it are measured;
- sgd-low: two lower rates for batch 512, which diverged at every rate above;
- search: conf/hparams_search/optuna.yaml, 20 trials on the full data, for the least time
  to 99% test accuracy;
- fixed: the replicated study at lr 1e-3 for every batch size (the README's command), the
  baseline that the tuned grids are set beside.

Each is the same `python -m lenet_mnist.run -m ...` a user would type, so each resumes:
the same command started again skips every finished run. Its jobs run two at a time on
this machine (`launcher=joblib`); `--set launcher=slurm` sends them to a cluster instead.
`--report-only` rebuilds the report from the MLflow store without training
(lenet_mnist.study.tuning, tuned_tables and tuned_figures).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lenet_mnist.config import grid, parse
from lenet_mnist.errors import PipelineError, run_stage
from lenet_mnist.outputs import replacing
from lenet_mnist.study import report, tuned_figures, tuned_tables, tuning
from lenet_mnist.study.rows import Row, plural
from lenet_mnist.tracking import store

BATCH_SIZES = "train.batch_size=16,32,64,128,256,512"
# Validation every 200 updates times the targets; test accuracy at each epoch's end gives
# the time to each test accuracy and the Pareto front.
PROBES = ["train.val_every_n_steps=200", "train.test_every_epoch=true"]
DIVERGED = "train.early_stopping.give_up_below=0.5"  # a run that blew up stops after an epoch
SWEEPS: dict[str, list[str]] = {
    "adam": [
        BATCH_SIZES, "optimizer.lr_scaling=sqrt", "optimizer.lr=0.0005,0.001,0.002,0.004",
        "train.seed=1,2", "train.targets=[0.97,0.98,0.985,0.99]", DIVERGED, *PROBES,
    ],
    # Most batch sizes were fastest at the top rate above: one more, a factor 2 higher.
    "adam-wide": [
        BATCH_SIZES, "optimizer.lr_scaling=sqrt", "optimizer.lr=0.008",
        "train.seed=1,2", "train.targets=[0.97,0.98,0.985,0.99]", DIVERGED, *PROBES,
    ],
    "sgd": [
        "optimizer=sgd", BATCH_SIZES, "optimizer.lr_scaling=linear",
        "optimizer.lr=0.0125,0.025,0.05,0.1", "train.seed=1", "train.targets=[0.97,0.98,0.985]",
        "train.early_stopping.stop_at=0.985", DIVERGED, *PROBES,
    ],
    # Batch 512 diverged at every rate above (0.1 to 0.8): two lower ones.
    "sgd-low": [
        "optimizer=sgd", "train.batch_size=512", "optimizer.lr_scaling=linear",
        "optimizer.lr=0.003125,0.00625", "train.seed=1", "train.targets=[0.97,0.98,0.985]",
        "train.early_stopping.stop_at=0.985", DIVERGED, *PROBES,
    ],
    "search": ["hparams_search=optuna", "hydra.sweeper.n_trials=20"],
    # The replicated study's own command (README): a user who ran it has this sweep already.
    "fixed": [BATCH_SIZES, "train.seed=1,2,3", *PROBES],
}  # fmt: skip
LABELS = {
    "fixed": "Adam at lr 1e-3",
    "adam": "Adam tuned",
    "sgd": "SGD tuned",
    "search": "Optuna search",
}
FULL = ("fixed", "adam")  # the grids whose runs train every epoch: their test accuracy counts
GRIDS = {"fixed": ("fixed",), "adam": ("adam", "adam-wide"), "sgd": ("sgd", "sgd-low")}
TEST_TARGETS = (0.985, 0.99, 0.992)
# 2 jobs at a time, one thread each: both cores busy. `--set launcher=slurm` (or basic,
# submitit_local) runs the same sweeps elsewhere; the launcher is not part of a sweep's key.
LAUNCHER = "launcher=joblib"


def with_settings(sweeps: dict[str, list[str]], settings: list[str]) -> dict[str, list[str]]:
    """The sweeps with `--set KEY=VALUE`s applied: a key that some sweeps set is replaced in
    those, and a key that none sets is added to every one (a data path, a smaller grid)."""
    out = {name: list(overrides) for name, overrides in sweeps.items()}
    for setting in settings:
        key = setting.partition("=")[0]
        if "=" not in setting or not key:
            raise PipelineError(f"--set {setting!r} is not KEY=VALUE")
        owners = [n for n, o in out.items() if any(x.partition("=")[0] == key for x in o)]
        for name in owners or list(out):
            kept = [x for x in out[name] if x.partition("=")[0] != key]
            out[name] = [*kept, setting]
    return out


def run_sweeps(sweeps: dict[str, list[str]]) -> None:
    for name, overrides in sweeps.items():
        command = [sys.executable, "-m", "lenet_mnist.run", "-m", *overrides]
        print(f"tuned study: the {name} sweep: {' '.join(command[1:])}", flush=True)
        code = subprocess.run(command, check=False).returncode
        if code != 0:
            raise PipelineError(
                f"the {name} sweep failed (exit {code}); the same command resumes it, "
                "skipping every finished run"
            )


def sweep_key(overrides: list[str]) -> str:
    """The key the sweep's parent run is tagged with, computed as the sweep computes it: a
    search's space and sampler are in the config its overrides compose."""
    task = OmegaConf.create(overrides)
    if not any(o.startswith("hparams_search=") for o in overrides):
        return grid.sweep_key(grid.search_overrides(task))  # a grid: its overrides say all
    cfg = parse.compose_node(overrides, with_hydra=True)
    return grid.sweep_key(grid.search_overrides(task, cfg.hydra.sweeper, cfg.objective))


def sweep_rows(client: Any, experiment: str, name: str, overrides: list[str]) -> list[Row]:
    key = sweep_key(overrides)
    found = client.get_experiment_by_name(experiment)
    parents = found and store.newest(
        client, found.experiment_id, f"tags.{store.SWEEP_TAG} = '{key}'", limit=1
    )
    if not parents:
        raise PipelineError(
            f"no {name} sweep of the tuned study in MLflow experiment {experiment!r}; run "
            "`python -m lenet_mnist.study.tuned` first"
        )
    return report.collect(client, parents[0].info.run_id)


def _rows(client: Any, experiment: str, sweeps: dict[str, list[str]]) -> list[Row]:
    """The runs of one grid's sweeps, each once (two sweeps may be one, under --set)."""
    found = {r.run_id: r for n, o in sweeps.items() for r in sweep_rows(client, experiment, n, o)}
    return list(found.values())


def notes(study: tuning.TunedStudy, launcher: str) -> list[str]:
    counts = {name: sum(len(rate.rows) for rate in rates) for name, rates in study.grids.items()}
    counts["search"] = len(study.trials)
    stopped = [r for r in study.rows if r.stopped_epoch is not None]
    diverged = [r for r in stopped if r.best_val_acc < tuning.CHANCE]
    return [
        ", ".join(f"{name}: {plural(n, 'run')}" for name, n in counts.items()) + ".",
        f"{plural(len(stopped), 'run')} stopped early, {len(diverged)} of them diverged "
        "(validation accuracy below 50% after an epoch).",
        "Seconds are measured with two runs side by side on the two cores (launcher=joblib)."
        if launcher == LAUNCHER
        else f"Seconds are measured with the jobs run by {launcher}.",
    ]


def build(client: Any, experiment: str, sweeps: dict[str, list[str]], out: Path) -> list[Path]:
    grids = {
        name: _rows(client, experiment, {s: sweeps[s] for s in parts})
        for name, parts in GRIDS.items()
    }
    trials = sweep_rows(client, experiment, "search", sweeps["search"])
    study = tuning.analyze(grids, LABELS, FULL, trials, TEST_TARGETS)
    machines = " + ".join(sorted({r.machine for r in study.rows}))
    caption = f"tuned study (python -m lenet_mnist.study.tuned) · {machines}"
    with replacing(out) as staging:
        launcher = next(o for o in sweeps["adam"] if o.startswith("launcher="))
        files = tuned_tables.write(study, staging, caption, notes(study, launcher))
        files += tuned_figures.draw(study, staging, caption)
    return [out / p.name for p in files]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report-only", action="store_true", help="rebuild, train nothing")
    parser.add_argument("--out", type=Path, default=Path("docs/study/tuned"))
    parser.add_argument("--params", default="params.yaml", help="for the MLflow location")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="a Hydra override for the sweeps: replaces the key where a sweep sets it, else "
        "is added to all (repeatable; the report then reads those sweeps)",
    )  # fmt: skip
    args = parser.parse_args()
    sweeps = with_settings(SWEEPS, [LAUNCHER, *args.set])
    if not args.report_only:
        run_sweeps(sweeps)
    cfg = parse.load(args.params)
    files = build(store.client(cfg.logger), cfg.logger.experiment_name, sweeps, args.out)
    print(f"tuned study: {plural(len(files), 'file')} in {args.out}; read {files[0]}")


if __name__ == "__main__":
    run_stage(main)
