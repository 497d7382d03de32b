"""The LightningModule's step arithmetic, without a Trainer."""

import pytest
import torch

from lenet_mnist.config import parse
from lenet_mnist.model import networks
from lenet_mnist.training.module import Classifier, forward_loss


def test_forward_loss_returns_the_loss_and_the_sums_an_epoch_adds_up():
    torch.manual_seed(0)
    net = networks.build("lenet5")
    x, y = torch.randn(5, 1, 32, 32), torch.tensor([0, 1, 2, 3, 4])
    loss, stats = forward_loss(net, x, y)
    logits = net(x)
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item())
    assert stats[0].item() == pytest.approx(5 * loss.item())
    assert stats[1].item() == (logits.argmax(1) == y).sum().item()


def test_the_optimizer_gets_the_rate_it_is_given_not_the_configured_one():
    cfg = parse.validate(parse.compose(["optimizer.scheduler=none"]))
    module = Classifier(networks.build("lenet5"), cfg.optimizer, 0.008, 100, compile=False)
    opt = module.configure_optimizers()
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["lr"] == 0.008
