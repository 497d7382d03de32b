"""A sweep's complete runs as one DataFrame, a row per run, that the rest of the study reads:
RUN_COLUMNS, `{REACH}_to_{target:g}` per validation target (NA: not reached) and per-epoch
lists; and the t-interval over seeds that both studies report."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import pandas as pd
from scipy import stats

from lenet_mnist.errors import PipelineError
from lenet_mnist.tracking import store

SEED = "train.seed="
BATCH = "train.batch_size="
LEVEL = 0.95  # of every interval both studies report
RUN_COLUMNS = [
    "batch_size", "epochs", "seed", "lr", "lr_scaling", "iterations_per_epoch",
    "total_updates", "s_per_epoch", "samples_per_s", "best_val_acc", "final_val_acc",
    "test_acc", "wall_s", "stopped_epoch", "run_id",
]  # fmt: skip
REACH = ("iterations", "examples", "epochs", "seconds")  # `{k}_to_{target:g}` columns
TO_TARGET = "iterations_to_val_acc_"  # + f"{target:g}": a run's metric once it reached it


def plural(count: int, word: str) -> str:
    """`1 epoch`, `2 epochs`: counts in the report read as written English."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def to(kind: str, target: float) -> str:
    """The column of a run's `kind` (REACH) at its first validation at or above `target`."""
    return f"{kind}_to_{target:g}"


def point_of(job: str) -> str:
    """A run's grid point: its job's overrides without the seed, which only replicates it."""
    return " ".join(o for o in job.split() if not o.startswith(SEED))


