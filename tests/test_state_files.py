"""Reweighter.save / Reweighter.load: the state as a directory, written from views of the live
arrays (no second copy), read back memory-mapped; the same state as state_dict(), a resumed run
identical to the uninterrupted one, and bad or partial directories refused with nothing
changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import reweight._checks
import reweight.state_files
from reweight import Reweighter
from reweight._checks import item_state_views
from reweight.sources import DomainMixing, InBatchWeights, LossPriority, StaticImportance
from tests.state_compare import assert_states_equal

N, K, BATCH = 3_000, 5, 32


def every_source(seed: int = 0) -> Reweighter:
    """Every source on, interleaved domains, p with its own per-item masses."""
    rng = np.random.default_rng(11)
    domains = rng.integers(0, K, N)
    log_weights = rng.standard_normal(N).astype(np.float32)
    sources = [
        StaticImportance(log_weights, beta=0.5, mode="weight"),
        DomainMixing(3.0),
        InBatchWeights("linupper"),
        LossPriority(refresh_every=3),
    ]
    return Reweighter(domains=domains, sources=sources, total_steps=50, seed=seed, infinite=True)


def train(rw: Reweighter, draws: Any, steps: int, rng: np.random.Generator) -> list[list[int]]:
    seen = []
    for _ in range(steps):
        index = [next(draws) for _ in range(BATCH)]
        seen.append(index)
        losses = torch.from_numpy(rng.random(BATCH, dtype=np.float32) * 3)
        rw.reduce(losses, {"index": torch.tensor(index)})
        rw.step()
    return seen


def trained(steps: int) -> tuple[Reweighter, Any]:
    """:func:`every_source` after ``steps`` training steps, and its draw iterator."""
    rw = every_source()
    draws = iter(rw.sampler)
    train(rw, draws, steps, np.random.default_rng(0))
    return rw, draws


@pytest.fixture
def small_chunks(monkeypatch: Any) -> None:
    """Chunks of 256 elements, so that the arrays are written in many pieces."""
    for module in (reweight._checks, reweight.state_files):
        monkeypatch.setattr(module, "CHUNK", 256)


def test_a_saved_directory_holds_the_state_dict_and_resumes_bitwise(
    small_chunks: None, tmp_path: Path
) -> None:
    reference, resumed = every_source(), every_source()
    ref_draws = iter(reference.sampler)
    rng = np.random.default_rng(5)
    train(reference, ref_draws, 7, rng)
    path = reference.save(tmp_path / "rw")
    assert (path / "COMPLETE").is_file()
    loaded = reweight.state_files._read_arrays(torch.load(path / "state.pt"), path)
    as_tensors = reweight.state_files._replace_leaves(
        loaded, lambda a: torch.from_numpy(a.copy()) if isinstance(a, np.ndarray) else a
    )
    assert_states_equal(as_tensors, reference.state_dict())

    resumed.load(path)
    assert_states_equal(resumed.state_dict(), reference.state_dict())
    after = np.random.default_rng(9)
    expected = train(reference, ref_draws, 8, np.random.default_rng(9))
    assert train(resumed, iter(resumed.sampler), 8, after) == expected
    assert_states_equal(resumed.state_dict(), reference.state_dict())


def test_saving_hands_out_views_not_copies() -> None:
    rw, _ = trained(3)
    with item_state_views():
        state = rw.state_dict()
    table = rw.sources[-1].table
    factors = rw.sampler._tree._factors
    assert np.shares_memory(state["sources"]["loss_priority"]["ema"], table._ema)
    assert np.shares_memory(state["sampler"]["static"], factors)
    assert np.shares_memory(state["sampler"]["dynamic"], factors)
    copied = rw.state_dict()  # outside the context: copies
    assert not np.shares_memory(copied["sampler"]["static"].numpy(), factors)


def test_the_files_do_not_follow_later_changes(tmp_path: Path) -> None:
    rw, draws = trained(3)
    before = rw.state_dict()
    rw.save(tmp_path / "rw")
    train(rw, draws, 4, np.random.default_rng(1))
    twin = every_source()
    twin.load(tmp_path / "rw")
    assert_states_equal(twin.state_dict(), before)


def test_a_new_save_replaces_the_old_only_when_complete(tmp_path: Path, monkeypatch: Any) -> None:
    rw, draws = trained(2)
    first = rw.state_dict()
    rw.save(tmp_path / "rw")
    train(rw, draws, 2, np.random.default_rng(1))

    calls = []

    def failing(array: np.ndarray, file: Path) -> None:
        calls.append(file)
        if len(calls) == 2:
            raise OSError("disk full")
        original(array, file)

    original = reweight.state_files._write_flat
    monkeypatch.setattr(reweight.state_files, "_write_flat", failing)
    with pytest.raises(OSError, match="disk full"):
        rw.save(tmp_path / "rw")
    monkeypatch.undo()
    twin = every_source()
    twin.load(tmp_path / "rw")
    assert_states_equal(twin.state_dict(), first)

    second = rw.state_dict()
    rw.save(tmp_path / "rw")  # over the old one and the leftover partial directory
    twin.load(tmp_path / "rw")
    assert_states_equal(twin.state_dict(), second)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rw"]


def test_bad_directories_are_refused_and_change_nothing(tmp_path: Path) -> None:
    rw, _ = trained(3)
    path = rw.save(tmp_path / "rw")
    target = every_source()
    train(target, iter(target.sampler), 2, np.random.default_rng(3))
    before = target.state_dict()

    with pytest.raises(ValueError, match="not a complete saved Reweighter state"):
        target.load(tmp_path / "nothing")
    (path / "COMPLETE").rename(path / "was-complete")
    with pytest.raises(ValueError, match="COMPLETE"):
        target.load(path)
    (path / "was-complete").rename(path / "COMPLETE")

    names = sorted(p.name for p in path.glob("array-*.npy"))
    biggest = max(names, key=lambda name: (path / name).stat().st_size)
    data = (path / biggest).read_bytes()
    (path / biggest).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="missing or corrupt"):
        target.load(path)
    (path / biggest).write_bytes(data)

    static = np.load(path / names[0])  # the loss table's EMA (sources come first)
    corrupt = static.copy()
    corrupt[-1] = np.nan
    np.save(path / names[0], corrupt)
    with pytest.raises(ValueError, match="'ema' holds non-finite"):
        target.load(path)
    np.save(path / names[0], static)
    assert_states_equal(target.state_dict(), before)

    other = Reweighter(domains=np.zeros(N, dtype=np.int64), sources=[LossPriority()])
    with pytest.raises(ValueError):
        other.load(path)
    target.load(path)  # the intact directory loads
    assert_states_equal(target.state_dict(), rw.state_dict())


def test_loss_priority_without_last_seen_steps_runs_the_same_and_saves(tmp_path: Path) -> None:
    """4 bytes per item less, the same draws, weights and state (but the table's last-seen
    steps); the staleness metrics are left out; a checkpoint of the other kind is refused."""

    def build(track: bool, relax: Any = None) -> Reweighter:
        rng = np.random.default_rng(11)
        sources = [
            StaticImportance(rng.standard_normal(N).astype(np.float32), beta=0.5),
            DomainMixing(3.0),
            LossPriority(refresh_every=3, track_last_seen=track, relax_steps=relax),
        ]
        return Reweighter(
            domains=rng.integers(0, K, N), sources=sources, seed=4, total_steps=50, infinite=True
        )

    with pytest.raises(ValueError, match="keep track_last_seen=True"):
        build(False, relax=50)
    tracked, compact = build(True), build(False)
    assert (
        compact.sources[-1].table.memory_bytes() == tracked.sources[-1].table.memory_bytes() - 4 * N
    )
    draws = iter(tracked.sampler), iter(compact.sampler)
    for rw, it in zip((tracked, compact), draws, strict=True):
        train(rw, it, 9, np.random.default_rng(2))
    a, b = tracked.state_dict(), compact.state_dict()
    assert_states_equal(a["sampler"], b["sampler"])
    table_a, table_b = a["sources"]["loss_priority"], b["sources"]["loss_priority"]
    seen = table_a["last_seen"].numpy() >= 0
    assert table_b["last_seen"] is None
    np.testing.assert_array_equal(table_a["ema"].numpy()[seen], table_b["ema"].numpy()[seen])
    assert np.isnan(table_b["ema"].numpy()[~seen]).all()
    assert "loss_priority/staleness_mean" in tracked.metrics()
    assert "loss_priority/staleness_mean" not in compact.metrics()
    assert (
        compact.metrics()["loss_priority/coverage"] == tracked.metrics()["loss_priority/coverage"]
    )

    saved = compact.save(tmp_path / "compact")
    twin = build(False)
    twin.load(saved)
    assert_states_equal(twin.state_dict(), b)
    with pytest.raises(ValueError, match="track_last_seen=False, as the run saved"):
        build(True).load(saved)
