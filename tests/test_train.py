"""train.py's own rules; the stage itself runs in test_pipeline_slice and test_sweep."""

import pytest
from omegaconf import OmegaConf

from lenet_mnist import params, train


@pytest.mark.parametrize(
    ("scale", "batch_size", "lr"),
    [(False, 512, 0.001), (True, 64, 0.001), (True, 512, 0.008), (True, 16, 0.00025)],
)
def test_linear_scaling_rule_is_off_by_default_and_linear_when_on(scale, batch_size, lr):
    cfg = OmegaConf.create(params.compose([f"train.batch_size={batch_size}"]))
    assert cfg.optimizer.scale_lr_with_batch is False
    cfg.optimizer.scale_lr_with_batch = scale
    assert train.effective_lr(cfg) == pytest.approx(lr)
