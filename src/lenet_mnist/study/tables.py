"""The study report's tables, as CSV for programs and as Markdown and HTML for people.

The CSV files keep every number apart (mean, low, high, n); the Markdown and HTML tables
read `mean ± half-width` with the number of seeds. summary-runs.csv keeps each run as
measured, so nothing the replicate means summarize is lost.
"""

from __future__ import annotations

import csv
import html
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lenet_mnist.study.replicates import QUANTITIES, TO_TARGET, Interval, Point
from lenet_mnist.study.rows import Row, plural

if TYPE_CHECKING:
    from lenet_mnist.study.analysis import Scaling, Study

SUMMARY_CSV = "summary.csv"  # one line per grid point, its seeds summarized
RUNS_CSV = "summary-runs.csv"  # one line per run
SCALING_CSV = "scaling.csv"  # one line per target and setting
RUN_COLUMNS = [
    "batch_size", "epochs", "seed", "lr", "lr_scaling", "iterations_per_epoch",
    "total_updates", "s_per_epoch", "samples_per_s", "best_val_acc", "final_val_acc",
    "test_acc", "wall_s", "stopped_epoch", "run_id",
]  # fmt: skip
FIT_METHOD = (
    "S(B) = S_min + E_min/B fitted by least squares on relative residuals over every run "
    "that reached the target; B_crit = E_min/S_min, its 95% interval the 2.5th and 97.5th "
    "percentiles of 2,000 bootstrap resamples of those runs (seeded). B_simple is the median "
    "over those runs of the noise scale at the epoch end nearest to where each reached it."
)


@dataclass
class Table:
    title: str
    about: str  # what the numbers are, in one line
    headings: list[str]
    cells: list[list[str]]


def _num(value: float | None, fmt: str = "{:.4g}") -> str:
    return "—" if value is None or math.isnan(value) else fmt.format(value)


def points_table(study: Study) -> Table:
    names = [h for h, _ in QUANTITIES.values()]
    cells = [
        [str(p.first.batch_size), str(p.first.epochs), f"{p.first.lr:.3g}", str(p.seeds)]
        + [p.stats[k].text(fmt) for k, (_, fmt) in QUANTITIES.items()]
        + [p.verdict]
        for p in study.points
    ]
    about = (
        "Each grid point over its seeds: mean ± half-width of the 95% t-interval. "
        "vs best: whether the 95% intervals of test accuracy overlap the best point's."
    )
    headings = ["batch size", "epochs", "lr", "seeds", *names, "vs best"]
    return Table("Grid points", about, headings, cells)


def targets_table(study: Study) -> Table:
    cells = []
    for p in study.points:
        for t in study.targets:
            found = p.to_target.get(t, {})
            cells.append(
                [str(p.first.batch_size), str(p.first.epochs), f"{t:g}"]
                + [f"{p.reached[t]}/{p.seeds}"]
                + [found[k].text(fmt) if k in found else "—" for k, (_, fmt) in TO_TARGET.items()]
            )
    about = (
        "Optimizer updates, training examples (updates × batch size) and seconds until "
        "validation accuracy first reached each target; means over the seeds that reached it."
    )
    headings = ["batch size", "epochs", "target", "reached", *(h for h, _ in TO_TARGET.values())]
    return Table("Time to target", about, headings, cells)


def scaling_table(study: Study) -> Table:
    cells = [_scaling_cells(s) for s in study.scaling if s.fit]
    headings = ["setting", "target", "runs", "batch sizes", "S_min", "E_min", "B_crit"]
    headings += ["B_crit 95%", "B_simple", "B_simple/B_crit", "prediction"]
    return Table("Critical batch size", FIT_METHOD, headings, cells)


def _scaling_cells(s: Scaling) -> list[str]:
    f = s.fit
    simple = f"{_num(s.simple, '{:,.0f}')} ({plural(s.simple_runs, 'run')})"
    return [
        s.setting or "all runs",
        f"{s.target:g}",
        str(f.runs),
        ", ".join(map(str, f.batch_sizes)),
        _num(f.s_min, "{:,.0f}"),
        _num(f.e_min, "{:,.0f}"),
        _num(f.b_crit, "{:,.0f}"),
        f"[{_num(f.low, '{:,.0f}')}, {_num(f.high, '{:,.0f}')}]",
        simple if s.simple is not None else "—",
        _num(s.ratio, "{:.2f}"),
        s.verdict(),
    ]


