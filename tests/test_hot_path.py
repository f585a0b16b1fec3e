"""The CUDA hot path: ``reduce()`` computes the loss weights where the losses are and leaves
what the host learns from the batch for the next call or draw. Forced on the CPU here
(``Reweighter._defer``), it must give bitwise what the synchronous path gives, and read
nothing back from the losses while ``reduce()`` runs."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from reweight import (
    DomainMixing,
    InBatchWeights,
    IndexedDataset,
    LossPriority,
    ReducibleLoss,
    Reweighter,
    StaticImportance,
)
from tests.state_compare import assert_states_equal

SIZES = (48, 32, 16)
N = sum(SIZES)
DOMAINS = np.repeat(np.arange(3), SIZES)
LOGW = np.random.default_rng(1).normal(size=N)
REFERENCE = np.random.default_rng(2).uniform(size=N)
COOLDOWN = {"kind": "cooldown", "high": 5.0, "low": 1.0}
TABLE: dict[str, Any] = {"refresh_every": 3, "decay": 0.8}

CASES: dict[str, Callable[[], list[Any]]] = {
    "all": lambda: [
        StaticImportance(LOGW, beta=0.5, mode="weight"),
        DomainMixing({"kind": "odm"}, mode="weight"),
        DomainMixing(COOLDOWN, mode="proposal"),
        InBatchWeights("linupper", r={"kind": "linear", "start": 1.0, "end": 0.4}, cap_z=2.0),
        LossPriority(mode="proposal", **TABLE),
    ],
    "reducible": lambda: [
        StaticImportance(LOGW, beta=0.5, mode="weight"),
        DomainMixing({"kind": "doremi"}, mode="sample"),
        InBatchWeights("hard", r=0.7),
        ReducibleLoss(mode="weight", **TABLE),  # reads the batch's "reference_loss"
    ],
    "sample-only": lambda: [DomainMixing(COOLDOWN), LossPriority(mode="sample", **TABLE)],
}


def _dataset() -> IndexedDataset:
    rows = [{"x": torch.tensor(float(i)), "reference_loss": REFERENCE[i]} for i in range(N)]
    return IndexedDataset(rows, domains=DOMAINS, domain_names=["a", "b", "c"])


def _losses(index: torch.Tensor, step: int) -> torch.Tensor:
    """Per-sample losses of a step: a fixed function of (item, step), NaN now and then."""
    gen = torch.Generator().manual_seed(step)
    loss = (index.float() % 7) / 3 + torch.rand(index.numel(), generator=gen)
    if step % 5 == 3:
        loss[1] = math.nan
    return loss.requires_grad_()


def _run(case: str, defer: bool | None, steps: int = 24, early: bool = False) -> dict[str, Any]:
    """A training loop; ``early``: each batch is fetched between reduce() and step() (as a
    fetcher that prefetches one batch does), so draws must see reduce()'s updates first."""
    rw = Reweighter(
        domains=DOMAINS, sources=CASES[case](), total_steps=steps, infinite=True, seed=5
    )
    rw._defer = defer
    loader = DataLoader(_dataset(), batch_size=12, sampler=rw.sampler)
    out: dict[str, list[Any]] = {"index": [], "loss": [], "grad": [], "weights": []}
    batches = iter(loader)
    batch = next(batches)
    for step in range(steps):
        losses = _losses(batch["index"], step)
        loss = rw.reduce(losses, batch)
        loss.backward()
        following = next(batches) if early else None
        rw.step()
        following = following if early else next(batches)
        out["index"].append(batch["index"].tolist())
        out["loss"].append(loss.detach())
        out["grad"].append(losses.grad)
        out["weights"].append(rw.last_loss_weights)
        batch = following
    return {**out, "metrics": rw.metrics(), "state": rw.state_dict()}


