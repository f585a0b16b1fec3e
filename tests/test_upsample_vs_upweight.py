"""Li et al. 2025's equivalence, checked numerically through the Reweighter
(`recipes/experiments/upsample_numeric.py`): for a linear model, upsampling (`sample`) and
upweighting (`weight`) a domain give the same expected update under full-batch gradient descent,
but under SGD the sampled minibatch gradient has lower variance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from recipes.experiments import upsample_numeric as experiment


def test_full_batch_upweighting_equals_the_expected_sampled_update() -> None:
    assert experiment.expected_update_gap(0) < 1e-10
    # And the exact expectation of the weight-mode estimator under its own sampler agrees too.
    domains, x, y, w = experiment.make_data(0)
    n = domains.size
    sample = experiment.reweighter(domains, "sample")
    weight = experiment.reweighter(domains, "weight")
    per_item = 2 * (x @ w - y)[:, None] * x
    q = torch.from_numpy(sample.sampler.probabilities(np.arange(n)))
    q_nat = torch.from_numpy(weight.sampler.probabilities(np.arange(n)))
    ratio = weight.importance_ratios(np.arange(n))
    torch.testing.assert_close(
        (q_nat * ratio)[:, None].mul(per_item).sum(0), (q[:, None] * per_item).sum(0)
    )


def test_sgd_sampled_gradient_has_lower_variance_than_the_weighted_one() -> None:
    result = experiment.gradient_variance(0, batch=16, draws=600)
    # Both estimate the same update: the squared gap of the two Monte Carlo means is about
    # (tr Σ_sample + tr Σ_weight) / draws; allow 9 times that.
    assert result["gap_over_se"] < 9, result
    # ...but drawing the small domains more often beats multiplying their rare draws up.
    assert result["var_sample"] < 0.5 * result["var_weight"], result


def test_the_experiment_writes_its_table_json_and_plot(tmp_path: Path) -> None:
    experiment.main(["--seeds", "1", "--draws", "50", "--out", str(tmp_path)])
    table = (tmp_path / "upsample_numeric.md").read_text()
    assert "weight / sample" in table and "| 64 |" in table
    record = json.loads((tmp_path / "upsample_numeric.json").read_text())
    assert set(record["result"]["variance"]) == {"4", "16", "64"}
    assert (tmp_path / "upsample_numeric.png").read_bytes()[:4] == b"\x89PNG"
