"""A tiny Lightning fit with every source: the callback supplies the run's length to the
schedules, steps them, and logs their metrics."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader, TensorDataset

from reweight import (
    DomainMixing,
    InBatchWeights,
    IndexedDataset,
    LossPriority,
    ReweightCallback,
    Reweighter,
    StaticImportance,
)


class MemoryLogger(Logger):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, float]] = []

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> str:
        return "0"

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        return None

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.rows.append({"step": float(step or 0), **metrics})


class Model(pl.LightningModule):
    def __init__(self, reweighter: Reweighter) -> None:
        super().__init__()
        self.reweighter = reweighter
        self.net = torch.nn.Linear(3, 2)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x, y = batch["data"]
        loss = F.cross_entropy(self.net(x), y, reduction="none")
        return self.reweighter.reduce(loss, batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _data() -> IndexedDataset:
    gen = torch.Generator().manual_seed(0)
    parts = {
        name: TensorDataset(
            torch.randn(n, 3, generator=gen), torch.randint(0, 2, (n,), generator=gen)
        )
        for name, n in {"big": 300, "mid": 60, "small": 6}.items()
    }
    return IndexedDataset.concat(parts)


@pytest.mark.parametrize("max_steps", [12, -1])
def test_fit_with_every_source_reads_the_run_length(max_steps: int) -> None:
    ds = _data()
    logw = np.random.default_rng(0).normal(size=len(ds))
    rw = Reweighter.from_dataset(
        ds,
        sources=[
            StaticImportance(logw, beta=0.5, mode="weight"),
            DomainMixing({"kind": "cooldown", "high": 5.0, "start": 0.0, "end": 1.0}),
            InBatchWeights("linupper", r={"kind": "linear", "start": 2.0, "end": 0.5}),
            LossPriority(mode="proposal"),
        ],
        seed=1,
    )
    loader = DataLoader(ds, batch_size=16, sampler=rw.sampler)
    logger = MemoryLogger()
    trainer = pl.Trainer(
        max_steps=max_steps,
        max_epochs=1 if max_steps < 0 else None,
        callbacks=[ReweightCallback(rw, log_every_n_steps=2)],
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Model(rw), loader)
    expected = max_steps if max_steps > 0 else len(loader)
    assert rw.total_steps == expected
    assert rw.global_step == expected and rw.progress == 1.0
    taus = [row["reweight/mixing/tau"] for row in logger.rows if "reweight/mixing/tau" in row]
    assert len(taus) >= 3 and taus[0] > 4 > 1.1 > taus[-1] >= 1.0
    last = logger.rows[-1]
    for key in (
        "reweight/in_batch/r",
        "reweight/loss_priority/coverage",
        "reweight/loss_weight/ess_fraction",
    ):
        assert key in last
