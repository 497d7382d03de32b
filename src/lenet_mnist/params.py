"""params.yaml: what every stage reads, checked before any work starts.

conf/ (Hydra) is the source of truth and params.yaml is its composition, which DVC
tracks. Stages read params.yaml, never conf/, so that `dvc repro` runs exactly what
params.yaml says (the pitfall of DVC issue #10186).

`python -m lenet_mnist.params --write [overrides...]` recomposes params.yaml from conf/.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from lenet_mnist.stage import PipelineError, run_stage

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
MNIST_TRAIN_SIZE = 60_000
MNIST_TEST_SIZE = 10_000

MODELS = ("lenet5",)
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine", "onecycle")
SOURCES = ("http", "local", "registry")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed")


def _int(lo: int, hi: int | None = None) -> tuple[Callable[[Any], bool], str]:
    def ok(v: Any) -> bool:
        return type(v) is int and v >= lo and (hi is None or v <= hi)

    return ok, f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else "")


def _optional(rule: tuple[Callable[[Any], bool], str]) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v is None or rule[0](v)), f"null or {rule[1]}"


def _one_of(choices: tuple[str, ...]) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in choices), "one of " + ", ".join(choices)


def _positive(v: Any) -> bool:
    return type(v) in (int, float) and v > 0


def _list_of(choices: tuple[str, ...] | None) -> Callable[[Any], bool]:
    return lambda v: (
        isinstance(v, list)
        and len(v) > 0
        and all(isinstance(s, str) and (choices is None or s in choices) for s in v)
    )


_BOOL = ((lambda v: isinstance(v, bool)), "true or false")

# key -> (predicate, what is allowed). Keys not listed are passed through unchecked.
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "data.sources": (_list_of(SOURCES), "a non-empty list of " + ", ".join(SOURCES)),
    "data.mirrors": ((lambda v: isinstance(v, list)), "a list of URLs ending in /"),
    "data.source_dir": ((lambda v: v is None or isinstance(v, str)), "null or a folder path"),
    "data.timeout_s": (_positive, "a number > 0"),
    "data.train_limit": _optional(_int(2, MNIST_TRAIN_SIZE)),
    "data.test_limit": _optional(_int(1, MNIST_TEST_SIZE)),
    "data.split_seed": _int(0),
    "model.name": _one_of(MODELS),
    "optimizer.name": _one_of(OPTIMIZERS),
    "optimizer.lr": (_positive, "a number > 0"),
    "optimizer.weight_decay": ((lambda v: type(v) in (int, float) and v >= 0), "a number >= 0"),
    "optimizer.scheduler": _one_of(SCHEDULERS),
    "optimizer.fused": _BOOL,
    "optimizer.scale_lr_with_batch": _BOOL,
    "optimizer.lr_batch_size": _int(1),
    "train.batch_size": _int(1),
    "train.epochs": _int(1),
    "train.seed": _int(0),
    "train.drop_last": _BOOL,
    "train.keep_best": _BOOL,
    "trainer.accelerator": _one_of(ACCELERATORS),
    "trainer.devices": _int(1),
    "trainer.precision": _one_of(PRECISIONS),
    "trainer.deterministic": _BOOL,
    "trainer.enable_progress_bar": _BOOL,
    "trainer.compile": _BOOL,
    "trainer.threads": _optional(_int(1)),
    "trainer.batch_group": _int(1),
    "logger.experiment_name": ((lambda v: isinstance(v, str) and v != ""), "a non-empty string"),
    "logger.tracking_uri": ((lambda v: isinstance(v, str) and v != ""), "a non-empty URI"),
    "force": _BOOL,
}


def validate(cfg: DictConfig) -> DictConfig:
    """Fail on the first bad key with a line that names the key, the value and what is allowed."""
    for key, (ok, allowed) in RULES.items():
        value = OmegaConf.select(cfg, key, default="<missing>")
        if isinstance(value, DictConfig) or not ok(_plain(value)):
            raise PipelineError(f"{key}={_show(value)} is not allowed; use {allowed}")
    train_size = cfg.data.train_limit or MNIST_TRAIN_SIZE
    val_size = cfg.data.val_size
    if type(val_size) is not int or not 1 <= val_size < train_size:
        raise PipelineError(
            f"data.val_size={_show(val_size)} is not allowed; use an integer >= 1 and smaller "
            f"than the training set ({train_size} images)"
        )
    return cfg


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def _show(value: Any) -> str:
    text = yaml.safe_dump(_plain(value), default_flow_style=True, width=10**6)
    return text.strip().removesuffix("...").strip()


def load(path: str | Path = "params.yaml") -> DictConfig:
    """Read and validate params.yaml; a missing or unparsable file is a user error too."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path} not found; run from the repository root or pass --params")
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # omegaconf/yaml raise many types for a broken file
        raise PipelineError(f"{path} is not valid YAML: {err}".splitlines()[0]) from err
    return validate(cfg)


def compose(overrides: list[str] | None = None) -> dict[str, Any]:
    """Compose conf/ the way `dvc exp run` does, so the two can be compared."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=overrides or [])
    return OmegaConf.to_container(cfg, resolve=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite params.yaml from conf/")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. train.epochs=3")
    args = parser.parse_args()
    composed = compose(args.overrides)
    validate(OmegaConf.create(composed))
    text = yaml.safe_dump(composed, sort_keys=False)
    if args.write:
        Path(args.params).write_text(text)
    else:
        print(text, end="")


if __name__ == "__main__":
    run_stage(main)
