"""The tuned study: which batch size and how many epochs, with the rate tuned for each. Each
sweep is the `python -m lenet_mnist.run -m ...` a user would type, so a rerun resumes it;
docs/study.md says why each is as it is."""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from lenet_mnist.config import identity, parse
from lenet_mnist.errors import PipelineError, run_stage
from lenet_mnist.outputs import replacing
from lenet_mnist.study import figures, tuning
from lenet_mnist.study.report import SUMMARY_MD, Table, latest_sweep, page
from lenet_mnist.study.runs import REACH, collect, interval, plural, to, typed
from lenet_mnist.study.tuning import TunedStudy
from lenet_mnist.tracking import store

BATCH_SIZES = "train.batch_size=16,32,64,128,256,512"
# Validation every 200 updates times the targets; test accuracy at each epoch's end gives
# the time to each test accuracy and the Pareto front.
PROBES = ["train.val_every_n_steps=200", "train.test_every_epoch=true"]
DIVERGED = "train.early_stopping.give_up_below=0.5"  # a run that blew up stops after an epoch
ADAM = ["train.seed=1,2", "train.targets=[0.97,0.98,0.985,0.99]", DIVERGED, *PROBES]
SGD = ["train.seed=1", "train.targets=[0.97,0.98,0.985]", "train.early_stopping.stop_at=0.985",
       DIVERGED, *PROBES]  # fmt: skip
SWEEPS: dict[str, list[str]] = {  # each sweep's batch sizes, rate rule and rates, then the rest
    "adam": [BATCH_SIZES, "optimizer.lr_scaling=sqrt", "optimizer.lr=0.0005,0.001,0.002,0.004",
             *ADAM],
    "adam-wide": [BATCH_SIZES, "optimizer.lr_scaling=sqrt", "optimizer.lr=0.008", *ADAM],
    "sgd": ["optimizer=sgd", BATCH_SIZES, "optimizer.lr_scaling=linear",
            "optimizer.lr=0.0125,0.025,0.05,0.1", *SGD],
    "sgd-low": ["optimizer=sgd", "train.batch_size=512", "optimizer.lr_scaling=linear",
                "optimizer.lr=0.003125,0.00625", *SGD],
    "search": ["hparams_search=optuna", "hydra.sweeper.n_trials=20"],
    "fixed": [BATCH_SIZES, "train.seed=1,2,3", *PROBES],
}  # fmt: skip
GRIDS = {"fixed": ("fixed",), "adam": ("adam", "adam-wide"), "sgd": ("sgd", "sgd-low")}
RUNS_CSV = "runs.csv"
FITS_CSV = "fits.csv"
# 2 jobs at a time, one thread each; `--set launcher=slurm` runs the same sweeps elsewhere
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
            out[name] = [*(x for x in out[name] if x.partition("=")[0] != key), setting]
    return out


def run_sweeps(sweeps: dict[str, list[str]]) -> None:
    """Each sweep once: under --set, two may become one (a single rate, say)."""
    ran: dict[str, str] = {}  # sweep key: the first sweep's name
    for name, overrides in sweeps.items():
        if (first := ran.setdefault(sweep_key(overrides), name)) != name:
            print(f"tuned study: the {name} sweep is the {first} sweep, run above", flush=True)
            continue
        command = [sys.executable, "-m", "lenet_mnist.run", "-m", *overrides]
        print(f"tuned study: the {name} sweep: {' '.join(command[1:])}", flush=True)
        if code := subprocess.run(command, check=False).returncode:
            raise PipelineError(
                f"the {name} sweep failed (exit {code}); the same command resumes it"
            )


def sweep_key(overrides: list[str]) -> str:
    """The key the sweep's parent run is tagged with, computed as the sweep computes it: a
    search's space and sampler are in the config its overrides compose."""
    task = OmegaConf.create(overrides)
    if not any(o.startswith("hparams_search=") for o in overrides):
        return identity.sweep_key(identity.search_overrides(task))  # a grid: its overrides say all
    cfg = parse.compose_node(overrides, with_hydra=True)
    return identity.sweep_key(identity.search_overrides(task, cfg.hydra.sweeper, cfg.objective))


def sweep_runs(client: Any, experiment: str, sweeps: dict[str, list[str]]) -> pd.DataFrame:
    """The runs of the sweeps, each once (two sweeps may be one, under --set)."""
    found = [
        collect(client, latest_sweep(client, experiment, sweep_key(overrides), (
            f"no {name} sweep of the tuned study in MLflow experiment {experiment!r}; run "
            "`python -m lenet_mnist.study.tuned` first")))
        for name, overrides in sweeps.items()
    ]  # fmt: skip
    return typed(pd.concat(found).drop_duplicates("run_id").reset_index(drop=True))


