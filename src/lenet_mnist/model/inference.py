"""The one batched forward pass of the validation probes, evaluate, serving and predict."""

from __future__ import annotations

import numpy as np
import torch


@torch.inference_mode()
def logits(
    net: torch.nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = 256
) -> torch.Tensor:
    """The network's logits for `x` (numpy, memory-mapped too, or a tensor), on its device,
    in eval mode and back in the mode it was in. The batch size can change the last bits of
    a logit, so each caller keeps the one its hashed outputs were made with (evaluate: 256)."""
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    try:
        out = [net(_batch(x[i : i + batch_size], device)) for i in range(0, len(x), batch_size)]
    finally:
        net.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 10, device=device)


def _batch(x: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """np.array copies a batch of a memory map, which torch cannot share: it is read-only."""
    return (x if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x))).to(device)
