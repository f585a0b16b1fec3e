"""The draw stream contract, measured the way a user meets it: a real Lightning ``Trainer``, the
public API, default settings, ``num_workers`` 0 and 2.

* **Lag.** A domain rule switches the sampled mix from (0.9, 0.1) to (0.1, 0.9) at step
  ``switch``. Reported: domain 0's share of the batches trained after the switch (skipping the
  loader's own prefetch), and the largest age in optimizer steps of a trained batch's draws
  (``lag/draw_age_steps``, when the library reports it).
* **Unbiasedness.** Hybrid mixing with a uniform target p and a proposal q that is redrawn at
  random every step ((0.9, 0.1) or (0.1, 0.9)), ``self_normalize=False``: the importance
  weights' estimate of p(domain 0) = 0.5, i.e. the mean over trained items of
  w · 1[domain 0], with its standard error; also with the correction forced onto the current
  q instead of the draw-time q (``--current-q``), to show what that bias looks like.

Usage::

    python benchmarks/stream_contract.py            # both experiments, 0 and 2 workers
    python benchmarks/stream_contract.py --steps 60 --batch 64

Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from reweight import DomainMixing, IndexedDataset, ReweightCallback, Reweighter
from reweight.mixing import DomainRule


class _SwitchRule(DomainRule):
    """(0.9, 0.1) before step ``switch`` of ``total``, (0.1, 0.9) from then on."""

    kind = "switch"

    def __init__(self, switch: int, total: int) -> None:
        super().__init__(2)
        self.switch, self.total = switch, total

    def probs(self, progress: float) -> np.ndarray:
        step = round(progress * self.total)
        return np.array([0.9, 0.1] if step < self.switch else [0.1, 0.9])


class _RandomRule(DomainRule):
    """A proposal redrawn at random every step: (0.9, 0.1) or (0.1, 0.9)."""

    kind = "random"

    def __init__(self, total: int, seed: int = 0) -> None:
        super().__init__(2)
        self.total = total
        self.flips = np.random.default_rng(seed).random(total + 1) < 0.5

    def probs(self, progress: float) -> np.ndarray:
        step = min(self.total, round(progress * self.total))
        return np.array([0.9, 0.1] if self.flips[step] else [0.1, 0.9])


def _dataset(n_per_domain: int = 500) -> IndexedDataset:
    gen = torch.Generator().manual_seed(0)
    n = 2 * n_per_domain
    x = torch.randn(n, 4, generator=gen)
    rows = [{"x": x[i], "y": x[i].sum()} for i in range(n)]
    return IndexedDataset(rows, domains=np.repeat([0, 1], n_per_domain), domain_names=["a", "b"])


def _fit(rw: Reweighter, steps: int, batch: int, num_workers: int) -> list[dict[str, Any]]:
    """Trains a linear model for ``steps`` steps; one record per trained batch."""
    import lightning.pytorch as pl

    dataset = _dataset()
    records: list[dict[str, Any]] = []

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = torch.nn.Linear(4, 1)

        def training_step(self, data: dict[str, Any], batch_idx: int) -> torch.Tensor:
            pred = self.model(data["x"]).squeeze(-1)
            loss = rw.reduce(F.mse_loss(pred, data["y"], reduction="none"), data)
            age = rw.metrics().get("lag/draw_age_steps", math.nan)
            records.append(
                {
                    "step": self.trainer.global_step,
                    "domains": data["domain"].tolist(),
                    "weights": rw.last_loss_weights.tolist(),
                    "age": age,
                }
            )
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    loader = DataLoader(
        dataset,
        batch_size=batch,
        sampler=rw.sampler,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=steps,
        callbacks=[ReweightCallback(rw)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Module(), loader)
    return records


def lag_experiment(
    num_workers: int, steps: int = 60, batch: int = 64, switch: int = 20
) -> dict[str, Any]:
    """Domain 0's share after a switch from (0.9, 0.1) to (0.1, 0.9) at step ``switch``."""
    rw = Reweighter.from_dataset(
        _dataset(),
        sources=[DomainMixing(_SwitchRule(switch, steps))],
        infinite=True,
        total_steps=steps,
    )
    records = _fit(rw, steps, batch, num_workers)
    prefetch = num_workers * 2 + 1  # the loader's prefetch_factor=2 per worker, Lightning's 1
    after = [r for r in records if r["step"] >= switch + prefetch]
    before = [r for r in records if r["step"] < switch]
    share = float(np.mean([d == 0 for r in after for d in r["domains"]]))
    ages = [r["age"] for r in records if math.isfinite(r["age"])]
    return {
        "experiment": "lag",
        "num_workers": num_workers,
        "steps": steps,
        "batch": batch,
        "switch": switch,
        "loader_prefetch_batches": prefetch,
        "share0_before": float(np.mean([d == 0 for r in before for d in r["domains"]])),
        "share0_after": share,
        "max_draw_age_steps": max(ages) if ages else math.nan,
    }


