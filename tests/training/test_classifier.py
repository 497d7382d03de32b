"""The LightningModule's step arithmetic, without a Trainer."""

import pytest
import torch

from lenet_mnist.config import parse
from lenet_mnist.model import networks
from lenet_mnist.training.batches import TensorBatches
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


def _epoch_sums(net, batches):
    """What one rank's Classifier adds up over an epoch: [loss * n, correct] and n."""
    module = Classifier(net, None, 0.001, 1, compile=False)
    with torch.no_grad():
        for batch in batches:
            module._step(batch, "val")
    return module.sums["val"], module.counts["val"]


@pytest.mark.parametrize(
    ("n", "batch_size", "world"), [(11, 4, 2), (9, 3, 2), (10, 4, 3), (7, 7, 4)]
)
@pytest.mark.parametrize("shuffle", [False, True])
def test_ranks_sums_add_up_to_the_one_process_sums(n, batch_size, world, shuffle):
    """The padding DDP adds so that ranks make equal steps is counted by none of them."""
    torch.manual_seed(0)
    net = networks.build("lenet5")
    x, y = torch.randn(n, 1, 32, 32), torch.randint(0, 10, (n,))
    one = _epoch_sums(net, TensorBatches(x, y, batch_size, shuffle=shuffle, seed=1))
    ranks = [
        _epoch_sums(
            net, TensorBatches(x, y, batch_size, shuffle=shuffle, seed=1, rank=r, world_size=world)
        )
        for r in range(world)
    ]
    assert sum(count for _, count in ranks) == one[1] == n
    total = torch.stack([sums for sums, _ in ranks]).sum(0)
    assert total[1].item() == one[0][1].item()  # correct predictions, exactly
    assert total[0].item() == pytest.approx(one[0][0].item(), rel=1e-5)  # summed losses
