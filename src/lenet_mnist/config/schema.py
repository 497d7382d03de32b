"""The config schema: one dataclass per group of conf/, with the rules for its values.

Types and keys are checked by OmegaConf when values merge onto these dataclasses
(lenet_mnist.config.parse; Hydra composes onto their keys alone, config.hydra_schema);
`check` adds ranges and choices.
The choices are the keys of the tables that use them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, ClassVar, get_type_hints

import yaml
from omegaconf import MISSING, Node, OmegaConf

from lenet_mnist.errors import PipelineError

SCHEMA = "schema"  # the name conf/config.yaml's defaults list gives the root dataclass
MNIST_TRAIN_SIZE = 60_000
MNIST_TEST_SIZE = 10_000
MAX_SEED = 2**32 - 1  # what Lightning's seed_everything takes
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")  # Lightning's names
PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed")
# Lightning's names, only those whose launcher runs this script on every rank: a spawned
# or forked worker's epoch history would not come back to the one that writes.
STRATEGIES = ("auto", "ddp")
OBJECTIVES = ("test_acc", "time_to_target")  # what lenet_mnist.sweeps.job.objective computes
# The choices of the keys that name a table entry. Each table (the networks, optimizers,
# schedules, numeric modes and download sources) lives beside the code that uses it, below
# torch; tests/config/test_schema.py checks that every table has exactly these keys.
MODELS = ("lenet5",)
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine", "onecycle")
LR_SCALING = ("none", "linear", "sqrt")
NUMERICS = ("portable", "machine", "none")
SOURCES = ("http", "local", "registry")


def _require(node: object, key: str, ok: bool, allowed: str) -> None:
    """Refuse a value outside what its key allows, naming both."""
    if not ok:
        value = show(getattr(node, key))
        raise PipelineError(f"{node.GROUP}.{key}={value} is not allowed; use {allowed}")  # type: ignore[attr-defined]


def _at_least(node: object, low: int, *keys: str) -> None:
    for key in keys:
        _require(node, key, getattr(node, key) >= low, f"an integer >= {low}")


def _one_of(node: object, key: str, table: tuple[str, ...]) -> None:
    _require(node, key, getattr(node, key) in table, "one of " + ", ".join(table))


def _between(node: object, key: str, low: int, high: int, optional: bool = False) -> None:
    value = getattr(node, key)
    ok = (optional and value is None) or (value is not None and low <= value <= high)
    allowed = f"an integer >= {low} and <= {high}"
    _require(node, key, ok, f"null or {allowed}" if optional else allowed)


@dataclass
class DataConfig:
    GROUP: ClassVar[str] = "data"
    sources: list[str] = MISSING
    mirrors: list[str] = MISSING
    source_dir: str | None = MISSING
    timeout_s: float = MISSING
    val_size: int = MISSING
    split_seed: int = MISSING
    train_limit: int | None = MISSING
    test_limit: int | None = MISSING

    def check(self) -> None:
        names = ", ".join(SOURCES)
        ok = len(self.sources) > 0 and all(s in SOURCES for s in self.sources)
        _require(self, "sources", ok, f"a non-empty list of {names}")
        urls = all(
            isinstance(m, str) and m.startswith(("http://", "https://")) and m.endswith("/")
            for m in self.mirrors
        )  # OmegaConf lets a nested list through as an item of list[str]
        _require(self, "mirrors", urls, "a list of http(s) URLs ending in /")
        _require(self, "timeout_s", 0 < self.timeout_s < math.inf, "a finite number > 0")
        _between(self, "split_seed", 0, MAX_SEED)
        _between(self, "train_limit", 2, MNIST_TRAIN_SIZE, optional=True)
        _between(self, "test_limit", 1, MNIST_TEST_SIZE, optional=True)
        train_size = self.train_limit or MNIST_TRAIN_SIZE
        allowed = f"an integer >= 1 and smaller than the training set ({train_size} images)"
        _require(self, "val_size", 1 <= self.val_size < train_size, allowed)


@dataclass
class ModelConfig:
    GROUP: ClassVar[str] = "model"
    name: str = MISSING

    def check(self) -> None:
        _one_of(self, "name", MODELS)


@dataclass
class OptimizerConfig:
    GROUP: ClassVar[str] = "optimizer"
    name: str = MISSING
    lr: float = MISSING
    weight_decay: float = MISSING
    scheduler: str = MISSING
    fused: bool = MISSING
    lr_scaling: str = MISSING
    lr_batch_size: int = MISSING
    momentum: float = MISSING

    def check(self) -> None:
        _one_of(self, "name", OPTIMIZERS)
        _require(self, "lr", 0 < self.lr < math.inf, "a finite number > 0")
        _require(self, "weight_decay", 0 <= self.weight_decay < math.inf, "a number >= 0")
        _one_of(self, "scheduler", SCHEDULERS)
        _one_of(self, "lr_scaling", LR_SCALING)
        _at_least(self, 1, "lr_batch_size")
        _require(self, "momentum", 0 <= self.momentum < 1, "a number >= 0 and < 1")


@dataclass
class EarlyStoppingConfig:
    GROUP: ClassVar[str] = "train.early_stopping"
    patience: int | None = MISSING  # null: train every epoch
    stop_at: float | None = MISSING  # null: never stop for a high validation accuracy
    give_up_below: float | None = MISSING  # null: never stop for a low one

    def check(self) -> None:
        ok = self.patience is None or self.patience >= 1
        _require(self, "patience", ok, "null or an integer >= 1")
        for key in ("stop_at", "give_up_below"):
            value = getattr(self, key)
            _require(self, key, value is None or 0 < value <= 1, "null or an accuracy in (0, 1]")


@dataclass
class NoiseProbeConfig:
    GROUP: ClassVar[str] = "train.noise_probe"
    batches: int = MISSING  # 0: no probe
    batch_size: int = MISSING

    def check(self) -> None:
        ok = self.batches == 0 or self.batches >= 2
        _require(self, "batches", ok, "0 (no probe) or an integer >= 2")
        _at_least(self, 1, "batch_size")


@dataclass
class TrainConfig:
    GROUP: ClassVar[str] = "train"
    batch_size: int = MISSING
    epochs: int = MISSING
    seed: int = MISSING
    drop_last: bool = MISSING
    keep_best: bool = MISSING
    checkpoint_every: int = MISSING
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    val_every_n_steps: int | None = MISSING
    targets: list[float] = MISSING
    test_every_epoch: bool = MISSING
    noise_probe: NoiseProbeConfig = field(default_factory=NoiseProbeConfig)

    def check(self) -> None:
        _at_least(self, 1, "batch_size", "epochs")
        _at_least(self, 0, "checkpoint_every")
        _between(self, "seed", 0, MAX_SEED)
        ok = self.val_every_n_steps is None or self.val_every_n_steps >= 1
        _require(self, "val_every_n_steps", ok, "null or an integer >= 1")
        ok = all(0 < t <= 1 for t in self.targets) and self.targets == sorted(set(self.targets))
        _require(self, "targets", ok, "increasing accuracies in (0, 1], such as [0.98, 0.99]")
        self.early_stopping.check()
        self.noise_probe.check()


@dataclass
class TrainerConfig:
    GROUP: ClassVar[str] = "trainer"
    accelerator: str = MISSING
    devices: int = MISSING
    strategy: str = MISSING
    num_nodes: int = MISSING
    precision: str = MISSING
    reproducible: str = MISSING
    enable_progress_bar: bool = MISSING
    compile: bool = MISSING
    threads: int | None = MISSING
    batch_group: int = MISSING

    def check(self) -> None:
        _one_of(self, "accelerator", ACCELERATORS)
        _one_of(self, "strategy", STRATEGIES)
        _one_of(self, "precision", PRECISIONS)
        _one_of(self, "reproducible", NUMERICS)
        _at_least(self, 1, "devices", "num_nodes", "batch_group")
        ok = self.threads is None or self.threads >= 1
        _require(self, "threads", ok, "null or an integer >= 1")


@dataclass
class LoggerConfig:
    GROUP: ClassVar[str] = "logger"
    experiment_name: str = MISSING
    tracking_uri: str = MISSING
    timeout_s: float = MISSING
    registered_model: str | None = MISSING  # publish registers its model under this name

    def check(self) -> None:
        _require(self, "experiment_name", self.experiment_name != "", "a non-empty string")
        ok = self.registered_model is None or self.registered_model.strip() != ""
        _require(self, "registered_model", ok, "null or a non-empty string")
        _require(self, "tracking_uri", self.tracking_uri != "", "a non-empty URI")
        _require(self, "timeout_s", 0 < self.timeout_s < math.inf, "a finite number > 0")


@dataclass
class PathsConfig:
    GROUP: ClassVar[str] = "paths"
    prepared: str = MISSING
    runs: str = MISSING
    sweeps: str = MISSING

    def check(self) -> None:
        """Any path is allowed here: the code that reads one says when it holds nothing, and
        the run's folder (under `runs` or `sweeps`) is checked where Hydra is about to make
        it, by lenet_mnist.sweeps.sweep.writable, since hydra.run.dir may put it elsewhere."""


@dataclass
class ObjectiveConfig:
    """What a sweep job returns to an optimizing sweeper; no run learns anything else by it."""

    GROUP: ClassVar[str] = "objective"
    metric: str = MISSING
    target: float = MISSING  # the test accuracy that time_to_target asks for

    def check(self) -> None:
        _one_of(self, "metric", OBJECTIVES)
        _require(self, "target", 0 < self.target <= 1, "a number > 0 and <= 1")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    force: bool = MISSING

    def check(self) -> None:
        """Ranges and choices, group by group; types were checked when the values merged."""
        for group in fields(self):
            if is_dataclass(node := getattr(self, group.name)):
                node.check()


def keys(schema: type = Config, prefix: str = "") -> dict[str, Any]:
    """Every key of the schema, spelt as a Hydra override (`group.key`), with its type."""
    out: dict[str, Any] = {}
    for name, hint in get_type_hints(schema).items():
        if name == "GROUP":
            continue
        if is_dataclass(hint):
            out |= keys(hint, f"{prefix}{name}.")
        else:
            out[f"{prefix}{name}"] = hint
    return out


def show(value: Any) -> str:
    """A value as the user typed it in YAML: null, [a, b], 0.5."""
    if isinstance(value, Node):  # OmegaConf hands some values over still wrapped
        value = value._value()
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    try:
        text = yaml.safe_dump(value, default_flow_style=True, width=10**6)
    except yaml.YAMLError:
        return str(value)
    text = text.strip().removesuffix("...").strip()
    return text if "\n" not in text else repr(value)  # the error stays one line
