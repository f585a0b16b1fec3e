"""Tests for reweight.callback: a tiny Lightning fit, resume equivalence, loader checks, DDP."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")

import torch.nn.functional as F  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from reweight import DomainMixing, IndexedDataset, Reweighter  # noqa: E402
from reweight.callback import ReweightCallback  # noqa: E402
from tests.ranks import free_port  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SIZES = (120, 50, 10)  # three imbalanced domains
BATCH = 16


def _dataset() -> IndexedDataset:
    gen = torch.Generator().manual_seed(0)
    n = sum(SIZES)
    x = torch.randn(n, 4, generator=gen)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 0.0]) + 0.1 * torch.randn(n, generator=gen)
    domains = np.repeat(np.arange(len(SIZES)), SIZES)
    rows = [{"x": x[i], "y": y[i]} for i in range(n)]
    return IndexedDataset(rows, domains=domains, domain_names=["web", "code", "math"])


class TinyModule(pl.LightningModule):
    def __init__(self, reweighter: Reweighter, loader_kwargs: dict[str, Any] | None = None):
        super().__init__()
        torch.manual_seed(0)
        self.model = torch.nn.Linear(4, 1)
        self.reweighter = reweighter
        self.dataset = _dataset()
        self.loader_kwargs = loader_kwargs
        self.seen: list[tuple[int, list[int]]] = []  # (global_step before the update, indices)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        self.seen.append((self.trainer.global_step, batch["index"].tolist()))
        pred = self.model(batch["x"]).squeeze(-1)
        return self.reweighter.reduce(F.mse_loss(pred, batch["y"], reduction="none"), batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)

    def train_dataloader(self) -> DataLoader:
        kwargs = self.loader_kwargs or {"sampler": self.reweighter.sampler}
        return DataLoader(self.dataset, batch_size=BATCH, **kwargs)


def _reweighter(num_samples: int = 40 * BATCH, **kwargs: Any) -> Reweighter:
    return Reweighter.from_dataset(
        _dataset(),
        sources=[DomainMixing([0.3, 0.3, 0.4], mode="weight")],
        seed=7,
        num_samples=num_samples,
        **kwargs,
    )


def _trainer(tmp_path: Path, reweighter: Reweighter, **kwargs: Any) -> pl.Trainer:
    callbacks = [ReweightCallback(reweighter), *kwargs.pop("callbacks", [])]
    kwargs.setdefault("logger", CSVLogger(str(tmp_path), name="logs"))
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=2,
        default_root_dir=str(tmp_path),
        **kwargs,
    )


# ---------------------------------------------------------------- fit


@pytest.mark.parametrize("accumulate", [1, 2])
def test_fit_steps_and_logs(tmp_path: Path, accumulate: int) -> None:
    rw = _reweighter()
    module = TinyModule(rw)
    trainer = _trainer(tmp_path, rw, max_steps=6, accumulate_grad_batches=accumulate)
    trainer.fit(module)
    assert trainer.global_step == 6
    assert rw.global_step == trainer.global_step
    assert len(module.seen) == 6 * accumulate
    assert rw.sampler.draws_consumed == 6 * accumulate * BATCH
    assert rw.state_dict()["sampler"]["stream"]["consumed"].tolist() == [6 * accumulate * BATCH]
    # Lightning did not replace the sampler.
    assert trainer.train_dataloader.sampler is rw.sampler

    metrics_file = Path(trainer.logger.log_dir) / "metrics.csv"  # type: ignore[union-attr]
    assert metrics_file.exists()
    with metrics_file.open() as f:
        rows = list(csv.DictReader(f))
    columns = set(rows[0].keys())
    assert "reweight/sampler/ess_fraction" in columns
    for name in ("web", "code", "math"):
        assert f"reweight/domain/{name}/target" in columns
        assert f"reweight/domain/{name}/realised" in columns
    logged_steps = sorted(
        int(r["step"]) for r in rows if r.get("reweight/sampler/ess_fraction") not in ("", None)
    )
    assert logged_steps == [2, 4, 6]
    ess = [
        float(r["reweight/sampler/ess_fraction"])
        for r in rows
        if r["reweight/sampler/ess_fraction"]
    ]
    assert all(0 < v <= 1 for v in ess)


def test_loader_without_reweight_sampler_raises(tmp_path: Path) -> None:
    rw = _reweighter()
    module = TinyModule(rw, loader_kwargs={"shuffle": True})
    trainer = _trainer(tmp_path, rw, max_steps=2, logger=False)
    with pytest.raises(RuntimeError, match=r"reweighter\.sampler"):
        trainer.fit(module)


def test_callback_rejects_bad_log_interval() -> None:
    with pytest.raises(ValueError, match="log_every_n_steps"):
        ReweightCallback(_reweighter(), log_every_n_steps=0)


# ---------------------------------------------------------------- resume


def _flatten(seen: list[tuple[int, list[int]]], first_step: int, last_step: int) -> list[list[int]]:
    return [idx for step, idx in seen if first_step <= step < last_step]


@pytest.mark.parametrize(
    "num_samples",
    [
        40 * BATCH,  # 12 steps stay inside one epoch
        5 * BATCH,  # epochs of 5 batches: the checkpoint at step 6 is mid-epoch 1
        3 * BATCH + 8,  # epochs of 4 batches, the last one short
        6 * BATCH,  # the checkpoint at step 6 is the last batch of epoch 0
    ],
    ids=["one-epoch", "epoch-5", "epoch-short-last", "ckpt-at-epoch-end"],
)
def test_resume_equivalence(tmp_path: Path, num_samples: int) -> None:
    # Run A: 12 steps straight.
    rw_a = _reweighter(num_samples)
    module_a = TinyModule(rw_a)
    _trainer(tmp_path / "a", rw_a, max_steps=12, logger=False).fit(module_a)
    assert rw_a.global_step == 12

    # Run B: 6 steps with a checkpoint at step 6 ...
    rw_b = _reweighter(num_samples)
    module_b = TinyModule(rw_b)
    ckpt_dir = tmp_path / "ckpt"
    checkpoint = ModelCheckpoint(dirpath=str(ckpt_dir), every_n_train_steps=6, save_top_k=-1)
    _trainer(tmp_path / "b", rw_b, max_steps=6, logger=False, callbacks=[checkpoint]).fit(module_b)
    assert _flatten(module_b.seen, 0, 6) == _flatten(module_a.seen, 0, 6)
    ckpts = sorted(ckpt_dir.glob("*step=6*.ckpt"))
    assert ckpts, list(ckpt_dir.iterdir())

    # ... then a fresh process-equivalent resumes to 12.
    rw_c = _reweighter(num_samples)
    module_c = TinyModule(rw_c)
    trainer_c = _trainer(tmp_path / "c", rw_c, max_steps=12, logger=False)
    trainer_c.fit(module_c, ckpt_path=str(ckpts[0]))
    assert trainer_c.global_step == 12
    assert rw_c.global_step == 12
    assert [s for s, _ in module_c.seen] == list(range(6, 12))
    assert _flatten(module_c.seen, 6, 12) == _flatten(module_a.seen, 6, 12)
    # The model continued identically too.
    for p_a, p_c in zip(module_a.parameters(), module_c.parameters(), strict=True):
        torch.testing.assert_close(p_a, p_c)


@pytest.mark.parametrize(
    ("kwargs", "stop", "total"),
    [
        ({}, 4, 8),  # one long epoch: stopped mid-epoch 0
        ({"num_samples": 5 * BATCH}, 6, 13),  # stopped mid-epoch 1; runs on into epoch 2
        # Lightning epochs of 5 batches over an endless stream: stopped mid Lightning-epoch 1
        ({"num_samples": 40 * BATCH, "infinite": True, "limit_train_batches": 5}, 7, 13),
    ],
    ids=["mid-epoch", "mid-later-epoch", "limited-mid-epoch"],
)
def test_resume_from_save_checkpoint_after_fit(
    tmp_path: Path, kwargs: dict[str, Any], stop: int, total: int
) -> None:
    """fit() stops at max_steps, save_checkpoint() writes the state, a new fit resumes from it.

    Lightning counts the interrupted epoch as finished and resumes its remaining batches under
    the next epoch number; the resumed run must still see the uninterrupted run's items.
    """
    kwargs = dict(kwargs)
    limit = kwargs.pop("limit_train_batches", None)
    trainer_kwargs: dict[str, Any] = {"logger": False}
    if limit is not None:
        trainer_kwargs["limit_train_batches"] = limit
    rw_a = _reweighter(**kwargs)
    module_a = TinyModule(rw_a)
    _trainer(tmp_path / "a", rw_a, max_steps=total, **trainer_kwargs).fit(module_a)
    assert rw_a.global_step == total

    rw_b = _reweighter(**kwargs)
    module_b = TinyModule(rw_b)
    trainer_b = _trainer(tmp_path / "b", rw_b, max_steps=stop, **trainer_kwargs)
    trainer_b.fit(module_b)
    assert _flatten(module_b.seen, 0, stop) == _flatten(module_a.seen, 0, stop)
    path = tmp_path / "after.ckpt"
    trainer_b.save_checkpoint(str(path))

    rw_c = _reweighter(**kwargs)
    module_c = TinyModule(rw_c)
    trainer_c = _trainer(tmp_path / "c", rw_c, max_steps=total, **trainer_kwargs)
    trainer_c.fit(module_c, ckpt_path=str(path))
    assert rw_c.global_step == total
    assert [s for s, _ in module_c.seen] == list(range(stop, total))
    assert _flatten(module_c.seen, stop, total) == _flatten(module_a.seen, stop, total)
    assert rw_c.sampler.epoch == rw_a.sampler.epoch
    for p_a, p_c in zip(module_a.parameters(), module_c.parameters(), strict=True):
        torch.testing.assert_close(p_a, p_c)


def test_resume_from_save_checkpoint_after_fit_at_an_epoch_end(tmp_path: Path) -> None:
    """Stopped exactly where Lightning's (limited) epoch ends: the resumed run starts the next
    epoch of the stream afresh, as the uninterrupted run does, although the restored stream
    position (an endless stream) is mid-epoch.

    Only the first resumed step is compared: Lightning itself carries the finished epoch's batch
    count into the resumed one and ends it early, so later epoch boundaries differ from the
    uninterrupted run whatever the sampler does.
    """
    kwargs: dict[str, Any] = {"num_samples": 40 * BATCH, "infinite": True}
    rw_a = _reweighter(**kwargs)
    module_a = TinyModule(rw_a)
    _trainer(tmp_path / "a", rw_a, max_steps=6, logger=False, limit_train_batches=5).fit(module_a)

    rw_b = _reweighter(**kwargs)
    trainer_b = _trainer(tmp_path / "b", rw_b, max_steps=5, logger=False, limit_train_batches=5)
    trainer_b.fit(TinyModule(rw_b))
    path = tmp_path / "after.ckpt"
    trainer_b.save_checkpoint(str(path))

    rw_c = _reweighter(**kwargs)
    module_c = TinyModule(rw_c)
    trainer_c = _trainer(tmp_path / "c", rw_c, max_steps=6, logger=False, limit_train_batches=5)
    trainer_c.fit(module_c, ckpt_path=str(path))
    assert _flatten(module_c.seen, 5, 6) == _flatten(module_a.seen, 5, 6)
    assert rw_c.sampler.epoch == rw_a.sampler.epoch


def test_resume_with_other_configuration_raises(tmp_path: Path) -> None:
    rw_b = _reweighter()
    checkpoint = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), every_n_train_steps=2)
    _trainer(tmp_path / "b", rw_b, max_steps=2, logger=False, callbacks=[checkpoint]).fit(
        TinyModule(rw_b)
    )
    (path,) = list((tmp_path / "ckpt").glob("*.ckpt"))
    other = Reweighter.from_dataset(
        _dataset(),
        sources=[DomainMixing([0.1, 0.1, 0.8], mode="weight")],
        seed=7,
        num_samples=40 * BATCH,
    )
    trainer = _trainer(tmp_path / "c", other, max_steps=4, logger=False)
    with pytest.raises(ValueError, match="another configuration"):
        trainer.fit(TinyModule(other), ckpt_path=str(path))


# ---------------------------------------------------------------- DDP

_DDP_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path

    import numpy as np
    import torch
    import torch.nn.functional as F
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    from reweight import DomainMixing, IndexedDataset, Reweighter
    from reweight.callback import ReweightCallback

    OUT = Path(sys.argv[1])
    SIZES = (120, 50, 10)
    BATCH = 8
    STEPS = 5


    def dataset():
        gen = torch.Generator().manual_seed(0)
        n = sum(SIZES)
        x = torch.randn(n, 4, generator=gen)
        y = x.sum(-1)
        rows = [{"x": x[i], "y": y[i]} for i in range(n)]
        return IndexedDataset(rows, domains=np.repeat(np.arange(3), SIZES),
                              domain_names=["web", "code", "math"])


    def reweighter():
        return Reweighter.from_dataset(
            dataset(), sources=[DomainMixing([0.3, 0.3, 0.4], mode="weight")],
            seed=3, num_samples=400,
        )


    class Module(pl.LightningModule):
        def __init__(self, rw):
            super().__init__()
            torch.manual_seed(0)
            self.model = torch.nn.Linear(4, 1)
            self.rw = rw
            self.seen = []
            self.sampler_types = []

        def training_step(self, batch, batch_idx):
            self.seen.append(batch["index"].tolist())
            self.sampler_types.append(type(self.trainer.train_dataloader.sampler).__name__)
            pred = self.model(batch["x"]).squeeze(-1)
            return self.rw.reduce(F.mse_loss(pred, batch["y"], reduction="none"), batch)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

        def train_dataloader(self):
            return DataLoader(dataset(), batch_size=BATCH, sampler=self.rw.sampler)


    if __name__ == "__main__":
        rw = reweighter()
        module = Module(rw)
        trainer = pl.Trainer(
            accelerator="cpu", devices=2, strategy="ddp", max_steps=STEPS,
            callbacks=[ReweightCallback(rw)], logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False,
        )
        trainer.fit(module)
        rank = trainer.global_rank
        (OUT / f"rank{rank}.json").write_text(json.dumps({
            "rank": rank,
            "world_size": trainer.world_size,
            "seen": module.seen,
            "sampler_types": module.sampler_types,
            "sampler_is_ours": trainer.train_dataloader.sampler is rw.sampler,
            "sampler_rank": rw.sampler.rank,
            "sampler_world": rw.sampler.num_replicas,
            "global_step": rw.global_step,
            "trainer_step": trainer.global_step,
            "weight": [float(p) for p in module.model.weight.flatten()],
        }))
    """
)


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_two_process_cpu(tmp_path: Path) -> None:
    script = tmp_path / "ddp_fit.py"
    script.write_text(_DDP_SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    env.pop("LOCAL_RANK", None)
    env.pop("WORLD_SIZE", None)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run(
        [sys.executable, str(script), str(out)],
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    results = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]

    for r, res in enumerate(results):
        assert res["rank"] == r and res["world_size"] == 2
        assert res["sampler_is_ours"]
        assert set(res["sampler_types"]) == {"ReweightSampler"}
        assert (res["sampler_rank"], res["sampler_world"]) == (r, 2)
        assert res["global_step"] == res["trainer_step"] == 5
        assert len(res["seen"]) == 5
    # Every rank holds the same model (gradients were all-reduced).
    np.testing.assert_allclose(results[0]["weight"], results[1]["weight"], rtol=1e-6)

    # Rank r yields global positions r, r+2, ... of the single-process stream.
    reference = Reweighter.from_dataset(
        _dataset(),
        sources=[DomainMixing([0.3, 0.3, 0.4], mode="weight")],
        seed=3,
        num_samples=400,
    )
    rank0 = [i for batch in results[0]["seen"] for i in batch]
    rank1 = [i for batch in results[1]["seen"] for i in batch]
    assert len(rank0) == len(rank1) == 5 * 8
    interleaved = [i for pair in zip(rank0, rank1, strict=True) for i in pair]
    stream = iter(reference.sampler)
    single = [next(stream) for _ in range(len(interleaved))]
    assert interleaved == single
