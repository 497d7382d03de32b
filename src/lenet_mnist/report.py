"""The sweep report: what batch size and the number of epochs did to speed and accuracy.

    python -m lenet_mnist.report [--sweep PARENT_RUN_ID] [--out data/report]

It reads a sweep's complete child runs from MLflow (the newest sweep by default) and
writes a summary table (CSV and Markdown), PNG figures and one self-contained HTML page.
A sweep writes its own report when it ends; this command rebuilds it, for example after
a partial sweep or for an older one.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import statistics
from dataclasses import asdict, dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any

from lenet_mnist import config, provenance, tracking
from lenet_mnist.report_plots import draw, plural
from lenet_mnist.stage import PipelineError, replacing, run_stage

SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
PAGE = "report.html"


@dataclass
class Row:
    """One sweep point. Seconds per epoch and samples/s are medians over the epochs,
    so the first epoch's compilation does not count; the wall time includes it."""

    batch_size: int
    epochs: int
    lr: float
    lr_scaled: bool  # optimizer.scale_lr_with_batch
    iterations_per_epoch: int
    total_updates: int
    s_per_epoch: float
    samples_per_s: float
    best_val_acc: float
    final_val_acc: float
    test_acc: float
    wall_s: float
    run_id: str
    overrides: str = field(repr=False)  # the job's own overrides
    machine: str = field(repr=False)
    val_acc: list[float] = field(default_factory=list, repr=False)  # per epoch
    elapsed_s: list[float] = field(default_factory=list, repr=False)  # at each epoch's end


COLUMNS = {  # Row field -> heading
    "batch_size": "batch size",
    "epochs": "epochs",
    "lr": "lr",
    "lr_scaled": "lr scaled",
    "iterations_per_epoch": "iterations/epoch",
    "total_updates": "total updates",
    "s_per_epoch": "s/epoch",
    "samples_per_s": "samples/s",
    "best_val_acc": "best val acc",
    "final_val_acc": "final val acc",
    "test_acc": "test acc",
    "wall_s": "wall s",
    "run_id": "MLflow run",
}


def collect(client: Any, parent: str) -> list[Row]:
    """The sweep's points, each from the newest complete run of its job overrides.

    A point rerun (forced, or after its config changed) appears once, with its latest result.
    """
    newest: dict[str, Any] = {}
    complete = f" and tags.{tracking.COMPLETE_TAG} = 'true'"
    for run in tracking.children(client, parent, complete):  # newest first
        newest.setdefault(run.data.tags[tracking.JOB_TAG], run)
    if not newest:
        raise PipelineError(f"sweep {parent} has no complete runs yet; run or resume the sweep")
    rows = [_row(client, run) for run in newest.values()]
    return sorted(rows, key=lambda r: (r.epochs, r.batch_size, r.lr))


def _row(client: Any, run: Any) -> Row:
    def series(key: str) -> list[float]:
        history = tracking.retry_locked(lambda: client.get_metric_history(run.info.run_id, key))
        return [m.value for m in sorted(history, key=lambda m: (m.step, m.timestamp))]

    p, m = run.data.params, run.data.metrics
    val_acc, train_s, val_s = series("val_acc"), series("epoch_time_s"), series("val_time_s")
    elapsed = list(accumulate(t + v for t, v in zip(train_s, val_s, strict=True)))
    return Row(
        batch_size=int(p["train.batch_size"]),
        epochs=int(p["train.epochs"]),
        lr=float(p["derived.lr"]),
        lr_scaled=p["optimizer.scale_lr_with_batch"] == "True",
        iterations_per_epoch=int(p["derived.iterations_per_epoch"]),
        total_updates=int(p["derived.total_updates"]),
        s_per_epoch=statistics.median(train_s),
        samples_per_s=statistics.median(series("samples_per_s")),
        best_val_acc=max(val_acc),
        final_val_acc=val_acc[-1],
        test_acc=m["test_acc"],
        wall_s=m["train_wall_s"],
        run_id=run.info.run_id,
        overrides=run.data.tags[tracking.JOB_TAG],
        machine=_machine(run.data.tags, p),
        val_acc=val_acc,
        elapsed_s=elapsed,
    )