def runs_table(study: Study) -> Table:
    headings = ["batch size", "epochs", "seed", "test acc", "best val acc", "s/epoch"]
    headings += [f"updates to {t:g}" for t in study.targets] + ["stopped", "MLflow run"]
    cells = [
        [str(r.batch_size), str(r.epochs), str(r.seed if r.seed is not None else "—")]
        + [f"{r.test_acc:.4f}", f"{r.best_val_acc:.4f}", f"{r.s_per_epoch:.2f}"]
        + [f"{r.reached[t].iterations:,}" if t in r.reached else "—" for t in study.targets]
        + [str(r.stopped_epoch or "—"), r.run_id]
        for r in study.rows
    ]
    return Table("Runs", "Every run as measured.", headings, cells)


def tables(study: Study) -> list[Table]:
    out = [points_table(study)]
    if study.targets:
        out.append(targets_table(study))
        if any(s.fit for s in study.scaling):
            out.append(scaling_table(study))
    return [*out, runs_table(study)]


def markdown(study: Study, caption: str) -> str:
    return page("Batch size and epochs study", caption, study.notes, tables(study))


def page(title: str, caption: str, notes: list[str], found: list[Table]) -> str:
    """A Markdown page: the title, the caption, a bullet per note and each table."""
    lines = [f"# {title}", "", caption, ""]
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    for t in found:
        lines += [f"## {t.title}", "", t.about, ""]
        lines += ["| " + " | ".join(t.headings) + " |", "|" + "---|" * len(t.headings)]
        lines += ["| " + " | ".join(row) + " |" for row in t.cells] + [""]
    return "\n".join(lines)


def html_body(study: Study) -> str:
    """The notes and tables as HTML, for the self-contained page."""
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in study.notes)
    parts = [f"<ul>{notes}</ul>"] if notes else []
    for t in tables(study):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in t.headings)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in t.cells
        )
        parts.append(
            f"<h2>{html.escape(t.title)}</h2><p>{html.escape(t.about)}</p>"
            f"<table><thead><tr>{head}</tr></thead>{body}</table>"
        )
    return "".join(parts)


def _interval_cells(name: str, i: Interval | None) -> dict[str, object]:
    blank = {f"{name}_{k}": "" for k in ("mean", "low", "high", "n")}
    if i is None:
        return blank
    values = {"mean": i.mean, "low": i.low, "high": i.high, "n": i.n}
    return {f"{name}_{k}": "" if v != v else v for k, v in values.items()}  # NaN: blank


def _point_record(p: Point, targets: list[float]) -> dict[str, object]:
    r = p.first
    record: dict[str, object] = {
        "point": p.name, "batch_size": r.batch_size, "epochs": r.epochs, "lr": r.lr,
        "lr_scaling": r.lr_scaling, "iterations_per_epoch": r.iterations_per_epoch,
        "total_updates": r.total_updates, "seeds": p.seeds, "vs_best": p.verdict,
    }  # fmt: skip
    for k in QUANTITIES:
        record |= _interval_cells(k, p.stats[k])
    for t in targets:
        record[f"reached_{t:g}"] = p.reached[t]
        for k in TO_TARGET:
            record |= _interval_cells(f"{k}_to_{t:g}", p.to_target.get(t, {}).get(k))
    return record


def _run_record(r: Row, targets: list[float]) -> dict[str, object]:
    record = {k: getattr(r, k) for k in RUN_COLUMNS}
    for t in targets:
        hit = r.reached.get(t)
        for k in ("iterations", "examples", "epochs", "seconds"):
            value = getattr(hit, k) if hit else None
            record[f"{k}_to_{t:g}"] = "" if value is None else value
    return {k: "" if v is None else v for k, v in record.items()}


def _scaling_record(s: Scaling) -> dict[str, object]:
    f = s.fit
    return {
        "setting": s.setting, "target": s.target, "runs": f.runs,
        "batch_sizes": " ".join(map(str, f.batch_sizes)), "s_min": f.s_min, "e_min": f.e_min,
        "b_crit": f.b_crit, "b_crit_low": f.low, "b_crit_high": f.high,
        "b_simple": "" if s.simple is None else s.simple, "b_simple_runs": s.simple_runs,
        "ratio": s.ratio,
    }  # fmt: skip


def write_csv(path: Path, records: Iterable[dict[str, object]]) -> Path:
    records = list(records)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]) if records else [])
        writer.writeheader()
        writer.writerows(records)
    return path


def write_csvs(study: Study, out: Path) -> list[Path]:
    files = [
        write_csv(out / SUMMARY_CSV, (_point_record(p, study.targets) for p in study.points)),
        write_csv(out / RUNS_CSV, (_run_record(r, study.targets) for r in study.rows)),
    ]
    fits = [_scaling_record(s) for s in study.scaling if s.fit]
    return files + ([write_csv(out / SCALING_CSV, fits)] if fits else [])
