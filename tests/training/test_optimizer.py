"""The optimizer recipe: the learning rate actually used, and the tables config chooses from."""

import pytest
import torch

from lenet_mnist.config import parse
from lenet_mnist.training.optimizer import SCHEDULERS, effective_lr, make_optimizer


@pytest.mark.parametrize(
    ("scale", "batch_size", "lr"),
    [(False, 512, 0.001), (True, 64, 0.001), (True, 512, 0.008), (True, 16, 0.00025)],
)
def test_linear_scaling_rule_is_off_by_default_and_linear_when_on(scale, batch_size, lr):
    cfg = parse.validate(parse.compose([f"train.batch_size={batch_size}"]))
    assert cfg.optimizer.scale_lr_with_batch is False
    cfg.optimizer.scale_lr_with_batch = scale
    assert effective_lr(cfg) == pytest.approx(lr)


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_every_scheduler_starts_at_the_rate_and_the_schedule_ends_where_it_should(scheduler):
    cfg = parse.validate(parse.compose([f"optimizer.scheduler={scheduler}"]))
    net = torch.nn.Linear(2, 1)
    opt, sched = make_optimizer(cfg.optimizer, 0.01, net.parameters(), total_updates=10)
    assert isinstance(opt, torch.optim.Adam) and (sched is None) == (scheduler == "none")
    rates = []
    for _ in range(10):
        opt.step()
        if sched is not None:
            sched.step()
        rates.append(opt.param_groups[0]["lr"])
    final = {"none": 0.01, "cosine": 0.0}.get(scheduler)
    if final is not None:
        assert rates[-1] == pytest.approx(final, abs=1e-12)
    else:  # one-cycle warms up to the peak rate, then anneals below where it began
        assert max(rates) == pytest.approx(0.01, rel=0.05) and rates[-1] < rates[0]
