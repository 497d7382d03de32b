import pytest
import yaml
from omegaconf import OmegaConf

from lenet_mnist import params
from lenet_mnist.stage import PipelineError

from .conftest import REPO, run_dvc_stage, run_stage, write_params


def test_params_yaml_is_the_composition_of_conf():
    """Editing conf/ without recomposing would make `dvc repro` run something else."""
    committed = yaml.safe_load((REPO / "params.yaml").read_text())
    assert committed == params.compose(), (
        "params.yaml differs from conf/; run `python -m lenet_mnist.params --write`"
    )


def test_composed_defaults_are_valid_and_the_reference_recipe():
    cfg = params.validate(OmegaConf.create(params.compose()))
    assert (cfg.train.batch_size, cfg.train.epochs) == (64, 10)
    assert (cfg.optimizer.name, cfg.optimizer.lr) == ("adam", 0.001)
    assert cfg.model.name == "lenet5" and cfg.trainer.accelerator == "auto"


def test_overrides_compose_like_dvc_exp_run_s():
    cfg = params.compose(["train.batch_size=128", "train.epochs=3"])
    assert (cfg["train"]["batch_size"], cfg["train"]["epochs"]) == (128, 3)


BAD = [
    ("train.batch_size", 0, "an integer >= 1"),
    ("train.batch_size", 12.5, "an integer >= 1"),
    ("train.epochs", -1, "an integer >= 1"),
    ("optimizer.lr", 0, "a number > 0"),
    ("optimizer.lr", "fast", "a number > 0"),
    ("model.name", "resnet", "one of lenet5"),
    ("optimizer.name", "lion", "one of adam, adamw, sgd"),
    ("data.val_size", 60000, "smaller than the training set (60000 images)"),
    ("data.sources", ["ftp"], "a non-empty list of http, local, registry"),
    ("trainer.accelerator", "tpu9", "one of auto"),
]


@pytest.mark.parametrize(("key", "value", "allowed"), BAD, ids=[f"{k}={v}" for k, v, _ in BAD])
def test_bad_values_are_named_with_what_is_allowed(key, value, allowed):
    cfg = OmegaConf.create(params.compose())
    OmegaConf.update(cfg, key, value)
    with pytest.raises(PipelineError) as err:
        params.validate(cfg)
    assert str(err.value).startswith(f"{key}=")
    assert allowed in str(err.value)


def test_missing_key_is_reported():
    cfg = OmegaConf.create(params.compose())
    del cfg.train["epochs"]
    with pytest.raises(PipelineError, match="train.epochs=<missing>"):
        params.validate(cfg)


@pytest.mark.parametrize("stage", ["download", "prepare", "train", "evaluate"])
def test_every_stage_rejects_bad_config_before_work(stage, tmp_path):
    p = write_params(tmp_path / "params.yaml", train__batch_size=0)
    done = run_dvc_stage(stage, tmp_path, p)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: train.batch_size=0 is not allowed; use an integer >= 1"
    ]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["params.yaml"]


def test_missing_params_file_is_one_line(tmp_path):
    done = run_stage("prepare", "raw", "prep", "--params", tmp_path / "nope.yaml", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "nope.yaml not found" in done.stderr


def test_fast_experiment_preset_composes_and_validates():
    cfg = params.validate(OmegaConf.create(params.compose(["experiment=fast"])))
    assert cfg.optimizer.scheduler == "onecycle"
    assert cfg.train.batch_size > 64 and cfg.train.epochs < 10
    assert "experiment" not in cfg  # a preset changes values; it is not a value itself