def unbiasedness_experiment(
    num_workers: int, steps: int = 200, batch: int = 64, current_q: bool = False, seed: int = 0
) -> dict[str, Any]:
    """The importance-weighted estimate of p(domain 0) = 0.5 under a proposal that moves
    every step (``current_q``: divide by the sampler's current q instead)."""
    rw = Reweighter.from_dataset(
        _dataset(),
        sources=[
            DomainMixing({"kind": "uniform"}, mode="weight"),
            DomainMixing(_RandomRule(steps, seed), mode="proposal"),
        ],
        infinite=True,
        total_steps=steps,
        self_normalize=False,
        seed=seed,
    )
    if current_q:
        rw.sampler.match_draws = lambda items, ranks: None  # type: ignore[method-assign]
    records = _fit(rw, steps, batch, num_workers)
    values = np.array(
        [w * (d == 0) for r in records for w, d in zip(r["weights"], r["domains"], strict=True)]
    )
    weights = np.array([w for r in records for w in r["weights"]])
    estimate = float(values.mean())
    stderr = float(values.std(ddof=1) / math.sqrt(values.size))
    return {
        "experiment": "unbiasedness",
        "num_workers": num_workers,
        "q": "current" if current_q else "draw-time",
        "steps": steps,
        "batch": batch,
        "target": 0.5,
        "estimate": estimate,
        "stderr": stderr,
        "z": (estimate - 0.5) / stderr,
        "mean_weight": float(weights.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="steps of the lag experiment")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--switch", type=int, default=20)
    parser.add_argument("--is-steps", type=int, default=200, help="steps of the IS experiment")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--current-q", action="store_true", help="also run with the current q")
    args = parser.parse_args()

    results = []
    for workers in args.workers:
        results.append(lag_experiment(workers, args.steps, args.batch, args.switch))
    for workers in args.workers:
        for current in (False, True) if args.current_q else (False,):
            results.append(unbiasedness_experiment(workers, args.is_steps, args.batch, current))

    print(
        f"{'lag':<14} {'workers':>7} {'prefetch':>8} {'share0 before':>13} "
        f"{'share0 after':>12} {'max age':>7}"
    )
    for r in results:
        if r["experiment"] == "lag":
            print(
                f"{'':<14} {r['num_workers']:>7} {r['loader_prefetch_batches']:>8} "
                f"{r['share0_before']:>13.3f} {r['share0_after']:>12.3f} "
                f"{r['max_draw_age_steps']:>7.0f}"
            )
    print(
        f"{'unbiasedness':<14} {'workers':>7} {'q':>9} {'estimate':>9} {'stderr':>7} "
        f"{'z':>6} {'mean w':>7}   (target 0.5)"
    )
    for r in results:
        if r["experiment"] == "unbiasedness":
            print(
                f"{'':<14} {r['num_workers']:>7} {r['q']:>9} {r['estimate']:>9.3f} "
                f"{r['stderr']:>7.3f} {r['z']:>6.1f} {r['mean_weight']:>7.3f}"
            )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
