"""The schema's rules for each value, and its keys: params.yaml holds exactly those."""

import copy
import dataclasses

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lenet_mnist import numerics
from lenet_mnist.config import identity, parse, schema
from lenet_mnist.data import sources
from lenet_mnist.errors import PipelineError
from lenet_mnist.model import networks
from lenet_mnist.training import optimizer
from tests.conftest import REPO

BAD = [
    ("train.batch_size", 0, "an integer >= 1"),
    ("train.batch_size", 12.5, "an integer"),
    ("train.epochs", -1, "an integer >= 1"),
    ("optimizer.lr", 0, "a finite number > 0"),
    ("optimizer.lr", float("inf"), "a finite number > 0"),
    ("optimizer.lr", "fast", "a number"),
    ("optimizer.lr", True, "a number"),
    ("train.epochs", 2.0, "an integer"),
    ("train.targets", [True], "a list of numbers"),
    ("train.early_stopping", 5, "a mapping of patience, stop_at, give_up_below"),
    ("logger.registered_model", " ", "null or a non-empty string"),
    ("model.name", "resnet", "one of lenet5"),
    ("optimizer.name", "lion", "one of adam, adamw, sgd"),
    ("optimizer.scheduler", "step", "one of none, cosine, onecycle"),
    ("data.val_size", 60000, "an integer >= 1, fewer than train_limit (or 60000)"),
    ("data.sources", ["ftp"], "a non-empty list of http, local, registry"),
    ("data.mirrors", ["https://example.org/mnist"], "a list of http(s) URLs ending in /"),
    ("trainer.accelerator", "tpu9", "one of auto, cpu, gpu, cuda, mps"),
    ("trainer.threads", 0, "null or an integer >= 1"),
    ("train.seed", 2**32, "an integer >= 0 and <= 4294967295"),
    ("data.train_limit", 1, "null or an integer >= 2 and <= 60000"),
    ("train.val_every_n_steps", 0, "null or an integer >= 1"),
    ("train.targets", [0.99, 0.98], "increasing accuracies in (0, 1], such as [0.98, 0.99]"),
    ("train.targets", [98.0], "increasing accuracies in (0, 1], such as [0.98, 0.99]"),
    ("train.early_stopping.patience", 0, "null or an integer >= 1"),
    ("train.early_stopping.stop_at", 99.0, "null or a number > 0 and <= 1"),
    ("train.early_stopping.give_up_below", 0, "null or a number > 0 and <= 1"),
    ("optimizer.momentum", 1.0, "a number >= 0 and < 1"),
    ("optimizer.lr_scaling", "cubic", "one of none, linear, sqrt"),
    ("train.noise_probe.batches", 1, "0 (no probe) or an integer >= 2"),
    ("train.noise_probe.batch_size", 0, "an integer >= 1"),
]


@pytest.mark.parametrize(("key", "value", "allowed"), BAD, ids=[f"{k}={v}" for k, v, _ in BAD])
def test_bad_values_are_named_with_what_is_allowed(key, value, allowed):
    cfg = parse.compose()
    *groups, name = key.split(".")
    node = cfg
    for group in groups:
        node = node[group]
    node[name] = value
    with pytest.raises(PipelineError) as err:
        parse.validate(cfg)
    assert str(err.value).startswith(f"{key}=")
    assert str(err.value).endswith(f"use {allowed}")


TABLES = {
    "model.name": (networks.MODELS, schema.MODELS),
    "optimizer.name": (optimizer.OPTIMIZERS, schema.OPTIMIZERS),
    "optimizer.scheduler": (optimizer.SCHEDULERS, schema.SCHEDULERS),
    "optimizer.lr_scaling": (optimizer.LR_SCALING, schema.LR_SCALING),
    "trainer.reproducible": (numerics.MODES, schema.NUMERICS),
}


@pytest.mark.parametrize("key", TABLES)
def test_each_table_offers_exactly_the_schemas_choices(key):
    """The schema imports no table (they need torch): the two lists must agree."""
    table, choices = TABLES[key]
    assert list(table) == list(choices)
    cfg = parse.compose()
    group, name = key.split(".")
    cfg[group][name] = "nothing"
    with pytest.raises(PipelineError, match=f"^{key}=nothing .* use one of {', '.join(table)}$"):
        parse.validate(cfg)


def test_the_download_sources_are_the_schemas_choices():
    assert list(sources.FETCHERS) == list(schema.SOURCES)


def test_every_schema_key_is_in_params_yaml_and_nothing_else():
    committed = yaml.safe_load((REPO / "params.yaml").read_text())
    assert set(identity.flat(parse.validate(committed))) == set(schema.keys())
    assert {f.name for f in dataclasses.fields(schema.Config)} == set(committed)


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.text(max_size=4), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
DEFAULTS = parse.compose()


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from([*schema.entries(), "train.batch_sizee", "trian", "data.mirrors.0"]),
    VALUES,
)
def test_any_value_at_any_key_validates_or_raises_the_projects_own_error(key, value):
    """Anything written anywhere, a group or a list's item included, is refused in one line
    or accepted as a config that validates again to itself; a key the schema lacks never is."""
    cfg = copy.deepcopy(DEFAULTS)
    *parents, leaf = key.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    if isinstance(node, list):
        node[int(leaf)] = value
    else:
        node[leaf] = value
    try:
        typed = parse.validate(cfg)
    except PipelineError as err:
        assert str(err) and "\n" not in str(err)
        return
    known = set(schema.keys())
    assert key in known or key == "data.mirrors.0", f"{key}={value!r} was accepted"
    assert parse.validate(dataclasses.asdict(typed)) == typed
    if key == "data.mirrors.0":
        assert typed.data.mirrors[0] == value


def test_a_key_with_a_newline_is_named_on_one_line():
    cfg = copy.deepcopy(DEFAULTS)
    cfg["data"] = {"\n": 0}
    with pytest.raises(PipelineError) as refused:
        parse.validate(cfg)
    assert str(refused.value).startswith("'data.\\n' is not a config key;")
