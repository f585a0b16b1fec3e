"""The draw stream contract as a user meets it (DESIGN.md, "The draw stream contract"): a real
Lightning Trainer or a plain DataLoader loop, default settings, 0 and 2 workers.

* Lag: an update reaches every batch the loader has not yet requested.
* Draw-time probabilities: the importance correction is unbiased when the proposal moves every
  step, and visibly biased if the current q were used instead.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from reweight import DomainMixing, InBatchWeights, LossPriority, Reweighter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import stream_contract


@pytest.mark.slow
@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_domain_switch_reaches_the_next_batch_the_loader_requests(num_workers: int) -> None:
    result = stream_contract.lag_experiment(num_workers, steps=40, batch=64, switch=15)
    assert result["share0_before"] > 0.85
    assert result["share0_after"] < 0.15  # (0.1, 0.9) from the first batch drawn after it
    # The only lag is the prefetch: the loader's 2 batches per worker and Lightning's 1.
    assert result["max_draw_age_steps"] == result["loader_prefetch_batches"]


@pytest.mark.slow
@pytest.mark.parametrize("num_workers", [0, 2])
def test_importance_correction_uses_the_draw_time_q(num_workers: int) -> None:
    right = stream_contract.unbiasedness_experiment(num_workers, steps=150, batch=64)
    assert abs(right["z"]) < 4, right
    assert right["mean_weight"] == pytest.approx(1.0, abs=0.1)
    # The same run dividing by the q in force at the loss (the old behaviour) is far off.
    wrong = stream_contract.unbiasedness_experiment(
        num_workers, steps=150, batch=64, current_q=True
    )
    assert wrong["z"] > 10, wrong


def _plain_loop(rw: Reweighter, dataset: object, steps: int, num_workers: int) -> list[float]:
    loader = DataLoader(dataset, batch_size=16, sampler=rw.sampler, num_workers=num_workers)  # type: ignore[arg-type]
    ages = []
    for step, batch in enumerate(loader):
        if step == steps:
            break
        rw.reduce(torch.rand(len(batch["index"])), batch)
        ages.append(rw.metrics()["lag/draw_age_steps"])
        rw.step()
    return ages


def test_plain_loop_without_workers_draws_each_batch_after_the_last_update() -> None:
    dataset = stream_contract._dataset(100)
    rw = Reweighter.from_dataset(
        dataset,
        sources=[
            InBatchWeights("linupper"),
            LossPriority(refresh_every=4, mode="proposal"),
            DomainMixing({"kind": "cooldown", "high": 5.0, "low": 1.0}),
        ],
        total_steps=30,
        infinite=True,
    )
    ages = _plain_loop(rw, dataset, 30, num_workers=0)
    assert ages == [0.0] * 30
    assert rw.sampler.draws_in_flight == 16  # the batch fetched when the loop broke off


def test_every_update_reaches_the_next_draw_exactly() -> None:
    """Each batch is what drawing its positions from the weights in force right before it
    gives: the items of global positions p are a pure function of (seed, p, weights)."""
    dataset = stream_contract._dataset(60)
    rw = Reweighter.from_dataset(
        dataset, sources=[LossPriority(refresh_every=3, mode="sample")], seed=4
    )
    loader = iter(DataLoader(dataset, batch_size=8, sampler=rw.sampler))
    for step in range(12):
        position = rw.sampler.draws_consumed
        expected, expected_q = rw.sampler._draw_positions(position, 8)
        batch = next(loader)
        assert batch["index"].tolist() == expected.tolist(), step
        np.testing.assert_array_equal(rw.sampler.probabilities(batch["index"]), expected_q)
        rw.reduce(torch.rand(8) * (step + 1), batch)
        rw.step()


def test_metrics_report_the_lag() -> None:
    dataset = stream_contract._dataset(50)
    rw = Reweighter.from_dataset(dataset, total_steps=10)
    metrics = rw.metrics()
    assert math.isnan(metrics.get("lag/draw_age_steps", math.nan))
    assert metrics["lag/prefetched_draws"] == 0.0
    assert "lag/chunk_draws" not in metrics