def notes(study: TunedStudy, launcher: str) -> list[str]:
    counts = study.runs["grid_name"].value_counts(sort=False)
    stopped = study.runs[study.runs["stopped_epoch"].notna()]
    diverged = (stopped["best_val_acc"] < tuning.CHANCE).sum()
    return [
        ", ".join(f"{name}: {plural(n, 'run')}" for name, n in counts.items()) + ".",
        f"{plural(len(stopped), 'run')} stopped early, {diverged} of them diverged "
        "(validation accuracy below 50% after an epoch).",
        "Seconds are measured with two runs side by side on the two cores (launcher=joblib)."
        if launcher == LAUNCHER
        else f"Seconds are measured with the jobs run by {launcher}.",
    ]


def build(client: Any, experiment: str, sweeps: dict[str, list[str]], out: Path) -> list[Path]:
    parts = {**GRIDS, "search": ("search",)}  # the search last, as analyze takes it
    grids = {n: sweep_runs(client, experiment, {s: sweeps[s] for s in p}) for n, p in parts.items()}
    study = tuning.analyze(grids)
    machines = " + ".join(sorted(set(study.runs["machine"])))
    caption = f"tuned study (python -m lenet_mnist.study.tuned) · {machines}"
    launcher = next(o for o in sweeps["adam"] if o.startswith("launcher="))
    tables = [
        accuracy_table(study), fits_table(study), targets_table(study), rules_table(study),
        recommend_table(study), search_table(study, 0.99), pareto_table(study),
    ]  # fmt: skip
    found = [t for t in tables if len(t.frame)]  # one the runs hold nothing for: out
    with replacing(out) as staging:
        (staging / SUMMARY_MD).write_text(
            page("The tuned study", caption, notes(study, launcher), found)
        )
        files = [staging / SUMMARY_MD, *write_csvs(study, staging)]
        files += figures.draw_tuned(study, staging, caption)
    return [out / p.name for p in files]


def _size(value: float) -> str:
    """A batch size; one beyond any measured (S_min about 0) as a power of ten, not 18 digits."""
    return f"{value:,.0f}" if value < 1e6 else f"{value:.1e}"


def accuracy_table(study: TunedStudy) -> Table:
    """Per batch size, each full grid side by side: its rate and test accuracy."""
    columns = {}
    for name in tuning.FULL:
        best = tuning.most_accurate(study.grid(name)).groupby("batch_size")
        acc = best["test_acc"].agg(interval)
        columns[f"{tuning.LABELS[name]}: rate"] = best["rate"].first().map("{:.3g}".format)
        columns[f"{tuning.LABELS[name]}: test acc (%)"] = acc.map(lambda i: i.text("{:.2f}", 100))
    cells = pd.DataFrame(columns).sort_index().fillna("—")
    return Table(
        "Test accuracy per batch size, the fixed rate beside the tuned",
        cells.rename_axis("batch size").reset_index().astype(str),
    )


def fits_table(study: TunedStudy) -> Table:
    cells = [[
        tuning.LABELS[f.grid], f"{f.target:g}",
        f"{f.fit.runs} ({f.fit.batch_sizes[0]}–{f.fit.batch_sizes[-1]})", f"{f.fit.s_min:,.0f}",
        f"{f.fit.e_min:,.0f}", f"{_size(f.fit.b_crit)} [{_size(f.fit.low)}, {_size(f.fit.high)}]",
        f"{f.simple:,.0f}",
        "—" if math.isnan(f.ratio[0]) else "{:.3g} [{:.3g}, {:.3g}]".format(*f.ratio),
    ] for f in study.fits if f.fit is not None]  # fmt: skip
    return Table("The critical batch size at the tuned rates", pd.DataFrame(cells, columns=[
        "grid", "target", "runs (batch sizes)", "S_min", "E_min", "B_crit (95%)", "B_simple",
        "B_simple / B_crit (95%)"]))  # fmt: skip


def targets_table(study: TunedStudy) -> Table:
    cells = []
    for f in study.fits:
        rates = study.grid(f.grid).groupby("batch_size")["rate"].unique().map(sorted)
        for size, rate in f.chosen.groupby("batch_size", sort=False):
            lr, grid = rate["rate"].iloc[0], rates[size]
            # top or bottom: the tuned rate is at the end of its batch size's grid of rates
            edge = {grid[0]: " (bottom)", grid[-1]: " (top)"}.get(lr, "") if len(grid) > 1 else ""
            cells.append([
                tuning.LABELS[f.grid], f"{f.target:g}", str(size), f"{lr:.3g}" + edge,
                *(interval(rate[to(k, f.target)]).text("{:,.0f}") for k in REACH[:2]),
            ])  # fmt: skip
    columns = ["grid", "target", "batch size", "tuned rate", "updates", "examples"]
    return Table(
        "Updates and examples to each validation target at the tuned rate",
        pd.DataFrame(cells, columns=columns),
    )


