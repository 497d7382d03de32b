"""The config schema: a dataclass per group of conf/, each key declared once, as a pydantic
Field that validation, error lines, the config hash and docs/configuration.md all read.
Plain dataclasses, so code builds a group without validating it; every key is required.
The choices mirror tables beside the code (below torch) that a test holds to them."""

from __future__ import annotations

from dataclasses import dataclass, is_dataclass
from functools import reduce
from operator import getitem
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml
from pydantic import AfterValidator, AllowInfNan, ConfigDict, Field, Strict
from pydantic.fields import FieldInfo

MNIST_TRAIN_SIZE = 60_000
MNIST_TEST_SIZE = 10_000
MAX_SEED = 2**32 - 1  # what Lightning's seed_everything takes
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")  # Lightning's names
PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed")
# Lightning's names, only those whose launcher runs this script on every rank: a spawned
# or forked worker's epoch history would not come back to the one that writes.
STRATEGIES = ("auto", "ddp")
OBJECTIVES = ("test_acc", "time_to_target")  # what lenet_mnist.sweeps.job.objective computes
MODELS = ("lenet5",)
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine", "onecycle")
LR_SCALING = ("none", "linear", "sqrt")
NUMERICS = ("portable", "machine", "none")
SOURCES = ("http", "local", "registry")

# Values keep the type YAML gave them: true is no count, 2.0 no seed and "0.1" no rate; an
# integer is a number, and a number where a string goes is that string.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict(), AllowInfNan(False)]


def _rising(values: list[float]) -> list[float]:
    if values != sorted(set(values)):
        raise ValueError("not increasing")
    return values


def key(what: str, allowed: str | None = None, *, decides: bool = True, **rules: Any) -> Any:
    """A key's rules and description; `allowed` words a rule that its bounds cannot say.
    `decides=False`: the key (or group) does not change what a run learns (config.identity)."""
    return Field(
        description=what, json_schema_extra={"allowed": allowed, "decides": decides}, **rules
    )


ACC = {"gt": 0, "le": 1}  # an accuracy
# Where data and results go, how progress is shown, and what is measured beside training
# (lenet_mnist.training.probes, with samples of their own): never what is learned.
BESIDE = {"decides": False}


class Group:
    """Unknown keys are refused."""

    __pydantic_config__ = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


@dataclass
class DataConfig(Group):
    sources: list[Literal[SOURCES]] = key("the IDX files' sources, tried in order", min_length=1)
    mirrors: list[Annotated[str, Field(pattern=r"^https?://.*/$")]] = key(
        "the mirrors that `http` tries, in order", "a list of http(s) URLs ending in /"
    )
    source_dir: str | None = key("a folder of the IDX files, plain or .gz (for `local`)")
    timeout_s: Float = key("seconds per HTTP request", gt=0)
    val_size: Int = key(
        "training images held out for validation, chosen by `split_seed`",
        f"an integer >= 1, fewer than train_limit (or {MNIST_TRAIN_SIZE})",
        ge=1,
    )
    split_seed: Int = key("the seed of the validation split", ge=0, le=MAX_SEED)
    train_limit: Int | None = key("use the first N training images only", ge=2, le=MNIST_TRAIN_SIZE)
    test_limit: Int | None = key("use the first N test images only", ge=1, le=MNIST_TEST_SIZE)


@dataclass
class ModelConfig(Group):
    name: Literal[MODELS] = key("the network (`MODELS` in lenet_mnist.model.networks)")


@dataclass
class OptimizerConfig(Group):
    name: Literal[OPTIMIZERS] = key("the optimizer (`OPTIMIZERS` in training.optimizer)")
    lr: Float = key("the learning rate (the peak rate under `onecycle`)", gt=0)
    weight_decay: Float = key("the optimizer's weight decay", ge=0)
    scheduler: Literal[SCHEDULERS] = key("cosine anneals lr to 0; onecycle warms up, then anneals")
    fused: bool = key("one fused kernel per parameter update (a speed option)")
    lr_scaling: Literal[LR_SCALING] = key(
        "the rate is lr × (train.batch_size / lr_batch_size)^p: none p=0, linear 1, sqrt ½"
    )
    lr_batch_size: Int = key("the batch size that `lr` is the rate for", ge=1)
    momentum: Float = key("SGD's momentum (Adam's moments are its betas)", ge=0, lt=1)


