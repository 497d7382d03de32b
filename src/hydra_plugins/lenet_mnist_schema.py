"""Hydra's plugin scan imports this module: it registers lenet_mnist's config schema.

Every process that composes conf/ then finds the schema that conf/config.yaml names
first in its defaults list, `dvc exp run` included, which imports nothing of ours.
"""

from lenet_mnist.config.hydra_schema import register

register()
