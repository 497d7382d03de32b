"""The tuned study's tables (lenet_mnist.study.tuning's numbers, as Markdown and CSV)."""

from __future__ import annotations

import math
from pathlib import Path

from lenet_mnist.study.fastest import Option, options, pareto, points
from lenet_mnist.study.replicates import Interval
from lenet_mnist.study.rows import Row, plural
from lenet_mnist.study.tables import Table, page, write_csv
from lenet_mnist.study.tuning import (
    RULES,
    Rate,
    TunedFit,
    TunedStudy,
    most_accurate,
    rule_checks,
    widest_target,
)

SUMMARY_MD = "summary.md"
RUNS_CSV = "runs.csv"
FITS_CSV = "fits.csv"


def _i(value: Interval, fmt: str) -> str:
    return value.text(fmt) if not math.isnan(value.mean) else "—"


def _pct(value: Interval) -> str:
    scaled = Interval(value.mean * 100, value.low * 100, value.high * 100, value.n)
    return _i(scaled, "{:.2f}")


def _lr(lr: float) -> str:
    return f"{lr:.3g}"


def accuracy_table(study: TunedStudy) -> Table:
    """Per batch size, each full grid side by side: its rate and test accuracy."""
    chosen = {name: most_accurate(study.grids.get(name, [])) for name in study.full}
    sizes = sorted({size for found in chosen.values() for size in found})
    cells = []
    for size in sizes:
        row = [str(size)]
        for found in chosen.values():
            rate = found.get(size)
            row += [_lr(rate.lr), _pct(rate.stat("test_acc"))] if rate else ["—", "—"]
        cells.append(row)
    headings = ["batch size"]
    for name in study.full:
        headings += [f"{study.labels[name]}: rate", f"{study.labels[name]}: test acc (%)"]
    return Table(
        "Test accuracy per batch size, the fixed rate beside the tuned",
        "Where a grid has several rates per batch size, the one with the best mean validation "
        "accuracy (chosen on validation, not test); mean ± 95% interval over the seeds "
        "(t-distribution).",
        headings,
        cells,
    )


def _is(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6)


def targets_table(study: TunedStudy) -> Table:
    cells = []
    for f in study.fits:
        for size, rate in f.chosen.items():
            cells.append([
                study.labels[f.grid], f"{f.target:g}", str(size),
                _lr(rate.lr) + _edge(study.grids[f.grid], rate),
                _i(rate.steps(f.target), "{:,.0f}"), _i(rate.examples(f.target), "{:,.0f}"),
            ])  # fmt: skip
    return Table(
        "Updates and examples to each validation target at the tuned rate",
        "Per batch size, the rate of its grid whose seeds all reached the target in the "
        "fewest updates on average (top or bottom: the end of the grid, beyond which a rate "
        "might be faster still); mean ± 95% interval over the seeds.",
        ["grid", "target", "batch size", "tuned rate", "updates", "examples"],
        cells,
    )


def _edge(rates: list[Rate], rate: Rate) -> str:
    """` (top)` or ` (bottom)` where the tuned rate is at the end of its batch size's grid,
    so a rate beyond it might be faster still; nothing where the grid has one rate."""
    grid = sorted(r.lr for r in rates if r.batch_size == rate.batch_size)
    if len(grid) < 2:
        return ""
    return " (top)" if rate.lr == grid[-1] else " (bottom)" if rate.lr == grid[0] else ""


def fits_table(study: TunedStudy) -> Table:
    cells = [[study.labels[f.grid], *_fit_cells(f)] for f in study.fits if f.fit is not None]
    return Table(
        "The critical batch size at the tuned rates",
        "S(B) = S_min + E_min/B fitted to the tuned runs (relative least squares); B_crit = "
        "E_min/S_min with a 95% bootstrap interval over runs. B_simple is the median over those "
        "runs of tr(Σ) averaged over the epochs up to the target, over |G|² averaged the same "
        "way; its ratio's interval comes from the same resamples.",
        ["grid", "target", "runs (batch sizes)", "S_min", "E_min", "B_crit (95%)",
         "B_simple", "B_simple / B_crit (95%)"],
        cells,
    )  # fmt: skip


def _fit_cells(f: TunedFit) -> list[str]:
    fit = f.fit
    sizes = f"{fit.runs} ({fit.batch_sizes[0]}–{fit.batch_sizes[-1]})"
    ratio, low, high = f.ratio
    return [
        f"{f.target:g}", sizes, f"{fit.s_min:,.0f}", f"{fit.e_min:,.0f}",
        f"{_size(fit.b_crit)} [{_size(fit.low)}, {_size(fit.high)}]", f"{f.simple:,.0f}",
        f"{ratio:.3g} [{low:.3g}, {high:.3g}]" if not math.isnan(ratio) else "—",
    ]  # fmt: skip


def _size(value: float) -> str:
    """A batch size; one beyond any measured (S_min about 0) as a power of ten, not 18 digits."""
    return f"{value:,.0f}" if value < 1e6 else f"{value:.1e}"


def rules_table(study: TunedStudy) -> Table:
    cells = []
    for name, rates in study.grids.items():
        target = widest_target(study.fitted(name), rates)
        if target is None or len(rates) == len({r.batch_size for r in rates}):
            continue  # no target for every size, or one rate per size: nothing was tuned
        for check in rule_checks(rates, target):
            row = [study.labels[name], f"{target:g}", str(check.batch_size), _lr(check.best)]
            for rule in RULES:
                verdict = "lands" if check.lands(rule) else f"misses ({_lr(check.nearest[rule])})"
                row.append(f"{_lr(check.predicted[rule])}: {verdict}")
            cells.append(row)
    return Table(
        "Scaling rules against the tuned rates",
        "Each rule scales batch 64's tuned rate to the batch size; it lands when its "
        "prediction is within half a grid step (a factor √2) of the tuned rate, else the grid "
        "rate nearest to it is given. The target is the highest that every batch size reached.",
        ["grid", "target", "batch size", "tuned rate", *(f"{r} rule" for r in RULES)],
        cells,
    )


