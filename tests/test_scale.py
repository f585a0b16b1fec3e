"""The chunked passes that keep a large build's memory flat give the whole-array results, bit
for bit: static factors, pairwise sums, factor rows written in place; a state is validated
chunk by chunk, refused whole or copied into place."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import reweight._checks
import reweight.sampler.tree
import reweight.weights.static
from reweight import Reweighter, ReweightSampler
from reweight.sources import LossPriority, StaticImportance
from reweight.weights.static import pairwise_sum, plan_static_factor, static_factor
from tests.state_compare import assert_states_equal

SMALL_CHUNK = 256  # > 128: NumPy's pairwise block, as pairwise_sum needs


@pytest.fixture
def small_chunks(monkeypatch: Any) -> None:
    """Chunks of 256 items, so that small arrays cross many chunk boundaries."""
    for module in (reweight._checks, reweight.weights.static, reweight.sampler.tree):
        monkeypatch.setattr(module, "CHUNK", SMALL_CHUNK)


def whole_array_factor(logw: np.ndarray, beta: float, clip: Any, floor: float) -> np.ndarray:
    """The static factor as computed on the whole array (the formula before chunking)."""
    logw = np.asarray(logw, dtype=np.float64)
    excluded = logw == -np.inf
    if excluded.any():
        out = np.zeros(logw.size)
        out[~excluded] = whole_array_factor(logw[~excluded], beta, clip, floor)
        return out
    if clip is not None:
        logw = np.clip(logw, -clip, clip)
    scaled = beta * logw
    factor = np.exp(scaled - scaled.max())
    return np.maximum(factor, floor * factor.mean()) if floor > 0 else factor


@pytest.mark.parametrize("size", [1, 7, 128, 129, 256, 257, 1000, 4099, 70_001])
def test_pairwise_sum_in_pieces_is_numpys_sum(small_chunks: None, size: int) -> None:
    x = np.exp(3 * np.random.default_rng(size).standard_normal(size))
    assert pairwise_sum(size, lambda lo, hi: x[lo:hi]) == np.sum(x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("beta", "clip", "floor"), [(1.0, None, 1e-6), (0.5, 2.0, 0.3)])
@pytest.mark.parametrize("excluded", [False, True])
def test_chunked_static_factor_equals_the_whole_array_formula(
    small_chunks: None, dtype: Any, beta: float, clip: Any, floor: float, excluded: bool
) -> None:
    logw = (2 * np.random.default_rng(1).standard_normal(5_003)).astype(dtype)
    if excluded:
        logw[np.random.default_rng(2).random(logw.size) < 0.3] = -np.inf
    expected = whole_array_factor(logw, beta, clip, floor)
    got = static_factor(logw, beta, clip, floor)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, expected)
    plan = plan_static_factor(logw, beta, clip, floor)
    pieces = [plan.part(slice(lo, min(lo + 999, logw.size))) for lo in range(0, logw.size, 999)]
    np.testing.assert_array_equal(np.concatenate(pieces), expected)


def test_a_npy_path_is_memory_mapped_and_gives_the_same_reweighter(
    small_chunks: None, tmp_path: Path
) -> None:
    logw = np.random.default_rng(3).standard_normal(3_001).astype(np.float32)
    np.save(tmp_path / "logw.npy", logw)
    domains = np.random.default_rng(4).integers(0, 3, logw.size)
    built = [
        Reweighter(domains=domains, sources=[StaticImportance(source, beta=0.7)])
        for source in (str(tmp_path / "logw.npy"), logw)
    ]
    source = built[0].sources[0]
    assert isinstance(source, StaticImportance)
    kept: Any = source._factor.log_weights
    while not isinstance(kept, np.memmap) and kept is not None:  # a view of the map, no copy
        kept = kept.base
    assert isinstance(kept, np.memmap)
    states = [rw.state_dict() for rw in built]
    assert states[0]["fingerprint"] == states[1]["fingerprint"]
    for key in ("static", "dynamic"):
        a, b = (s["sampler"][key] for s in states)
        assert (a is None and b is None) or bool((a == b).all())
    expected = whole_array_factor(logw, 0.7, None, 1e-6).astype(np.float32)
    np.testing.assert_array_equal(built[0].sampler.factors(range(logw.size))[0], expected)


@pytest.mark.parametrize("layout", ["contiguous", "interleaved"])
@pytest.mark.parametrize("row", ["static", "dynamic"])
def test_factor_rows_written_in_place_match_a_position_order_copy(
    small_chunks: None, layout: str, row: str
) -> None:
    rng = np.random.default_rng(5)
    n = 2_000
    domains = np.sort(rng.integers(0, 5, n)) if layout == "contiguous" else rng.integers(0, 5, n)
    values = rng.random(n) + 0.5
    values[rng.random(n) < 0.1] = 0.0
    samplers = [ReweightSampler(domains=domains, seed=1) for _ in range(3)]
    setter = "set_static" if row == "static" else "set_dynamic"
    getattr(samplers[0], setter)(values)
    getattr(samplers[1], setter)(values.astype(np.float32))
    if row == "static":
        samplers[2].set_static(lambda items: values[items])
    else:
        samplers[2].set_dynamic(values)
    tree = samplers[0]._tree
    # The reference: every item's value at its position, padding 0, as a flat position array.
    expected = np.zeros(tree._num_blocks * tree.block_size, dtype=np.float32)
    expected[tree._positions_of(np.arange(n))] = values.astype(np.float32)
    for sampler in samplers:
        state = sampler.state_dict()
        np.testing.assert_array_equal(state[row].numpy(), expected)
        np.testing.assert_array_equal(sampler.sample(500, seed=2), samplers[0].sample(500, seed=2))


def test_a_refused_row_changes_nothing(small_chunks: None) -> None:
    sampler = ReweightSampler(domains=np.repeat([0, 1], 600), seed=0)
    sampler.update([3], [2.0])
    before = sampler.state_dict()
    with pytest.raises(ValueError, match="weight 0"):
        sampler.set_dynamic(np.zeros(1_200))
    with pytest.raises(ValueError, match=r"items 256\.\.511.*negative"):
        sampler.set_static(lambda items: np.where(np.arange(1_200)[items] == 300, -1.0, 1.0))
    after = sampler.state_dict()
    for key in ("static", "dynamic"):
        np.testing.assert_array_equal(before[key].numpy(), after[key].numpy())


def test_float32_refresh_matches_float64_priorities(small_chunks: None) -> None:
    rw = Reweighter(1_000, sources=[LossPriority(refresh_every=1)], total_steps=10)
    source = rw.sources[0]
    assert isinstance(source, LossPriority)
    rng = np.random.default_rng(6)
    for _ in range(3):
        index = torch.from_numpy(rng.integers(0, 1_000, 64))
        rw.reduce(torch.from_numpy(rng.random(64)), {"index": index})
        rw.step()
    expected = source.table.all_priorities(rw.global_step, floor=source.floor).astype(np.float32)
    np.testing.assert_array_equal(rw.sampler.factors(range(1_000))[1], expected)


def _trained_reweighter() -> Reweighter:
    """Every per-item array in use: static and dynamic rows, a loss table (3 domains)."""
    n = 3_000
    rw = Reweighter(
        domains=np.repeat(np.arange(3), n // 3),
        sources=[
            StaticImportance(np.linspace(-1.0, 1.0, n), beta=0.5),
            LossPriority(refresh_every=2, mode="proposal"),
        ],
        total_steps=20,
        seed=1,
    )
    rng = np.random.default_rng(7)
    for _ in range(4):
        index = torch.from_numpy(rng.integers(0, n, 256))
        rw.reduce(torch.from_numpy(rng.random(256)) + 0.1, {"index": index})
        rw.step()
    return rw


# Each corrupts one entry past the first chunk (positions/items 256 onwards) of a large array.
DEEP_CORRUPTIONS = [
    (("sampler", "static"), 2_500, math.nan, "'static' factor has negative or non-finite"),
    (("sampler", "dynamic"), 1_700, -1.0, "'dynamic' factor has negative or non-finite"),
    (("sampler", "dynamic"), 2_999, math.inf, "'dynamic' factor has negative or non-finite"),
    (("sources", "loss_priority", "ema"), 2_900, math.nan, "'ema' holds non-finite values"),
    (("sources", "loss_priority", "last_seen"), 1_300, 10_000, "'last_seen' must lie in"),
]


@pytest.mark.parametrize(("path", "entry", "value", "message"), DEEP_CORRUPTIONS)
def test_a_corruption_past_the_first_chunk_is_refused_with_nothing_applied(
    small_chunks: None, path: tuple[str, ...], entry: int, value: float, message: str
) -> None:
    state = _trained_reweighter().state_dict()
    parent: Any = state
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = parent[path[-1]].clone()
    parent[path[-1]][entry] = value
    target = Reweighter(
        domains=np.repeat(np.arange(3), 1_000),
        sources=[
            StaticImportance(np.linspace(-1.0, 1.0, 3_000), beta=0.5),
            LossPriority(refresh_every=2, mode="proposal"),
        ],
        total_steps=20,
        seed=1,
    )
    before = target.state_dict()
    with pytest.raises(ValueError, match=message):
        target.load_state_dict(state)
    assert_states_equal(target.state_dict(), before)


def test_non_zero_padding_past_the_first_chunk_is_refused(small_chunks: None) -> None:
    sampler = ReweightSampler(domains=np.repeat([0, 1, 2], [700, 301, 1_000]), seed=0)
    state = sampler.state_dict()
    offsets = sampler._tree.layout.position_offsets
    padding = int(offsets[1]) + 301  # right after domain 1's items, before domain 2's block
    assert 256 < padding < int(offsets[2])
    static = state["static"].clone()
    assert static[padding] == 0
    static[padding] = 1.0
    twin = ReweightSampler(domains=np.repeat([0, 1, 2], [700, 301, 1_000]), seed=0)
    twin.update([5], [3.0])
    before = twin.state_dict()
    with pytest.raises(ValueError, match="padding"):
        twin.load_state_dict({**state, "static": static})
    assert_states_equal(twin.state_dict(), before)


def test_a_state_loads_in_place_from_a_memory_map_and_stays_a_snapshot(
    small_chunks: None, tmp_path: Path
) -> None:
    original = _trained_reweighter()
    saved = original.state_dict()
    torch.save(saved, tmp_path / "state.pt")
    twin = _trained_reweighter()
    twin.step()  # differs from the original now
    arrays = [twin.sampler._tree._factors, twin.sources[1].table._ema, twin.sources[1].table._last]
    twin.load_state_dict(torch.load(tmp_path / "state.pt", mmap=True, weights_only=False))
    kept = [twin.sampler._tree._factors, twin.sources[1].table._ema, twin.sources[1].table._last]
    assert all(a is b for a, b in zip(arrays, kept, strict=True))  # copied into place
    assert_states_equal(twin.state_dict(), saved)
    for rw in (original, twin):  # training goes on identically and leaves `saved` unchanged
        stream = iter(rw.sampler)
        items = [next(stream) for _ in range(64)]
        rw.reduce(torch.linspace(0.1, 2.0, 64), {"index": torch.tensor(items)})
        rw.step()
    assert_states_equal(twin.state_dict(), original.state_dict())
    assert_states_equal(saved, torch.load(tmp_path / "state.pt", weights_only=False))


def test_the_scale_benchmark_runs_and_reports_each_measure(tmp_path: Path) -> None:
    """benchmarks/scale.py --quick: both loss tables, both ways to save; the figures a closing
    note quotes are in the JSON and plausible (bytes per item from the arrays' sizes)."""
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    rows = {}
    for table in ("full", "compact"):
        command = [sys.executable, str(root / "benchmarks" / "scale.py"), "--quick", "--json"]
        command += ["--table", table, "--steps", "4", "--dir", str(tmp_path)]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr
        rows[table] = json.loads(done.stdout.strip().splitlines()[-1])["results"][0]
    full, compact = rows["full"], rows["compact"]
    assert full["bytes_per_item"] - compact["bytes_per_item"] == pytest.approx(4.0, abs=1e-6)
    assert 16.0 < full["bytes_per_item"] < 17.5
    for row in (full, compact):
        for key in ("build_peak_ratio", "step_peak_ratio", "files_save_peak_ratio"):
            assert math.isfinite(row[key]) and row[key] > 0
        assert row["files_bytes_per_item"] == pytest.approx(row["snapshot_bytes_per_item"], 1e-3)
        assert row["sample_draws_per_s"] > 0 and row["refresh_step_s"] > 0
    assert full["files_bytes_per_item"] - compact["files_bytes_per_item"] == pytest.approx(4, 1e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # inputs and states removed