@dataclass(frozen=True)
class Interval:
    """A mean and its 95% confidence interval; low and high are NaN for a lone value."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def defined(self) -> bool:
        return self.n >= 2

    @property
    def half(self) -> float:
        return (self.high - self.low) / 2

    def text(self, fmt: str, scale: float = 1) -> str:
        """`0.9912 ± 0.0008`, `0.9912 (1 seed)` without an interval, `—` without a value;
        `scale` multiplies the values first (100: in percent)."""
        mean, low, high = (scale * v for v in (self.mean, self.low, self.high))
        if math.isnan(mean):
            return "—"
        spread = f"± {fmt.format((high - low) / 2)}" if self.defined else "(1 seed)"
        return f"{fmt.format(mean)} {spread}"


def interval(values: Iterable[float]) -> Interval:
    """Mean ± t(n−1) · s/√n (the seeds are few: the normal's 1.96 would be too narrow) over
    the values that are not NA; none gives a NaN mean with n = 0."""
    values = [float(v) for v in values if not pd.isna(v)]
    n = len(values)
    if n < 2:
        return Interval(values[0] if values else math.nan, math.nan, math.nan, n)
    mean = statistics.fmean(values)
    half = float(stats.t.ppf((1 + LEVEL) / 2, n - 1)) * statistics.stdev(values) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def collect(client: Any, parent: str) -> pd.DataFrame:
    """The sweep's points, each from the newest complete run of its job's overrides (a point
    rerun, forced or after its config changed, appears once, with its latest result)."""
    newest: dict[str, Any] = {}
    complete = f" and tags.{store.COMPLETE_TAG} = 'true'"
    for run in store.children(client, parent, complete):  # newest first
        newest.setdefault(run.data.tags[store.JOB_TAG], run)
    if not newest:
        raise PipelineError(f"sweep {parent} has no complete runs yet; run or resume the sweep")
    frame = typed(pd.DataFrame([_record(client, run) for run in newest.values()]))
    order = frame.assign(seed_=frame["seed"].fillna(0))
    order = order.sort_values(["epochs", "batch_size", "lr", "seed_", "job"], kind="stable")
    return frame.loc[order.index].reset_index(drop=True)


def typed(frame: pd.DataFrame) -> pd.DataFrame:
    """A REACH column for every target any run logged, last, and the counts that may be
    missing as nullable integers (a CSV then reads `2400`, not `2400.0`)."""
    targets = targets_of(frame)
    reach = [to(k, t) for t in targets for k in REACH]
    frame = frame.reindex(columns=[*frame.columns.drop(reach, errors="ignore"), *reach])
    ints = ["seed", "stopped_epoch", *(to(k, t) for t in targets for k in REACH[:2])]
    return frame.astype(dict.fromkeys(ints, "Int64"))


def targets_of(runs: pd.DataFrame) -> list[float]:
    return sorted({t for ts in runs["targets"] for t in ts})


def _record(client: Any, run: Any) -> dict[str, Any]:
    def history(key: str) -> list[Any]:
        found = client.get_metric_history(run.info.run_id, key)
        return sorted(found, key=lambda m: (m.step, m.timestamp))

    def series(key: str) -> list[float]:
        return [m.value for m in history(key)]

    p, m, tags = run.data.params, run.data.metrics, run.data.tags
    val_acc, train_s, val_s = series("val_acc"), series("epoch_time_s"), series("val_time_s")
    batch_size, targets = int(p["train.batch_size"]), _targets(p, m)
    seed = p.get("train.seed", "")
    traces = {h.step: h.value for h in history("noise_trace")}
    record = {
        "batch_size": batch_size,
        "epochs": int(p["train.epochs"]),
        "seed": int(seed) if seed.lstrip("-").isdigit() else None,
        "lr": float(p["derived.lr"]),
        "lr_scaling": _lr_scaling(p),
        "iterations_per_epoch": int(p["derived.iterations_per_epoch"]),
        "total_updates": int(p["derived.total_updates"]),
        # medians over the epochs, so the first epoch's compilation does not count
        "s_per_epoch": statistics.median(train_s),
        "samples_per_s": statistics.median(series("samples_per_s")),
        "best_val_acc": max(val_acc),
        "final_val_acc": val_acc[-1],
        "test_acc": m["test_acc"],
        "wall_s": m["train_wall_s"],
        "stopped_epoch": int(m["stopped_epoch"]) if "stopped_epoch" in m else None,
        "run_id": run.info.run_id,
        "optimizer": p.get("optimizer.name", "adam"),
        "job": tags[store.JOB_TAG],
        "point": point_of(tags[store.JOB_TAG]),
        "machine": _machine(tags, p),
        "targets": targets,
        "val_acc": val_acc,
        "elapsed_s": list(accumulate(t + v for t, v in zip(train_s, val_s, strict=True))),
        "train_acc": series("train_acc"),
        "epoch_test_acc": series("epoch_test_acc"),
        "noise": [(int(h.step), h.value) for h in history("noise_scale")],
        # (step, |G|², tr(Σ)) where both were logged at the same update
        "noise_terms": [
            (int(g.step), g.value, traces[g.step])
            for g in history("noise_grad_sq")
            if g.step in traces
        ],
    }
    for t in targets:
        key = f"val_acc_{t:g}"
        if f"iterations_to_{key}" in m:
            iterations = int(m[f"iterations_to_{key}"])
            record |= {
                to("iterations", t): iterations,
                to("examples", t): iterations * batch_size,
                to("epochs", t): m.get(f"epochs_to_{key}"),
                to("seconds", t): m.get(f"seconds_to_{key}", math.nan),
            }
    return record


def _lr_scaling(params: dict[str, str]) -> str:
    """optimizer.lr_scaling, or what runs from before it logged: a linear-rule switch."""
    if "optimizer.lr_scaling" in params:
        return params["optimizer.lr_scaling"]
    return "linear" if params.get("optimizer.scale_lr_with_batch") == "True" else "none"


def _targets(params: dict[str, str], metrics: dict[str, float]) -> list[float]:
    """train.targets as logged (`[0.98, 0.985]`) and any target the run has metrics for."""
    logged = {float(k.removeprefix(TO_TARGET)) for k in metrics if k.startswith(TO_TARGET)}
    return sorted(logged | set(map(float, json.loads(params.get("train.targets", "[]")))))


def _machine(tags: dict[str, str], params: dict[str, str]) -> str:
    """Where a run ran: the CPU's family/model beside its name, as one name covers models
    that compute other bits; `?` for what runs logged before a tag existed lack."""
    threads = params.get("numerics.threads", "?")
    threads = plural(int(threads), "thread") if threads.isdigit() else f"{threads} threads"
    return (
        f"{tags.get(store.MACHINE_TAG, 'unknown machine')}, "
        f"CPU family/model {params.get('numerics.cpu_family_model', '?')}, "
        f"{params.get('numerics.mode', '?')} numerics ({threads}, "
        f"ATen {params.get('numerics.aten_capability', '?')})"
    )