def recommend_table(study: TunedStudy) -> Table:
    cells = []
    for target in study.test_targets:
        found = options(study.rates, target)
        none = ["not reached by every seed of any rate", *[""] * 6]
        best = [study.grid_of(found[0].rate.rows[0]), *_option_cells(found[0])] if found else none
        cells.append([f"{target:.1%}", *best])
    return Table(
        "The fastest way to each test accuracy, on this machine",
        "Over every rate of the grids with 2 seeds or more: the first epoch's end at which "
        "every seed's test "
        "accuracy reached the target, and the training seconds to it (validation included, "
        "the study's extra probes left out); mean ± 95% interval over the seeds. The epochs "
        "are those of a schedule that anneals over `planned`.",
        ["test target", "grid", "optimizer", "batch size", "rate", "epochs (of planned)",
         "seconds", "range over the seeds"],
        cells,
    )  # fmt: skip


def _option_cells(o: Option) -> list[str]:
    r = o.rate
    return [
        r.optimizer, str(r.batch_size), _lr(r.lr), f"{o.epochs} (of {o.planned})",
        _i(o.seconds, "{:.1f}"), f"{min(o.each):.1f}–{max(o.each):.1f}",
    ]  # fmt: skip


def search_table(study: TunedStudy, target: float) -> Table:
    hits = sorted((r for r in study.trials if r.test_acc >= target), key=lambda r: r.elapsed_s[-1])
    best_grid = options(study.rates, target)
    cells = [[
        "Optuna's best trial", str(r.batch_size), _lr(r.lr), str(r.epochs), f"{r.test_acc:.2%}",
        f"{r.elapsed_s[-1]:.1f}",
    ] for r in hits[:1]] or [["Optuna's best trial", "none reached it", *[""] * 4]]  # fmt: skip
    cells += [[
        "the grid's fastest", str(o.rate.batch_size), _lr(o.rate.lr),
        f"{o.epochs} (of {o.planned})", _pct(o.rate.stat("test_acc")), _i(o.seconds, "{:.1f}"),
    ] for o in best_grid[:1]]  # fmt: skip
    return Table(
        f"The Optuna search beside the grid, to {target:.1%} test accuracy",
        f"{plural(len(study.trials), 'trial')}, {len(hits)} reaching the target, the fastest "
        "of them shown; the grid's test accuracy is that of its full runs.",
        ["", "batch size", "rate", "epochs", "test acc", "seconds"],
        cells,
    )


def pareto_table(study: TunedStudy) -> Table:
    front = pareto(points(study.learned))
    cells = [[
        f"{p.seconds:.1f}", f"{p.acc:.2%}", study.grid_of(p.row), str(p.row.batch_size),
        _lr(p.row.lr), f"{p.epoch} of {p.row.epochs}",
    ] for p in front]  # fmt: skip
    return Table(
        "The accuracy–time Pareto front over every run",
        "Each epoch's end of every run that did not diverge is a point (test accuracy, "
        "training seconds); these are the points no other is both faster and more accurate "
        "than.",
        ["seconds", "test acc", "grid", "batch size", "rate", "epoch"],
        cells,
    )


def write(study: TunedStudy, out: Path, caption: str, notes: list[str]) -> list[Path]:
    found = [
        accuracy_table(study), fits_table(study), targets_table(study), rules_table(study),
        recommend_table(study), search_table(study, 0.99), pareto_table(study),
    ]  # fmt: skip
    found = [t for t in found if t.cells]  # a table the runs hold nothing for is left out
    (out / SUMMARY_MD).write_text(page("The tuned study", caption, notes, found))
    runs = write_csv(out / RUNS_CSV, (_run_record(study, r) for r in study.rows))
    fits = write_csv(out / FITS_CSV, (_fit_record(f) for f in study.fits if f.fit))
    return [out / SUMMARY_MD, runs, fits]


def _run_record(study: TunedStudy, r: Row) -> dict[str, object]:
    reach = {f"iterations_to_{t:g}": r.reached[t].iterations if t in r.reached else "" for t in
             (0.97, 0.98, 0.985, 0.99)}  # fmt: skip
    return {
        "grid": study.grid_of(r), "optimizer": r.optimizer, "batch_size": r.batch_size,
        "lr": r.lr, "epochs": r.epochs,
        "seed": r.seed, "test_acc": r.test_acc, "best_val_acc": r.best_val_acc,
        "seconds": r.elapsed_s[-1] if r.elapsed_s else "", "stopped_epoch": r.stopped_epoch or "",
        **reach, "run_id": r.run_id,
    }  # fmt: skip


def _fit_record(f: TunedFit) -> dict[str, object]:
    fit = f.fit
    return {
        "grid": f.grid, "target": f.target, "runs": fit.runs, "s_min": fit.s_min,
        "e_min": fit.e_min, "b_crit": fit.b_crit, "b_crit_low": fit.low, "b_crit_high": fit.high,
        "b_simple": f.simple, "ratio": f.ratio[0], "ratio_low": f.ratio[1],
        "ratio_high": f.ratio[2],
    }  # fmt: skip
