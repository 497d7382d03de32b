"""The sweep report: what batch size and the number of epochs did to speed and accuracy, as
a sweep writes it when it ends; this command rebuilds it from MLflow (docs/study.md)."""

from __future__ import annotations

import argparse
import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException

from lenet_mnist.config import parse
from lenet_mnist.errors import PipelineError, run_stage
from lenet_mnist.outputs import replacing
from lenet_mnist.study import figures
from lenet_mnist.study.fixed import QUANTITIES, SETTINGS, TO_TARGET, Study, analyze
from lenet_mnist.study.runs import REACH, RUN_COLUMNS, collect, plural, to
from lenet_mnist.tracking import store

SUMMARY_CSV = "summary.csv"  # one line per grid point, its seeds summarized
RUNS_CSV = "summary-runs.csv"  # one line per run, as measured
SCALING_CSV = "scaling.csv"  # one line per target and setting
SUMMARY_MD = "summary.md"
PAGE = "report.html"
READ = "What each table and figure shows: docs/study.md, 'Reading the reports'."


@dataclass
class Table:
    title: str
    frame: pd.DataFrame  # the cells, as text
    about: str = ""  # numbers the table's title does not hold


def page(title: str, caption: str, notes: list[str], tables: list[Table]) -> str:
    """A Markdown page: the title, the caption, a bullet per note and each table."""
    lines = [f"# {title}", "", caption, "", READ] + [""] * bool(notes) + [f"- {n}" for n in notes]
    for t in tables:
        table = t.frame.to_markdown(index=False, disable_numparse=True)
        lines += ["", f"## {t.title}", "", *([t.about, ""] if t.about else []), table]
    return "\n".join([*lines, ""])


def _text(value: Any, fmt: str = "{}") -> str:
    return "—" if value is None or pd.isna(value) else fmt.format(value)


def points_table(study: Study) -> Table:
    p = study.points
    cells = pd.DataFrame({
        "batch size": p["batch_size"].astype(str), "epochs": p["epochs"].astype(str),
        "lr": p["lr"].map("{:.3g}".format), "seeds": p["seeds"].astype(str),
        **{h: p[k].map(lambda i, f=f: i.text(f)) for k, (h, f) in QUANTITIES.items()},
        "vs best": p["vs_best"],
    })  # fmt: skip
    return Table("Grid points", cells)


def targets_table(study: Study) -> Table:
    p = study.points
    cells = [
        [str(p.at[i, "batch_size"]), str(p.at[i, "epochs"]), f"{t:g}",
         f"{p.at[i, f'reached_{t:g}']}/{p.at[i, 'seeds']}",
         *(p.at[i, to(k, t)].text(f) for k, f in TO_TARGET.items())]
        for i in p.index for t in study.targets
    ]  # fmt: skip
    columns = ["batch size", "epochs", "target", "reached", *TO_TARGET]
    return Table("Time to target", pd.DataFrame(cells, columns=columns))


def scaling_table(study: Study) -> Table:
    cells = [
        [s.setting or "all runs", f"{s.target:g}", str(s.fit.runs),
         ", ".join(map(str, s.fit.batch_sizes)), *(_text(v, "{:,.0f}") for v in (
            s.fit.s_min, s.fit.e_min, s.fit.b_crit)),
         f"[{_text(s.fit.low, '{:,.0f}')}, {_text(s.fit.high, '{:,.0f}')}]",
         _text(s.simple, "{:,.0f}") + f" ({plural(s.simple_runs, 'run')})" * (s.simple is not None),
         _text(s.ratio, "{:.2f}"), s.verdict()]
        for s in study.scaling if s.fit
    ]  # fmt: skip
    headings = ["setting", "target", "runs", "batch sizes", "S_min", "E_min", "B_crit"]
    headings += ["B_crit 95%", "B_simple", "B_simple/B_crit", "prediction"]
    return Table("Critical batch size", pd.DataFrame(cells, columns=headings))


def runs_table(study: Study) -> Table:
    r = study.runs
    cells = pd.DataFrame({
        "batch size": r["batch_size"].astype(str), "epochs": r["epochs"].astype(str),
        "seed": r["seed"].map(_text), "test acc": r["test_acc"].map("{:.4f}".format),
        "best val acc": r["best_val_acc"].map("{:.4f}".format),
        "s/epoch": r["s_per_epoch"].map("{:.2f}".format),
        **{f"updates to {t:g}": r[to("iterations", t)].map(lambda v: _text(v, "{:,}"))
           for t in study.targets},
        "stopped": r["stopped_epoch"].replace(0, None).map(_text), "MLflow run": r["run_id"],
    })  # fmt: skip
    return Table("Runs", cells)


def tables(study: Study) -> list[Table]:
    """Those the runs fill a row of (runs that logged no targets fill neither target table)."""
    found = [points_table(study), targets_table(study), scaling_table(study), runs_table(study)]
    return [t for t in found if len(t.frame)]


