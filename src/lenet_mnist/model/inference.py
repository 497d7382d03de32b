"""The one batched forward pass: the validation probes, evaluate, serving and predict all
compute their logits here."""

from __future__ import annotations

import numpy as np
import torch

BATCH = 256  # small enough to stay in the CPU's caches; evaluate's logits are computed at it


@torch.inference_mode()
def logits(
    net: torch.nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = BATCH
) -> torch.Tensor:
    """The network's logits for every image of `x`, (N, 10), on the network's device.

    `x` may be a numpy array (memory-mapped prepared data, say) or a tensor already on the
    device. The batch size is part of what computes the logits: 256 and 2048 give the same
    bits here, but a batch of 7 did not, so each caller keeps the batch size its hashed
    outputs were made with. The network is put in eval mode for the pass and back in the
    mode it was in, so a probe during training leaves it training.
    """
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    try:
        out = [net(_batch(x[i : i + batch_size], device)) for i in range(0, len(x), batch_size)]
    finally:
        net.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 10, device=device)


def _batch(x: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(device)
    return torch.from_numpy(np.array(x)).to(device)  # np.array: a memory map is read-only
