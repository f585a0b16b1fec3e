"""Runs small trainings that stop, checkpoint and resume, to compare them with uninterrupted
runs (tests/test_resume_matrix.py).

A *case* is one cell of the resume matrix: framework ("plain" loop or "lightning"), DataLoader
workers (0, or 2 with persistent workers), how the run length reaches the Reweighter ("given"
to it, Lightning's "max_steps" or "max_epochs"), and the weight sources. :func:`run_case` runs
the case three times — uninterrupted (A), stopped after ``stop`` steps with a checkpoint (B),
resumed from that checkpoint in fresh objects (C) — and returns what each trained on.

Run as a script under several processes (``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/
``MASTER_PORT`` set, as torchrun does) it joins a gloo process group and runs every case of a
JSON file, writing ``rank<r>.pt``. ``kill_at`` makes run B kill its own process with SIGKILL
at that step (after Lightning's periodic checkpoints), for the preemption test.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from reweight import (
    DomainMixing,
    InBatchWeights,
    IndexedDataset,
    LossPriority,
    ReducibleLoss,
    ReweightCallback,
    Reweighter,
    StaticImportance,
)

SIZES = (120, 50, 10)
BATCH = 8
BATCHES_PER_EPOCH = 5
EPOCHS = 2
STEPS = BATCHES_PER_EPOCH * EPOCHS

SOURCES = (
    "none",
    "static-sample",
    "static-weight",
    "mixing-sample",
    "mixing-weight",
    "mixing-hybrid",
    "online-sample",
    "dynamic-sample",
    "dynamic-weight",
    "dynamic-both",
    "reducible-weight",
    "all",
)


def dataset() -> IndexedDataset:
    gen = torch.Generator().manual_seed(0)
    n = sum(SIZES)
    x = torch.randn(n, 4, generator=gen)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + torch.randn(n, generator=gen)
    rows = [{"x": x[i], "y": y[i]} for i in range(n)]
    return IndexedDataset(
        rows, domains=np.repeat(np.arange(3), SIZES), domain_names=["web", "code", "math"]
    )


def sources(name: str) -> dict[str, Any]:
    """The Reweighter keyword arguments of a source configuration.

    Sampling from one distribution and correcting the loss to another is a ``"weight"`` source
    for the target plus a ``"proposal"`` source for the draws: "mixing-hybrid" draws from τ = 3
    and corrects to the cooldown schedule; "dynamic-both" weights in-batch and draws by loss
    priority, corrected back (the priorities divided out of the loss)."""
    logw = np.random.default_rng(1).normal(0.0, 1.0, sum(SIZES))
    reference = np.random.default_rng(2).uniform(0.0, 1.0, sum(SIZES))
    cooldown = {"kind": "cooldown", "high": 5.0, "low": 1.0}
    dynamic_r = {"kind": "linear", "start": 1.0, "end": 0.4}
    table: dict[str, Any] = {"refresh_every": 4, "decay": 0.8}
    options: dict[str, list[Any]] = {
        "none": [],
        "static-sample": [StaticImportance(logw, mode="sample")],
        "static-weight": [StaticImportance(logw, mode="weight")],
        "mixing-sample": [DomainMixing(cooldown)],
        "mixing-weight": [DomainMixing(cooldown, mode="weight")],
        "mixing-hybrid": [
            DomainMixing(cooldown, mode="weight"),
            DomainMixing(3.0, mode="proposal"),
        ],
        "online-sample": [DomainMixing({"kind": "odm"})],
        "dynamic-sample": [LossPriority(mode="sample", **table)],
        "dynamic-weight": [InBatchWeights("linupper", r=dynamic_r)],
        "dynamic-both": [
            InBatchWeights("quadratic", r=0.7),
            LossPriority(mode="proposal", **table),
        ],
        # p keeps its own item factors (static and reducible-loss priorities), q has none.
        "reducible-weight": [
            StaticImportance(logw, beta=0.5, mode="weight"),
            ReducibleLoss(reference=reference, mode="weight", **table),
        ],
        "all": [
            StaticImportance(logw, beta=0.5, mode="weight"),
            DomainMixing({"kind": "odm"}, mode="weight"),
            DomainMixing(cooldown, mode="proposal"),
            InBatchWeights("linupper", r=dynamic_r),
            LossPriority(mode="proposal", **table),
        ],
    }
    return {"sources": options[name]}


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _reweighter(case: dict[str, Any]) -> Reweighter:
    _, world = _world()
    given = case["length"] == "given"
    return Reweighter.from_dataset(
        dataset(),
        seed=5,
        num_samples=BATCHES_PER_EPOCH * BATCH * world,
        total_steps=STEPS if given else None,
        **sources(case["source"]),
    )


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(4, 1)


def _loader(rw: Reweighter, workers: int) -> DataLoader:
    return DataLoader(
        dataset(),
        batch_size=BATCH,
        sampler=rw.sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
    )


def _record(trace: list[dict[str, Any]], step: int, batch: dict[str, Any], rw: Reweighter) -> None:
    trace.append(
        {
            "step": step,
            "items": batch["index"].tolist(),
            "weights": torch.from_numpy(rw.last_loss_weights.copy()),
        }
    )


# ---------------------------------------------------------------- plain loop


def _plain(case: dict[str, Any], stop: int | None, ckpt: Path, resume: bool) -> dict[str, Any]:
    rank, world = _world()
    rw = _reweighter(case)
    model = _model()
    trained: torch.nn.Module = model
    if world > 1:
        trained = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    step = 0
    if resume:  # the order: reweighter first (before any iterator exists), model, optimizer
        state = torch.load(ckpt, weights_only=False)
        rw.load_state_dict(state["reweighter"])
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
    loader = _loader(rw, case["workers"])
    trace: list[dict[str, Any]] = []
    while step < STEPS:
        for batch in loader:
            loss = F.mse_loss(trained(batch["x"]).squeeze(-1), batch["y"], reduction="none")
            optimizer.zero_grad()
            rw.reduce(loss, batch).backward()
            optimizer.step()
            rw.step()
            _record(trace, step, batch, rw)
            step += 1
            if step == stop:
                if rank == 0:  # any rank's state holds every rank's position
                    torch.save(
                        {
                            "reweighter": rw.state_dict(),
                            "model": model.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "step": step,
                        },
                        ckpt,
                    )
                if world > 1:
                    torch.distributed.barrier()
                return _result(trace, rw, model)
            if step == STEPS:
                break
    return _result(trace, rw, model)


# ---------------------------------------------------------------- Lightning


def _lightning(
    case: dict[str, Any], stop: int | None, ckpt: Path, resume: bool, kill_at: int | None
) -> dict[str, Any]:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback, ModelCheckpoint

    _, world = _world()
    rw = _reweighter(case)
    trace: list[dict[str, Any]] = []

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = _model()

        def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
            loss = F.mse_loss(self.model(batch["x"]).squeeze(-1), batch["y"], reduction="none")
            out = rw.reduce(loss, batch)
            _record(trace, self.trainer.global_step, batch, rw)
            return out

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)

        def train_dataloader(self) -> DataLoader:
            return _loader(rw, case["workers"])

    class StopAt(Callback):
        def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
            if kill_at is not None and trainer.global_step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)  # preempted: no clean-up at all
            if stop is not None and trainer.global_step == stop:
                trainer.should_stop = True

    callbacks: list[Callback] = [ReweightCallback(rw), StopAt()]
    if stop is not None and not resume:
        every = stop if kill_at is None else 3
        callbacks.append(
            ModelCheckpoint(
                dirpath=str(ckpt.parent),
                filename=ckpt.stem + "-{step}",
                every_n_train_steps=every,
                save_top_k=-1,
            )
        )
    length = (
        {"max_epochs": EPOCHS, "max_steps": -1}
        if case["length"] == "max_epochs"
        else {"max_steps": STEPS}
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=world,
        strategy="ddp" if world > 1 else "auto",
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=stop is not None and not resume,
        enable_progress_bar=False,
        enable_model_summary=False,
        **length,  # type: ignore[arg-type]
    )
    module = Module()
    trainer.fit(module, ckpt_path=str(ckpt) if resume else None)
    return _result(trace, rw, module.model)


def _result(trace: list[dict[str, Any]], rw: Reweighter, model: torch.nn.Module) -> dict[str, Any]:
    return {
        "trace": trace,
        "state": rw.state_dict(),
        "params": [p.detach().clone() for p in model.parameters()],
        "total_steps": rw.total_steps,
        # Every batch of every rank was found among this rank's records of the one global
        # sequence (else reduce() falls back to the current q and warns).
        "matched_every_batch": not rw._warned_unmatched,
    }


def lightning_checkpoint(ckpt: Path, step: int) -> Path:
    """The checkpoint Lightning's ModelCheckpoint wrote at ``step`` for run B."""
    return ckpt.parent / f"{ckpt.stem}-step={step}.ckpt"