@dataclass
class EarlyStoppingConfig(Group):
    patience: Int | None = key("stop after this many epochs without a better val accuracy", ge=1)
    stop_at: Float | None = key("stop once val accuracy is above this at an epoch's end", **ACC)
    give_up_below: Float | None = key("stop once val accuracy is below this (diverged)", **ACC)


@dataclass
class NoiseProbeConfig(Group):
    batches: Annotated[int, Strict(), Field(ge=2)] | Literal[0] = key(
        "disjoint batches the gradient noise scale is measured on",
        "0 (no probe) or an integer >= 2",
    )
    batch_size: Int = key("images per batch of the noise probe", ge=1)


@dataclass
class TrainConfig(Group):
    batch_size: Int = key("images per batch; each batch is one iteration (one update)", ge=1)
    epochs: Int = key("passes over the training split", ge=1)
    seed: Int = key("the network's initialization and the batch order", ge=0, le=MAX_SEED)
    drop_last: bool = key("true drops the last partial batch of each epoch")
    keep_best: bool = key("keep the weights of the epoch with the best validation accuracy")
    checkpoint_every: Int = key("epochs between resumable checkpoints (0: none)", ge=0, **BESIDE)
    early_stopping: EarlyStoppingConfig = key("stopping on validation accuracy")
    val_every_n_steps: Int | None = key(
        "val accuracy every N updates too, to time targets", ge=1, **BESIDE
    )
    targets: Annotated[list[Annotated[Float, Field(**ACC)]], AfterValidator(_rising)] = key(
        "val accuracies whose first epoch, update and second go to MLflow",
        "increasing accuracies in (0, 1], such as [0.98, 0.99]",
        **BESIDE,
    )
    test_every_epoch: bool = key("test accuracy at each epoch's end, for plots", **BESIDE)
    noise_probe: NoiseProbeConfig = key("the gradient noise scale at each epoch's end", **BESIDE)


@dataclass
class TrainerConfig(Group):
    accelerator: Literal[ACCELERATORS] = key("where to train; auto: the GPU when there is one")
    devices: Int = key("processes per machine; more than 1 trains data-parallel", ge=1)
    strategy: Literal[STRATEGIES] = key("ddp: a process per device; auto: ddp if devices > 1")
    num_nodes: Int = key("machines in a multi-node run; each one runs the command", ge=1)
    precision: Literal[PRECISIONS] = key("Lightning's numeric precision")
    reproducible: Literal[NUMERICS] = key(
        "portable: the same bits on any x86-64 CPU with AVX2; machine: on this one (determinism.md)"
    )
    enable_progress_bar: bool = key("the live bar on a terminal (logs: epoch lines)", **BESIDE)
    compile: bool = key("torch.compile the network (a speed option, docs/benchmarks.md)")
    threads: Int | None = key("intra-op threads; null: the mode's (portable: 1)", ge=1)
    batch_group: Int = key("optimizer updates per Lightning training_step (speed)", ge=1)


@dataclass
class LoggerConfig(Group):
    experiment_name: str = key("the MLflow experiment", min_length=1)
    tracking_uri: str = key("the MLflow store; MLFLOW_TRACKING_URI wins over it", min_length=1)
    timeout_s: Float = key("seconds a server may take to answer, or a store to be free", gt=0)
    registered_model: str | None = key(
        "the registered model publish adds versions to", "null or a non-empty string", pattern=r"\S"
    )


