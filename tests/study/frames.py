"""Runs as the study reads them (lenet_mnist.study.runs.collect's frame), built by hand."""

from __future__ import annotations

import pandas as pd

from lenet_mnist.study.runs import point_of, to, typed


def run(batch_size: int, seed: int, lr: float = 1e-3, reached: dict | None = None, **extra):
    """One run's record: `reached` maps a validation target to the updates that reached it."""
    job = f"train.batch_size={batch_size} optimizer.lr={lr} train.seed={seed}"
    record = dict(
        batch_size=batch_size, epochs=10, seed=seed, lr=lr, lr_scaling="none",
        iterations_per_epoch=100, total_updates=1000, s_per_epoch=1.0 + seed,
        samples_per_s=100.0, best_val_acc=0.99, final_val_acc=0.99, test_acc=0.99, wall_s=3.0,
        stopped_epoch=None, run_id=f"{batch_size}-{lr}-{seed}", optimizer="adam", job=job,
        point=point_of(job), machine="m", targets=sorted(reached or {}), val_acc=[],
        elapsed_s=[], train_acc=[], epoch_test_acc=[], noise=[], noise_terms=[],
    )  # fmt: skip
    for target, iterations in (reached or {}).items():
        if iterations is not None:
            record |= {to("iterations", target): iterations,
                       to("examples", target): iterations * batch_size}  # fmt: skip
    return record | extra


def runs(*records: dict) -> pd.DataFrame:
    return typed(pd.DataFrame(list(records)))