def _spread(intervals: pd.Series, name: str) -> pd.DataFrame:
    """An Interval column as four: `{name}_mean`, `_low`, `_high`, `_n` (blank: none)."""
    frame = pd.DataFrame(map(vars, intervals), index=intervals.index)
    return frame.astype({"n": "Int64"}).replace({"n": {0: None}}).add_prefix(f"{name}_")


def write_csvs(study: Study, out: Path) -> list[Path]:
    """The numbers kept apart (mean, low, high, n) for programs; each run as measured."""
    p = study.points
    parts = [p[SETTINGS + ["seeds", "vs_best"]], *(_spread(p[k], k) for k in QUANTITIES)]
    for t in study.targets:
        parts += [p[[f"reached_{t:g}"]], *(_spread(p[to(k, t)], to(k, t)) for k in TO_TARGET)]
    pd.concat(parts, axis=1).reset_index().to_csv(out / SUMMARY_CSV, index=False)
    reach = [to(k, t) for t in study.targets for k in REACH]
    study.runs[RUN_COLUMNS + reach].to_csv(out / RUNS_CSV, index=False)
    fits = [{
        "setting": s.setting, "target": s.target, "runs": s.fit.runs,
        "batch_sizes": " ".join(map(str, s.fit.batch_sizes)), "s_min": s.fit.s_min,
        "e_min": s.fit.e_min, "b_crit": s.fit.b_crit, "b_crit_low": s.fit.low,
        "b_crit_high": s.fit.high, "b_simple": s.simple, "b_simple_runs": s.simple_runs,
        "ratio": s.ratio,
    } for s in study.scaling if s.fit]  # fmt: skip
    if fits:
        pd.DataFrame(fits).to_csv(out / SCALING_CSV, index=False)
    return [out / SUMMARY_CSV, out / RUNS_CSV] + ([out / SCALING_CSV] if fits else [])


def write_page(study: Study, pngs: list[Path], out: Path, caption: str) -> Path:
    """One HTML file with the tables and the figures inlined, to mail or attach as is."""
    body = [f"<p>{html.escape(caption)}</p><p>{html.escape(READ)}</p><ul>"]
    body += [f"<li>{html.escape(n)}</li>" for n in study.notes] + ["</ul>"]
    body += [
        f"<h2>{html.escape(t.title)}</h2>{t.frame.to_html(index=False)}" for t in tables(study)
    ]
    body += [f'<img alt="{p.stem}" src="data:image/png;base64,'
             f'{base64.b64encode(p.read_bytes()).decode()}">' for p in pngs]  # fmt: skip
    (out / PAGE).write_text(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Batch size and epochs study</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}img{{max-width:100%}}</style>
</head><body><h1>Batch size and epochs study</h1>{"".join(body)}</body></html>
""")
    return out / PAGE


def build(client: Any, parent: str, out: Path) -> list[Path]:
    """Every report file for one sweep, written all together or not at all."""
    runs = collect(client, parent)
    tags = client.get_run(parent).data.tags
    machines = " + ".join(sorted(set(runs["machine"])))
    caption = f"sweep: {tags.get(store.OVERRIDES_TAG, parent)} · {machines}"
    study = analyze(runs)
    with replacing(out) as staging:
        files = write_csvs(study, staging)
        (staging / SUMMARY_MD).write_text(
            page("Batch size and epochs study", caption, study.notes, tables(study))
        )
        pngs = figures.draw(study, staging, caption)
        write_page(study, pngs, staging, caption)
    return [out / p.name for p in (*files, staging / SUMMARY_MD, *pngs)] + [out / PAGE]


def latest_sweep(client: Any, experiment_name: str, key: str = "", missing: str = "") -> str:
    """The parent run id of the newest sweep, or of the newest with the sweep key `key`."""
    query = f"tags.{store.SWEEP_TAG} " + (f"= '{key}'" if key else "!= ''")
    if parent := store.newest_run(client, experiment_name, query):
        return parent
    raise PipelineError(
        missing
        or f"no sweep in MLflow experiment {experiment_name!r}; "
        "run one with `python -m lenet_mnist.run -m train.batch_size=...`"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", help="the sweep's parent run id (default: the newest sweep)")
    parser.add_argument("--out", type=Path, default=Path("data/report"))
    parser.add_argument("--params", default="params.yaml", help="for the MLflow location")
    args = parser.parse_args()
    cfg = parse.load(args.params)
    client = store.client(cfg.logger)
    parent = args.sweep or latest_sweep(client, cfg.logger.experiment_name)
    try:
        tags = client.get_run(parent).data.tags
    except MlflowException:  # no such run
        tags = {}
    if store.SWEEP_TAG not in tags:
        raise PipelineError(
            f"--sweep {parent} is not a sweep's parent run in {store.tracking_uri(cfg.logger)}"
        )
    files = build(client, parent, args.out)
    print(
        f"report: {plural(len(files), 'file')} in {args.out} for sweep {parent}; open {files[-1]}"
    )


if __name__ == "__main__":
    run_stage(main)