@dataclass
class PathsConfig(Group):
    """Any path: the run's folder is checked where Hydra is about to make it
    (lenet_mnist.sweeps.folders), since hydra.run.dir may put it elsewhere."""

    prepared: str = key("the prepared data that `python -m lenet_mnist.run` reads")
    runs: str = key("one folder per single run of `python -m lenet_mnist.run`")
    sweeps: str = key("one folder per sweep: a folder per job, and the report")


@dataclass
class ObjectiveConfig(Group):
    metric: Literal[OBJECTIVES] = key("what a sweep job returns to an optimizing sweeper")
    target: Float = key("the test accuracy that `time_to_target` asks for", **ACC)


@dataclass
class Config(Group):
    # The data decide a result through the prepared data's digest, not their keys.
    data: DataConfig = key("where MNIST comes from and how it is split", **BESIDE)
    model: ModelConfig = key("the network")
    optimizer: OptimizerConfig = key("the update rule and its schedule")
    train: TrainConfig = key("what is learned, and what is measured beside it")
    trainer: TrainerConfig = key("where and how it runs: device, precision, numerics")
    logger: LoggerConfig = key("the MLflow tracking store and experiment", **BESIDE)
    paths: PathsConfig = key("where `python -m lenet_mnist.run` reads and writes", **BESIDE)
    objective: ObjectiveConfig = key("what a sweep job returns to a sweeper", **BESIDE)
    force: bool = key("sweeps rerun configurations that already finished", **BESIDE)


def entries(schema: type = Config, prefix: str = "") -> dict[str, FieldInfo]:
    """Every group and key of the schema, spelt as a Hydra override, with its Field."""
    out: dict[str, FieldInfo] = {}
    for name, hint in get_type_hints(schema, include_extras=True).items():
        default = schema.__dataclass_fields__[name].default
        out[prefix + name] = FieldInfo.from_annotated_attribute(hint, default)
        if is_dataclass(hint):
            out |= entries(hint, f"{prefix}{name}.")
    return out


ENTRIES = entries()


def keys() -> dict[str, FieldInfo]:
    """Every key that holds a value (no group), spelt `group.key`."""
    return {k: f for k, f in ENTRIES.items() if not is_dataclass(f.annotation)}


NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
ITEMS = {int: "integers", float: "numbers", str: "strings"}
BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def kind(hint: Any) -> str:
    """A type as a user reads it: `an integer`, `null or a number`, `one of a, b`."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Annotated:
        return kind(args[0])
    if origin in (Union, UnionType):
        return " or ".join("null" if a is type(None) else kind(a) for a in args[::-1])
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin is list:
        item = get_args(args[0])[0] if get_origin(args[0]) is Annotated else args[0]
        return "a list of " + (kind(item)[7:] if get_origin(item) is Literal else ITEMS[item])
    if is_dataclass(hint):
        return "a mapping of " + ", ".join(hint.__dataclass_fields__)
    return NAMES[hint]


def allowed(info: FieldInfo) -> str:
    """What a key allows, in words: its `allowed`, or its type with its bounds."""
    if said := info.json_schema_extra["allowed"]:
        return str(said)
    text, rules = kind(info.annotation), info.metadata
    bounds = [
        f"{sign} {getattr(r, name)}" for r in rules for name, sign in BOUNDS if hasattr(r, name)
    ]
    if any(getattr(r, "min_length", 0) == 1 for r in rules):
        text = text.replace("a ", "a non-empty ", 1)
    if text == "a number" and not any(hasattr(r, "lt") or hasattr(r, "le") for r in rules):
        text = "a finite number"  # Float refuses inf and nan
    return " ".join([text, " and ".join(bounds)]) if bounds else text


def lookup(tree: Any, key: str) -> Any:
    """The value at `group.key` in nested mappings."""
    return reduce(getitem, key.split("."), tree)


def show(value: Any) -> str:
    """A value as the user typed it in YAML: null, [a, b], 0.5; one line, whatever it is."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6)
    text = text.strip().removesuffix("...").strip()
    return text if "\n" not in text else repr(value)