def rules_table(study: TunedStudy) -> Table:
    cells = []
    for name in study.tuned_grids:  # one rate per batch size: nothing was tuned
        runs = study.grid(name)
        target = tuning.widest_target(study.fitted(name), runs)
        if target is None:
            continue  # no target that every batch size reached
        for size, r in tuning.rules(runs, target).iterrows():
            cells.append([tuning.LABELS[name], f"{target:g}", str(size), f"{r['best']:.3g}"] + [
                f"{r[k]:.3g}: " + ("lands" if tuning.lands(r["best"], r[k]) else
                                   f"misses ({r[f'{k} nearest']:.3g})")
                for k in tuning.RULES
            ])  # fmt: skip
    columns = ["grid", "target", "batch size", "tuned rate", *(f"{r} rule" for r in tuning.RULES)]
    return Table("Scaling rules against the tuned rates", pd.DataFrame(cells, columns=columns))


def recommend_table(study: TunedStudy) -> Table:
    cells = []
    for target in tuning.TEST_TARGETS:
        cells += [[
            f"{target:.1%}", o.grid, o.optimizer, str(o.batch_size), f"{o.rate:.3g}",
            f"{o.epochs:.0f} (of {o.planned})", o.time.text("{:.1f}"),
            f"{o.fastest:.1f}–{o.slowest:.1f}",
        ] for o in tuning.options(study.gridded, target).head(1).itertuples()] or [
            [f"{target:.1%}", "not reached by every seed of any rate", *[""] * 6]
        ]  # fmt: skip
    return Table("The fastest way to each test accuracy, on this machine", pd.DataFrame(
        cells, columns=["test target", "grid", "optimizer", "batch size", "rate",
                        "epochs (of planned)", "seconds", "range over the seeds"]))  # fmt: skip


def search_table(study: TunedStudy, target: float) -> Table:
    trials = study.grid("search")
    hits = trials[trials["test_acc"] >= target]
    hits = hits.assign(s=hits["elapsed_s"].str[-1]).sort_values("s", kind="stable")
    best = "Optuna's best trial"
    cells = [[
        best, str(r.batch_size), f"{r.lr:.3g}", str(r.epochs),
        f"{r.test_acc:.2%}", f"{r.s:.1f}",
    ] for r in hits.head(1).itertuples()] or [[best, "none reached it", *[""] * 4]]  # fmt: skip
    cells += [[
        "the grid's fastest", str(o.batch_size), f"{o.rate:.3g}",
        f"{o.epochs:.0f} (of {o.planned})", o.test_acc.text("{:.2f}", 100), o.time.text("{:.1f}"),
    ] for o in tuning.options(study.gridded, target).head(1).itertuples()]  # fmt: skip
    return Table(
        f"The Optuna search beside the grid, to {target:.1%} test accuracy",
        pd.DataFrame(cells, columns=["", "batch size", "rate", "epochs", "test acc", "seconds"]),
        f"{plural(len(trials), 'trial')}, {len(hits)} reaching the target, the fastest shown.",
    )  # fmt: skip


def pareto_table(study: TunedStudy) -> Table:
    front = tuning.pareto(tuning.points(study.learned))
    cells = pd.DataFrame({
        "seconds": front["seconds"].map("{:.1f}".format),
        "test acc": front["acc"].map("{:.2%}".format), "grid": front["grid"],
        "batch size": front["batch_size"].astype(str), "rate": front["lr"].map("{:.3g}".format),
        "epoch": front["epoch"].astype(str) + " of " + front["epochs"].astype(str),
    })  # fmt: skip
    return Table("The accuracy–time Pareto front over every run", cells)


def write_csvs(study: TunedStudy, out: Path) -> list[Path]:
    """Each run (its grid, settings, result and updates to each target) and each fit."""
    runs = study.runs.assign(seconds=study.runs["elapsed_s"].str[-1])
    reach = [to("iterations", t) for t in (0.97, 0.98, 0.985, 0.99)]
    columns = ["grid", "optimizer", "batch_size", "lr", "epochs", "seed", "test_acc",
               "best_val_acc", "seconds", "stopped_epoch", *reach, "run_id"]  # fmt: skip
    runs.reindex(columns=columns).to_csv(out / RUNS_CSV, index=False)
    pd.DataFrame([{
        "grid": f.grid, "target": f.target, "runs": f.fit.runs, "s_min": f.fit.s_min,
        "e_min": f.fit.e_min, "b_crit": f.fit.b_crit, "b_crit_low": f.fit.low,
        "b_crit_high": f.fit.high, "b_simple": f.simple, "ratio": f.ratio[0],
        "ratio_low": f.ratio[1], "ratio_high": f.ratio[2],
    } for f in study.fits if f.fit]).to_csv(out / FITS_CSV, index=False)  # fmt: skip
    return [out / RUNS_CSV, out / FITS_CSV]


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
