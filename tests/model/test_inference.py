"""The one batched forward pass that probes, evaluate, serving and predict share."""

import torch

from lenet_mnist.data import prepare
from lenet_mnist.model import inference, networks


def test_logits_are_the_same_bits_for_any_batch_size(prepared_slice):
    """The batch size is a speed choice only; it must not move a single logit."""
    torch.manual_seed(0)
    net = networks.build("lenet5")
    x, _ = prepare.read_split(prepared_slice[0], "test")
    default = inference.logits(net, x)  # batches of 256
    assert default.shape == (len(x), 10)
    assert torch.equal(default, inference.logits(net, x, batch_size=2048))  # a larger batch
    assert torch.equal(default, inference.logits(net, torch.from_numpy(x.copy())))  # a tensor


def test_a_probe_during_training_leaves_the_network_training():
    net = networks.build("lenet5")
    net.train()
    inference.logits(net, torch.zeros(3, 1, 32, 32))
    assert net.training
    net.eval()
    inference.logits(net, torch.zeros(3, 1, 32, 32))
    assert not net.training
