"""Hydra runs and sweeps of the pipeline's own train, evaluate and publish code, in MLflow
(docs/launchers.md): `python -m lenet_mnist.run -m train.batch_size=32,64` is a sweep."""

from __future__ import annotations

import os
import sys

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lenet_mnist import process
from lenet_mnist.config import parse
from lenet_mnist.errors import PipelineError, run_stage
from lenet_mnist.sweeps import stop


def run_job(cfg: DictConfig) -> float | None:
    """Lightning and MLflow load when a job runs, so that `--help` answers at once."""
    from lenet_mnist.sweeps import job

    return job.run(cfg)


def refuse_null_groups(overrides: list[str]) -> None:
    """`group=null` as one line: Hydra itself answers it with a ValueError traceback."""
    for override in overrides:
        key, sep, value = override.partition("=")
        group = key.lstrip("+")
        if sep and value == "null" and group and (parse.CONF_DIR / group).is_dir():
            options = ", ".join(sorted(f.stem for f in (parse.CONF_DIR / group).glob("*.yaml")))
            raise PipelineError(
                f"{override}: a config group takes one of its options ({options}); "
                f"~{group} leaves it out"
            )


def main() -> None:
    """Hydra's command line, with a bad key or value reported as one line."""
    refuse_null_groups(sys.argv[1:])
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing its own text
    process.prepare()  # before torch loads, here and in a launcher's worker processes
    OmegaConf.register_new_resolver("pid", os.getpid, replace=True)  # hydra.run.dir uses it
    entry = hydra.main(config_path=str(parse.CONF_DIR), config_name="config", version_base="1.3")
    try:
        with stop.ending():  # a sweep stopped or failed takes its jobs and runs with it
            entry(run_job)()
    except (HydraException, OmegaConfBaseException) as err:
        raise PipelineError(parse.describe(err)) from None


if __name__ == "__main__":
    run_stage(main)
