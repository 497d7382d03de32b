"""The plain network: LeNet-5's shape, as the recipe gives it."""

import torch

from lenet_mnist.model import networks


def test_lenet5_maps_32x32_images_to_ten_logits_with_lenets_parameter_count():
    net = networks.build("lenet5")
    assert net(torch.zeros(3, 1, 32, 32)).shape == (3, 10)
    # conv 6x5x5 (156) + conv 16x6x5x5 (2,416) + 400x120 (48,120) + 120x84 (10,164) + 84x10 (850)
    assert sum(p.numel() for p in net.parameters()) == 61_706