def _machine(tags: dict[str, str], params: dict[str, str]) -> str:
    """Where a run ran, for the caption; runs logged before a tag existed say `?`."""
    threads = params.get("numerics.threads", "?")
    threads = plural(int(threads), "thread") if threads.isdigit() else f"{threads} threads"
    return (
        f"{tags.get(provenance.MACHINE_TAG, 'unknown machine')}, "
        f"{params.get('numerics.mode', '?')} numerics ({threads}, "
        f"ATen {params.get('numerics.aten_capability', '?')})"
    )


def _cells(row: Row) -> list[str]:
    formats = {"lr": "{:.3g}", "s_per_epoch": "{:.2f}", "samples_per_s": "{:,.0f}"}
    formats |= dict.fromkeys(("best_val_acc", "final_val_acc", "test_acc"), "{:.4f}")
    formats["wall_s"] = "{:.1f}"
    values = asdict(row)
    return [formats.get(k, "{}").format(values[k]) for k in COLUMNS]


def write_tables(rows: list[Row], out: Path) -> list[Path]:
    with open(out / SUMMARY_CSV, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows([asdict(r)[k] for k in COLUMNS] for r in rows)
    lines = ["| " + " | ".join(COLUMNS.values()) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    (out / SUMMARY_MD).write_text("\n".join(lines) + "\n")
    return [out / SUMMARY_CSV, out / SUMMARY_MD]


def write_page(rows: list[Row], figures: list[Path], out: Path, caption: str) -> Path:
    """One HTML file with the table and the figures inlined, to mail or attach as is."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in COLUMNS.values())
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(r)) + "</tr>" for r in rows
    )
    images = "".join(
        f'<img alt="{p.stem}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}">'
        for p in figures
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Batch size and epochs study</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}img{{max-width:100%}}</style>
</head><body><h1>Batch size and epochs study</h1><p>{html.escape(caption)}</p>
<table><tr>{head}</tr>{body}</table>{images}</body></html>
"""
    (out / PAGE).write_text(page)
    return out / PAGE


def build(client: Any, parent: str, out: Path) -> list[Path]:
    """Every report file for one sweep, written all together or not at all."""
    rows = collect(client, parent)
    tags = tracking.retry_locked(lambda: client.get_run(parent)).data.tags
    machines = " + ".join(sorted({r.machine for r in rows}))
    caption = f"sweep: {tags.get(tracking.OVERRIDES_TAG, parent)} · {machines}"
    with replacing(out) as staging:
        tables = write_tables(rows, staging)
        figures = draw(rows, staging, caption)
        write_page(rows, figures, staging, caption)
    return [out / p.name for p in (*tables, *figures)] + [out / PAGE]


def is_sweep(client: Any, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        return tracking.SWEEP_TAG in client.get_run(run_id).data.tags
    except MlflowException:  # no such run
        return False


def latest_sweep(client: Any, experiment_name: str) -> str:
    experiment = client.get_experiment_by_name(experiment_name)
    query = f"tags.{tracking.SWEEP_TAG} != ''"
    runs = experiment and tracking.newest(client, experiment.experiment_id, query, limit=1)
    if not runs:
        raise PipelineError(
            f"no sweep in MLflow experiment {experiment_name!r}; "
            "run one with `python -m lenet_mnist.run -m train.batch_size=...`"
        )
    return runs[0].info.run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", help="the sweep's parent run id (default: the newest sweep)")
    parser.add_argument("--out", type=Path, default=Path("data/report"))
    parser.add_argument("--params", default="params.yaml", help="for the MLflow location")
    args = parser.parse_args()
    cfg = config.load(args.params)
    uri = tracking.tracking_uri(cfg.logger)
    client = tracking.client(cfg.logger)
    parent = args.sweep or latest_sweep(client, cfg.logger.experiment_name)
    if not is_sweep(client, parent):
        raise PipelineError(f"--sweep {parent} is not a sweep's parent run in {uri}")
    files = build(client, parent, args.out)
    print(
        f"report: {plural(len(files), 'file')} in {args.out} for sweep {parent}; open {files[-1]}"
    )


if __name__ == "__main__":
    run_stage(main)
