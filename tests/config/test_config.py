"""The config schema: conf/ and params.yaml checked by the same dataclasses."""

import pytest
import yaml

from lenet_mnist.config import identity, parse
from lenet_mnist.errors import PipelineError
from tests.conftest import REPO, run_dvc_stage, run_module, write_params


def test_params_yaml_is_the_composition_of_conf():
    """Editing conf/ without recomposing would make `dvc repro` run something else."""
    committed = yaml.safe_load((REPO / "params.yaml").read_text())
    assert committed == parse.compose(), (
        "params.yaml differs from conf/; run `python -m lenet_mnist.config --write`"
    )


def test_composed_defaults_are_valid_and_the_reference_recipe():
    cfg = parse.validate(parse.compose())
    assert (cfg.train.batch_size, cfg.train.epochs) == (64, 10)
    assert (cfg.optimizer.name, cfg.optimizer.lr) == ("adam", 0.001)
    assert cfg.model.name == "lenet5" and cfg.trainer.accelerator == "auto"


def test_overrides_compose_like_dvc_exp_run_s():
    cfg = parse.compose(["train.batch_size=128", "train.epochs=3"])
    assert (cfg["train"]["batch_size"], cfg["train"]["epochs"]) == (128, 3)


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("train.batch_sizee", "train.batch_size"),
        ("optimizer.lrr", "optimizer.lr"),
        ("trian", "train"),
    ],
)
def test_an_unknown_key_in_params_yaml_is_named_with_the_closest_valid_one(key, suggestion):
    cfg = parse.compose()
    *group, name = key.split(".")
    (cfg[group[0]] if group else cfg)[name] = 64
    with pytest.raises(PipelineError) as err:
        parse.validate(cfg)
    assert str(err.value) == f"{key} is not a config key; did you mean {suggestion}?"


@pytest.mark.parametrize("override", ["train.batch_sizee=64", "+train.batch_sizee=64"])
def test_an_unknown_key_in_a_hydra_override_is_refused_at_composition(override):
    with pytest.raises(PipelineError, match=r"^train.batch_sizee is not a config key; did you"):
        parse.validate(parse.compose([override]))


def test_a_wrong_type_in_a_hydra_override_is_one_line():
    with pytest.raises(
        PipelineError, match=r"^train.batch_size=abc is not allowed; use an integer$"
    ):
        parse.validate(parse.compose(["train.batch_size=abc"]))


def test_composing_keeps_a_value_of_the_wrong_type_for_the_schema_to_refuse():
    """Hydra's merge (DVC's too) would refuse it in lines of its own, before any check."""
    assert parse.compose(["train.batch_size=1.5"])["train"]["batch_size"] == 1.5


def test_a_missing_key_is_named():
    cfg = parse.compose()
    del cfg["data"]["val_size"]
    with pytest.raises(PipelineError, match="^data.val_size is missing; set it to an integer$"):
        parse.validate(cfg)


@pytest.mark.parametrize("stage", ["check", "download", "prepare", "train", "evaluate", "publish"])
def test_every_stage_rejects_bad_config_before_work(stage, tmp_path):
    p = write_params(tmp_path / "params.yaml", train__batch_size=0)
    done = run_dvc_stage(stage, tmp_path, p)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: train.batch_size=0 is not allowed; use an integer >= 1"
    ]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["params.yaml"]


def test_a_typo_in_params_yaml_stops_a_stage_with_one_line(tmp_path):
    p = write_params(tmp_path / "params.yaml")
    text = p.read_text().replace("  batch_size: 64", "  batch_sizee: 64")
    p.write_text(text)
    done = run_dvc_stage("prepare", tmp_path, p)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: train.batch_sizee is not a config key; did you mean train.batch_size?"
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [("- a\n- b\n", "holds a list; use a mapping of data, model"), ("a: [\n", "is not valid YAML")],
)
def test_a_params_file_that_is_not_a_mapping_is_one_line(tmp_path, text, message):
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(PipelineError, match=message):
        parse.load(tmp_path / "params.yaml")


def test_missing_params_file_is_one_line(tmp_path):
    done = run_module(
        "stages.prepare", "raw", "prep", "--params", tmp_path / "nope.yaml", cwd=tmp_path
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "nope.yaml not found" in done.stderr


def test_fast_experiment_preset_composes_and_validates():
    cfg = parse.validate(parse.compose(["experiment=fast"]))
    assert cfg.optimizer.scheduler == "onecycle"
    assert cfg.train.batch_size > 64 and cfg.train.epochs < 10


def test_the_config_hash_follows_the_decisive_groups_only():
    base = parse.validate(parse.compose())
    key = identity.config_hash(base, "digest")
    unchanged = (
        ["trainer.enable_progress_bar=false"],
        ["logger.tracking_uri=sqlite:///x.db", "paths.prepared=elsewhere"],
        ["data.timeout_s=3"],
    )
    for overrides in unchanged:
        assert identity.config_hash(parse.validate(parse.compose(overrides)), "digest") == key
    assert identity.config_hash(base, "other data") != key
    for change in ("train.batch_size=32", "trainer.threads=1", "optimizer.lr=0.002"):
        assert identity.config_hash(parse.validate(parse.compose([change])), "digest") != key


def test_an_override_decides_the_result_when_its_group_does():
    assert all(map(identity.decides_result, ["train.epochs", "+trainer.threads", "experiment"]))
    assert not any(
        map(
            identity.decides_result,
            ["trainer.enable_progress_bar", "logger.tracking_uri", "launcher"],
        )
    )


def test_flat_keys_use_override_spelling():
    flat = identity.flat(parse.validate(parse.compose()))
    assert flat["train.batch_size"] == 64 and flat["data.mirrors"][0].startswith("https://")


def test_any_hydra_process_refuses_an_unknown_override_key(tmp_path):
    """`dvc exp run` composes conf/ in DVC's own process, which never imports lenet_mnist:
    Hydra's own struct mode refuses the key there, with no schema of ours registered."""
    code = (
        "from hydra import compose, initialize_config_dir\n"
        f"with initialize_config_dir(config_dir={str(parse.CONF_DIR)!r}, version_base=None):\n"
        "    compose(config_name='config', overrides=['train.batch_sizee=1'])\n"
    )
    done = run_stage_code(code, tmp_path)
    assert "Could not override 'train.batch_sizee'" in done.stderr, done.stderr[-2000:]
    assert "lenet_mnist" not in code.split("config_dir")[0]


def run_stage_code(code: str, cwd):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True)