def run_case(case: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Runs A (uninterrupted), B (stopped at ``case['stop']``) and C (resumed) of one case."""
    import warnings

    workdir.mkdir(parents=True, exist_ok=True)
    ckpt = workdir / f"{case['name']}.pt"
    stop = int(case["stop"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if case["framework"] == "plain":
            a = _plain(case, None, ckpt, resume=False)
            b = _plain(case, stop, ckpt, resume=False)
            c = _plain(case, None, ckpt, resume=True)
        else:
            a = _lightning(case, None, ckpt, False, None)
            b = _lightning(case, stop, ckpt, False, None)
            c = _lightning(case, None, lightning_checkpoint(ckpt, stop), True, None)
    return {"a": a, "b": b, "c": c}


def run_phase(case: dict[str, Any], workdir: Path) -> dict[str, Any] | None:
    """One run of a case: ``phase`` "all" (:func:`run_case`), "kill" (run B killing itself at
    ``kill_at``, checkpoints every 3 steps) or "resume" (run C from ``checkpoint``)."""
    import warnings

    phase = case.get("phase", "all")
    if phase == "all":
        return run_case(case, workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ckpt = workdir / f"{case['name']}.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if phase == "kill":
            _lightning(case, STEPS + 1, ckpt, False, int(case["kill_at"]))
            raise RuntimeError("the run was not killed")  # pragma: no cover
        if phase == "resume":
            return _lightning(case, None, Path(case["checkpoint"]), True, None)
        if phase == "uninterrupted":
            return _lightning(case, None, ckpt, False, None)
    raise ValueError(f"unknown phase {phase!r}")


def main() -> None:
    cases_file, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    cases = json.loads(cases_file.read_text())
    rank = int(os.environ.get("RANK", "0"))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        torch.distributed.init_process_group("gloo")
    results = {case["name"]: run_phase(case, out_dir / "work") for case in cases}
    torch.save(results, out_dir / f"rank{rank}.pt")


if __name__ == "__main__":
    main()
