"""The sweep report: what batch size and the number of epochs did to speed and accuracy.

    python -m lenet_mnist.study.report [--sweep PARENT_RUN_ID] [--out data/report]

It reads a sweep's complete child runs from MLflow (the newest sweep by default) and
writes a self-contained HTML page, its tables as Markdown and CSV, and its PNG figures.
The runs of one grid point that differ only in train.seed are its replicates: the tables
give their mean with a 95% confidence interval (lenet_mnist.study.replicates). Where runs logged
when validation accuracy reached train.targets, the report fits the critical batch size
to steps and examples to each target and sets the gradient noise scale's prediction
beside it (lenet_mnist.study.scaling, lenet_mnist.study.analysis). Runs without those measurements
leave those parts out, with a one-line note on the page.

A sweep writes its own report when it ends; this command rebuilds it, for example after
a partial sweep or for an older one.
"""

from __future__ import annotations

import argparse
import base64
import html
import math
import statistics
from itertools import accumulate
from pathlib import Path
from typing import Any

from lenet_mnist.config import parse
from lenet_mnist.errors import PipelineError, run_stage
from lenet_mnist.outputs import replacing
from lenet_mnist.study import analysis, tables
from lenet_mnist.study.figures import draw
from lenet_mnist.study.rows import Reach, Row, plural
from lenet_mnist.tracking import store

SUMMARY_CSV = tables.SUMMARY_CSV  # one line per grid point
SUMMARY_MD = "summary.md"
PAGE = "report.html"


def collect(client: Any, parent: str) -> list[Row]:
    """The sweep's points, each from the newest complete run of its job overrides.

    A point rerun (forced, or after its config changed) appears once, with its latest result.
    """
    newest: dict[str, Any] = {}
    complete = f" and tags.{store.COMPLETE_TAG} = 'true'"
    for run in store.children(client, parent, complete):  # newest first
        newest.setdefault(run.data.tags[store.JOB_TAG], run)
    if not newest:
        raise PipelineError(f"sweep {parent} has no complete runs yet; run or resume the sweep")
    rows = [_row(client, run) for run in newest.values()]
    return sorted(rows, key=lambda r: (r.epochs, r.batch_size, r.lr, r.seed or 0, r.overrides))


def _row(client: Any, run: Any) -> Row:
    def history(key: str) -> list[Any]:
        found = store.retry_locked(lambda: client.get_metric_history(run.info.run_id, key))
        return sorted(found, key=lambda m: (m.step, m.timestamp))

    def series(key: str) -> list[float]:
        return [m.value for m in history(key)]

    p, m = run.data.params, run.data.metrics
    val_acc, train_s, val_s = series("val_acc"), series("epoch_time_s"), series("val_time_s")
    elapsed = list(accumulate(t + v for t, v in zip(train_s, val_s, strict=True)))
    batch_size, targets = int(p["train.batch_size"]), _targets(run.info.run_id, p, m)
    seed = p.get("train.seed", "")
    return Row(
        batch_size=batch_size,
        epochs=int(p["train.epochs"]),
        lr=float(p["derived.lr"]),
        lr_scaling=_lr_scaling(p),
        iterations_per_epoch=int(p["derived.iterations_per_epoch"]),
        total_updates=int(p["derived.total_updates"]),
        s_per_epoch=statistics.median(train_s),
        samples_per_s=statistics.median(series("samples_per_s")),
        best_val_acc=max(val_acc),
        final_val_acc=val_acc[-1],
        test_acc=m["test_acc"],
        wall_s=m["train_wall_s"],
        run_id=run.info.run_id,
        overrides=run.data.tags[store.JOB_TAG],
        machine=_machine(run.data.tags, p),
        val_acc=val_acc,
        elapsed_s=elapsed,
        seed=int(seed) if seed.lstrip("-").isdigit() else None,
        train_acc=series("train_acc"),
        epoch_test_acc=series("epoch_test_acc"),
        noise=[(int(h.step), h.value) for h in history("noise_scale")],
        noise_terms=_noise_terms(history("noise_grad_sq"), history("noise_trace")),
        targets=targets,
        reached={t: r for t in targets if (r := _reach(m, t, batch_size))},
        stopped_epoch=int(m["stopped_epoch"]) if "stopped_epoch" in m else None,
        optimizer=p.get("optimizer.name", "adam"),
    )


def _noise_terms(grad_sq: list[Any], trace: list[Any]) -> list[tuple[int, float, float]]:
    """(step, |G|², tr(Σ)) where both were logged at the same update."""
    traces = {m.step: m.value for m in trace}
    return [(int(g.step), g.value, traces[g.step]) for g in grad_sq if g.step in traces]