@pytest.mark.filterwarnings("ignore:.*NaN or inf")
@pytest.mark.parametrize("early", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_deferred_host_part_gives_bitwise_the_synchronous_run(case: str, early: bool) -> None:
    sync, deferred = _run(case, False, early=early), _run(case, True, early=early)
    assert deferred["index"] == sync["index"]  # every draw saw every update in time
    for key in ("loss", "grad"):
        for a, b in zip(deferred[key], sync[key], strict=True):
            assert torch.equal(a, b)
    for a, b in zip(deferred["weights"], sync["weights"], strict=True):
        np.testing.assert_array_equal(a, b)
    assert deferred["metrics"] == sync["metrics"]
    assert_states_equal(deferred["state"], sync["state"])
    assert _run(case, None, early=early)["index"] == sync["index"]  # CPU default: synchronous


# ---------------------------------------------------------------- no reads on the hot path

_READS: tuple[str, ...] = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__")
_READS += ("__index__", "__array__", "nonzero", "masked_select", "unique")


@contextlib.contextmanager
def _host_reads() -> Iterator[list[str]]:
    """Records every tensor method that reads values back to the host (on a GPU: a sync)."""
    calls: list[str] = []
    originals = {name: getattr(torch.Tensor, name) for name in _READS}

    def spy(name: str) -> Callable[..., Any]:
        def method(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return originals[name](self, *args, **kwargs)

        return method

    def getitem(self: torch.Tensor, key: Any) -> Any:
        keys = key if isinstance(key, tuple) else (key,)
        if any(isinstance(k, torch.Tensor) and k.dtype == torch.bool for k in keys):
            calls.append("boolean index")
        return original_getitem(self, key)

    original_getitem = torch.Tensor.__getitem__
    try:
        for name in _READS:
            setattr(torch.Tensor, name, spy(name))
        torch.Tensor.__getitem__ = getitem  # type: ignore[method-assign,assignment]
        yield calls
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)
        torch.Tensor.__getitem__ = original_getitem  # type: ignore[method-assign]


@pytest.mark.filterwarnings("ignore:.*NaN or inf")
@pytest.mark.parametrize("case", sorted(CASES))
def test_deferred_reduce_reads_nothing_back(case: str) -> None:
    rw = Reweighter(domains=DOMAINS, sources=CASES[case](), total_steps=20, infinite=True)
    rw._defer = True
    batches = iter(DataLoader(_dataset(), batch_size=12, sampler=rw.sampler))
    for step in range(8):
        batch = next(batches)
        losses = _losses(batch["index"], step)
        with _host_reads() as calls:
            loss = rw.reduce(losses, batch)
        assert calls == [], f"reduce() read the device at step {step}: {calls}"
        assert rw._pending is not None  # the host part waits for the next reader
        loss.backward()
        rw.step()
    with _host_reads() as calls:  # the synchronous path does read (the check sees reads)
        rw._defer = False
        rw.reduce(_losses(batch["index"], 8), next(batches))
    assert calls


# ---------------------------------------------------------------- errors found later


def test_deferred_nonfinite_raise_is_raised_by_the_next_call_which_changes_nothing() -> None:
    rw = Reweighter(domains=DOMAINS, sources=CASES["all"](), nonfinite="raise", total_steps=9)
    rw._defer = True
    batches = iter(DataLoader(_dataset(), batch_size=12, sampler=rw.sampler))
    batch = next(batches)
    rw.reduce(_losses(batch["index"], 0), batch)
    rw.step()
    batch = next(batches)
    before = rw.state_dict()
    losses = _losses(batch["index"], 3)  # one NaN
    loss = rw.reduce(losses, batch)  # the check waits for the host part: no error yet
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="NaN or inf"):
        rw.step()
    assert rw.global_step == 1
    assert_states_equal(rw.state_dict(), before)


def test_deferred_batch_that_is_not_the_next_draws_raises_when_weighting() -> None:
    rw = Reweighter(domains=DOMAINS, sources=CASES["all"](), total_steps=9)
    rw._defer = True
    batches = iter(DataLoader(_dataset(), batch_size=12, sampler=rw.sampler))
    batch = next(batches)
    before = rw.state_dict()
    swapped = {"index": batch["index"].flip(0)}
    rw.reduce(_losses(swapped["index"], 0), swapped)
    with pytest.raises(ValueError, match="not the next draws"):
        rw.metrics()
    assert_states_equal(rw.state_dict(), before)


def test_deferred_without_draws_falls_back_to_reading_the_batch() -> None:
    rw = Reweighter(domains=[0, 0, 0, 1], sources=[DomainMixing([0.5, 0.5], mode="weight")])
    rw._defer = True
    loss = rw.reduce(torch.tensor([1.0, 1.0]), {"index": torch.tensor([0, 3])})
    assert rw._pending is None and float(loss) == 1.0
    assert rw.last_loss_weights.tolist() == [0.5, 1.5]
