"""The gradient noise scale estimator, against a problem whose answer is known exactly."""

import pytest
import torch

from lenet_mnist.training.probes import NoiseScale, estimate, noise_scale


def _regression(d: int, n: int, delta: torch.Tensor, sigma: float):
    """Linear regression y = x·w* + ε, x ~ N(0, I), with the model at w = w* + δ.

    Per example the gradient of ½(x·w − y)² is x(xᵀδ − ε), so G = δ and, by Isserlis'
    theorem, Σ = |δ|² I + δδᵀ + σ² I: tr(Σ) = (d + 1)|δ|² + dσ² and |G|² = |δ|².
    """
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    w_star = torch.randn(d, generator=gen, dtype=torch.float64)
    y = x @ w_star + sigma * torch.randn(n, generator=gen, dtype=torch.float64)
    net = torch.nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        net.weight.copy_((w_star + delta).unsqueeze(0))
    return net, x, y


def _half_mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * (out.squeeze(1) - y).pow(2).mean()


def test_the_estimates_average_to_the_exact_trace_and_gradient_norm():
    d, sigma = 5, 0.5
    delta = torch.tensor([0.6, -0.4, 0.2, 0.5, -0.4142], dtype=torch.float64)
    net, x, y = _regression(d, 200_000, delta, sigma)
    runs = [
        noise_scale(net, _half_mse, (x, y), batch_size=16, batches=8, seed=s) for s in range(400)
    ]
    grad_sq = sum(r.grad_sq for r in runs) / len(runs)
    trace = sum(r.trace for r in runs) / len(runs)
    exact_grad_sq = float(delta @ delta)
    exact_trace = (d + 1) * exact_grad_sq + d * sigma**2
    assert grad_sq == pytest.approx(exact_grad_sq, rel=0.06)
    assert trace == pytest.approx(exact_trace, rel=0.06)
    assert NoiseScale(grad_sq, trace).simple == pytest.approx(exact_trace / exact_grad_sq, rel=0.1)


def test_without_noise_the_trace_is_zero_and_the_norm_exact():
    g = torch.tensor([3.0, -4.0], dtype=torch.float64)
    found = estimate(g.repeat(4, 1), batch_size=8)
    assert found.trace == pytest.approx(0.0, abs=1e-9)
    assert found.grad_sq == pytest.approx(25.0)


def test_a_probe_leaves_the_weights_their_grads_and_the_global_rng_alone():
    net, x, y = _regression(3, 1000, torch.ones(3, dtype=torch.float64), 1.0)
    net.weight.grad = torch.full_like(net.weight, 7.0)
    weights, rng = net.weight.detach().clone(), torch.get_rng_state()
    noise_scale(net, _half_mse, (x, y), batch_size=10, batches=4, seed=1)
    assert torch.equal(net.weight.detach(), weights)
    assert torch.equal(net.weight.grad, torch.full_like(net.weight, 7.0))
    assert torch.equal(torch.get_rng_state(), rng)
