"""The optimizer recipe: the learning rate actually used, and the tables config chooses from."""

import pytest
import torch

from lenet_mnist.config import parse
from lenet_mnist.training.optimizer import SCHEDULERS, effective_lr, make_optimizer


@pytest.mark.parametrize(
    ("rule", "batch_size", "lr"),
    [
        ("none", 512, 0.001),
        ("linear", 64, 0.001),
        ("linear", 512, 0.008),
        ("linear", 16, 0.00025),
        ("sqrt", 256, 0.002),
        ("sqrt", 16, 0.0005),
    ],
)
def test_the_rate_follows_the_batch_size_only_when_a_scaling_rule_is_chosen(rule, batch_size, lr):
    cfg = parse.validate(parse.compose([f"train.batch_size={batch_size}"]))
    assert cfg.optimizer.lr_scaling == "none"
    cfg.optimizer.lr_scaling = rule
    assert effective_lr(cfg) == pytest.approx(lr)


def test_sgd_gets_its_momentum_and_adam_keeps_its_betas():
    net = torch.nn.Linear(2, 1)
    sgd = parse.validate(parse.compose(["optimizer=sgd"])).optimizer
    opt, _ = make_optimizer(sgd, 0.05, net.parameters(), total_updates=10)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9
    adam = parse.validate(parse.compose(["optimizer.momentum=0.5"])).optimizer
    opt, _ = make_optimizer(adam, 0.01, net.parameters(), total_updates=10)
    assert "momentum" not in opt.param_groups[0]


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