def _lr_scaling(params: dict[str, str]) -> str:
    """optimizer.lr_scaling, or what runs from before it logged: a linear-rule switch."""
    if "optimizer.lr_scaling" in params:
        return params["optimizer.lr_scaling"]
    return "linear" if params.get("optimizer.scale_lr_with_batch") == "True" else "none"


TO_TARGET = "iterations_to_val_acc_"  # + f"{target:g}", logged once the target is reached


def _targets(run_id: str, params: dict[str, str], metrics: dict[str, float]) -> list[float]:
    """train.targets as the run logged it (`[0.98, 0.985]`), and any target it has metrics
    for; runs from before targets existed have neither."""
    text = params.get("train.targets", "[]")
    try:
        listed = {float(t) for t in text.strip().strip("[]").split(",") if t.strip()}
        logged = {float(k.removeprefix(TO_TARGET)) for k in metrics if k.startswith(TO_TARGET)}
    except ValueError:
        raise PipelineError(
            f"run {run_id}: train.targets is {text!r}, not a list of validation accuracies"
        ) from None
    return sorted(listed | logged)


def _reach(metrics: dict[str, float], target: float, batch_size: int) -> Reach | None:
    key = f"val_acc_{target:g}"
    if f"iterations_to_{key}" not in metrics:
        return None  # not reached
    epochs = metrics.get(f"epochs_to_{key}")
    return Reach(
        iterations=int(metrics[f"iterations_to_{key}"]),
        seconds=metrics.get(f"seconds_to_{key}", math.nan),
        epochs=epochs,
        batch_size=batch_size,
    )


def _machine(tags: dict[str, str], params: dict[str, str]) -> str:
    """Where a run ran, for the caption: the CPU's family/model beside its name, as one name
    covers models that compute other bits; runs logged before a tag existed say `?`."""
    threads = params.get("numerics.threads", "?")
    threads = plural(int(threads), "thread") if threads.isdigit() else f"{threads} threads"
    return (
        f"{tags.get(store.MACHINE_TAG, 'unknown machine')}, "
        f"CPU family/model {params.get('numerics.cpu_family_model', '?')}, "
        f"{params.get('numerics.mode', '?')} numerics ({threads}, "
        f"ATen {params.get('numerics.aten_capability', '?')})"
    )


def write_tables(found: analysis.Study, out: Path, caption: str) -> list[Path]:
    files = tables.write_csvs(found, out)
    (out / SUMMARY_MD).write_text(tables.markdown(found, caption))
    return [*files, out / SUMMARY_MD]


def write_page(found: analysis.Study, figures: list[Path], out: Path, caption: str) -> Path:
    """One HTML file with the tables and the figures inlined, to mail or attach as is."""
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
{tables.html_body(found)}{images}</body></html>
"""
    (out / PAGE).write_text(page)
    return out / PAGE


def build(client: Any, parent: str, out: Path) -> list[Path]:
    """Every report file for one sweep, written all together or not at all."""
    rows = collect(client, parent)
    tags = store.retry_locked(lambda: client.get_run(parent)).data.tags
    machines = " + ".join(sorted({r.machine for r in rows}))
    caption = f"sweep: {tags.get(store.OVERRIDES_TAG, parent)} · {machines}"
    found = analysis.analyze(rows)
    with replacing(out) as staging:
        tables = write_tables(found, staging, caption)
        figures = draw(found, staging, caption)
        write_page(found, figures, staging, caption)
    return [out / p.name for p in (*tables, *figures)] + [out / PAGE]


def is_sweep(client: Any, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        return store.SWEEP_TAG in client.get_run(run_id).data.tags
    except MlflowException:  # no such run
        return False


def latest_sweep(client: Any, experiment_name: str) -> str:
    experiment = client.get_experiment_by_name(experiment_name)
    query = f"tags.{store.SWEEP_TAG} != ''"
    runs = experiment and store.newest(client, experiment.experiment_id, query, limit=1)
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
    cfg = parse.load(args.params)
    uri = store.tracking_uri(cfg.logger)
    client = store.client(cfg.logger)
    parent = args.sweep or latest_sweep(client, cfg.logger.experiment_name)
    if not is_sweep(client, parent):
        raise PipelineError(f"--sweep {parent} is not a sweep's parent run in {uri}")
    files = build(client, parent, args.out)
    print(
        f"report: {plural(len(files), 'file')} in {args.out} for sweep {parent}; open {files[-1]}"
    )


if __name__ == "__main__":
    run_stage(main)
