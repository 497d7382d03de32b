"""A sweep's runs as the study reads them: one Row per complete child run, and when it
reached each target. The types every other module of the study imports, below them all."""

from __future__ import annotations

from dataclasses import dataclass, field

SEED = "train.seed="


def point_of(job: str) -> str:
    """A run's grid point: its job's overrides without the seed, which only replicates it."""
    return " ".join(o for o in job.split() if not o.startswith(SEED))


def plural(count: int, word: str) -> str:
    """`1 epoch`, `2 epochs`: counts in the report read as written English."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


@dataclass
class Row:
    """One sweep point. Seconds per epoch and samples/s are medians over the epochs,
    so the first epoch's compilation does not count; the wall time includes it."""

    batch_size: int
    epochs: int
    lr: float
    lr_scaling: str  # optimizer.lr_scaling: none, linear or sqrt
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
    seed: int | None = None
    train_acc: list[float] = field(default_factory=list, repr=False)  # per epoch
    epoch_test_acc: list[float] = field(default_factory=list, repr=False)  # per epoch, if logged
    noise: list[tuple[int, float]] = field(default_factory=list, repr=False)  # (step, B_simple)
    # (step, |G|², tr(Σ)) at each epoch's end: the terms B_simple is the ratio of
    noise_terms: list[tuple[int, float, float]] = field(default_factory=list, repr=False)
    targets: list[float] = field(default_factory=list, repr=False)  # train.targets
    reached: dict[float, Reach] = field(default_factory=dict, repr=False)  # target -> when
    stopped_epoch: int | None = None  # where early stopping ended the fit, if it did
    optimizer: str = "adam"  # optimizer.name

    @property
    def point(self) -> str:
        """The grid point this run replicates: its overrides without the seed."""
        return point_of(self.overrides)


@dataclass(frozen=True)
class Reach:
    """When a run's validation accuracy first reached a target."""

    iterations: int  # optimizer updates at the first validation that reached it
    seconds: float  # training seconds by then
    epochs: float | None  # the first epoch whose end reached it (None: only between epochs)
    batch_size: int

    @property
    def examples(self) -> int:
        return self.iterations * self.batch_size
