"""Li et al. 2025's equivalence, checked numerically through the Reweighter: for a linear model,
upsampling (`sample`) and upweighting (`weight`) a domain give the same expected update under
full-batch gradient descent, but under SGD the sampled minibatch gradient has lower variance."""

from __future__ import annotations

import numpy as np
import torch

from reweight import DomainMixing, Reweighter

SIZES = (400, 40, 8)  # 50:1 imbalance
N = sum(SIZES)
DOMAINS = np.repeat(np.arange(len(SIZES)), SIZES)
RULE = {"kind": "uniform"}  # target: every domain one third of the training signal


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N, 5, generator=gen, dtype=torch.float64)
    shift = torch.tensor(DOMAINS, dtype=torch.float64)[:, None]
    x = x + shift  # each domain lives elsewhere, with its own linear target
    truth = torch.randn(len(SIZES), 5, generator=gen, dtype=torch.float64)
    y = (x * truth[torch.from_numpy(DOMAINS)]).sum(1) + 0.1 * torch.randn(N, generator=gen)
    w = torch.zeros(5, dtype=torch.float64)
    return x, y, w


def _grad(rw: Reweighter, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, idx: np.ndarray):
    param = w.clone().requires_grad_(True)
    index = torch.from_numpy(idx)
    losses = (x[index] @ param - y[index]) ** 2
    rw.reduce(losses, {"index": index}).backward()
    assert param.grad is not None
    return param.grad


def _per_item_grads(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return 2 * (x @ w - y)[:, None] * x


def test_full_batch_upweighting_equals_the_expected_sampled_update() -> None:
    x, y, w = _data()
    sample = Reweighter(domains=DOMAINS, sources=[DomainMixing(RULE, mode="sample")])
    weight = Reweighter(domains=DOMAINS, sources=[DomainMixing(RULE, mode="weight")])
    g = _per_item_grads(x, y, w)
    q = torch.from_numpy(sample.sampler.probabilities(np.arange(N)))
    expected_sampled = (q[:, None] * g).sum(0)
    full_batch_weighted = _grad(weight, x, y, w, np.arange(N))
    torch.testing.assert_close(full_batch_weighted, expected_sampled, rtol=1e-10, atol=1e-10)
    # And the exact expectation of the weight-mode estimator under its own sampler agrees too.
    q_nat = torch.from_numpy(weight.sampler.probabilities(np.arange(N)))
    ratio = weight.importance_ratios(np.arange(N))
    torch.testing.assert_close((q_nat * ratio)[:, None].mul(g).sum(0), expected_sampled)


def test_sgd_sampled_gradient_has_lower_variance_than_the_weighted_one() -> None:
    x, y, w = _data()
    batch, draws = 16, 600
    grads = {}
    for mode in ("sample", "weight"):
        rw = Reweighter(
            domains=DOMAINS,
            sources=[DomainMixing(RULE, mode=mode)],
            self_normalize=False,  # the paper's scalarization: fixed weights π/π_natural
        )
        grads[mode] = torch.stack(
            [_grad(rw, x, y, w, rw.sampler.sample(batch, seed=s)) for s in range(draws)]
        )
    mean = {m: g.mean(0) for m, g in grads.items()}
    variance = {m: float(((g - mean[m]) ** 2).sum(1).mean()) for m, g in grads.items()}
    # Both estimate the same update: unbiased, so the squared gap of the two Monte Carlo means
    # is about (tr Σ_sample + tr Σ_weight) / draws; allow 9 times that.
    gap = float(((mean["sample"] - mean["weight"]) ** 2).sum())
    assert gap < 9 * (variance["sample"] + variance["weight"]) / draws, (gap, variance)
    # ...but drawing the small domains more often beats multiplying their rare draws up.
    assert variance["sample"] < 0.5 * variance["weight"], variance
