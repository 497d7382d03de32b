"""`python -m lenet_mnist.config [--write] [overrides...]`: compose conf/ into params.yaml."""

from lenet_mnist.config.parse import main
from lenet_mnist.errors import run_stage

run_stage(main)
