"""Tests for reweight.sampler.ReweightSampler through its public API only.

The sampling distribution is q(i) = π(d(i)) · a_i · b_i / Σ_{j∈d(i)} a_j · b_j. Most tests
compare the sampler against a brute-force recomputation of that formula from the factors the
test set, so they do not depend on the sum tree, the block layout or the kernels.
"""

from __future__ import annotations

import doctest
import itertools
import math
import os
import subprocess
import sys
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare
from torch.utils.data import DataLoader, DistributedSampler

import reweight.sampler
from reweight.sampler import ReweightSampler

# ---------------------------------------------------------------- helpers


def brute_force_q(
    domains: np.ndarray, pi: np.ndarray, static: np.ndarray, dynamic: np.ndarray
) -> np.ndarray:
    """q(i) from the formula, in float64, with zero-mass domains excluded and π renormalised."""
    k = pi.size
    w = static.astype(np.float64) * dynamic.astype(np.float64)
    mass = np.bincount(domains, weights=w, minlength=k)
    pi = np.asarray(pi, dtype=np.float64) / np.sum(pi)
    effective = np.where(mass > 0, pi, 0.0)
    effective = effective / effective.sum()
    safe = np.where(mass > 0, mass, 1.0)
    return np.where(mass[domains] > 0, effective[domains] * w / safe[domains], 0.0)


def effective_pi(domains: np.ndarray, pi: np.ndarray, w: np.ndarray) -> np.ndarray:
    mass = np.bincount(domains, weights=w, minlength=pi.size)
    effective = np.where(mass > 0, np.asarray(pi, dtype=np.float64), 0.0)
    return effective / effective.sum()


def all_q(sampler: ReweightSampler) -> np.ndarray:
    return sampler.probabilities(np.arange(sampler.num_items))


def take(sampler: ReweightSampler, n: int) -> list[int]:
    return list(itertools.islice(iter(sampler), n))


def chi2_pvalue(draws: np.ndarray, q: np.ndarray) -> float:
    counts = np.bincount(draws, minlength=q.size)
    assert counts[q == 0].sum() == 0, "an item with q = 0 was drawn"
    live = q > 0
    expected = q[live] * draws.size
    assert expected.min() >= 5, "test setup: too few expected draws per cell"
    return float(chisquare(counts[live], expected / expected.sum() * counts[live].sum()).pvalue)


def layout(kind: str, n: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dom = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])  # every domain non-empty
    if kind == "contiguous":
        return np.sort(dom)
    rng.shuffle(dom)
    return dom


# ---------------------------------------------------------------- basics


def test_doctests() -> None:
    result = doctest.testmod(reweight.sampler, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_is_a_distributed_sampler_so_lightning_does_not_wrap_it() -> None:
    sampler = ReweightSampler(10)
    assert isinstance(sampler, DistributedSampler)
    assert isinstance(sampler, torch.utils.data.Sampler)


def test_exported_from_package() -> None:
    import reweight

    assert reweight.ReweightSampler is ReweightSampler


def test_defaults_single_domain_uniform() -> None:
    sampler = ReweightSampler(8)
    np.testing.assert_allclose(all_q(sampler), np.full(8, 1 / 8), rtol=1e-12)
    assert sampler.domain_sizes.tolist() == [8]
    np.testing.assert_allclose(sampler.domain_probs, [1.0])
    np.testing.assert_allclose(sampler.natural_probs(), [1.0])
    assert sampler.item_domains([0, 7]).tolist() == [0, 0]
    assert len(sampler) == 8


@pytest.mark.parametrize("kind", ["contiguous", "interleaved"])
def test_domain_queries_and_default_natural_probs(kind: str) -> None:
    dom = layout(kind, 60, 4, seed=1)
    sampler = ReweightSampler(domains=dom)
    counts = np.bincount(dom, minlength=4)
    assert sampler.domain_sizes.tolist() == counts.tolist()
    np.testing.assert_allclose(sampler.natural_probs(), counts / 60, rtol=1e-12)
    np.testing.assert_allclose(sampler.domain_probs, counts / 60, rtol=1e-12)
    assert sampler.item_domains(np.arange(60)).tolist() == dom.tolist()
    # natural proportions and unit factors give the uniform distribution over items
    np.testing.assert_allclose(all_q(sampler), np.full(60, 1 / 60), rtol=1e-12)
    # accepts torch tensors too
    assert sampler.item_domains(torch.tensor([3, 5])).tolist() == dom[[3, 5]].tolist()


def test_num_items_with_matching_domains_and_explicit_num_domains() -> None:
    sampler = ReweightSampler(4, domains=[0, 1, 1, 0], num_domains=2)
    assert sampler.domain_sizes.tolist() == [2, 2]


@pytest.mark.parametrize("kind", ["contiguous", "interleaved"])
def test_probabilities_match_formula(kind: str) -> None:
    rng = np.random.default_rng(2)
    dom = layout(kind, 120, 5, seed=2)
    pi = np.array([1.0, 3.0, 0.5, 2.0, 0.0])  # relative weights, one domain switched off
    a = rng.uniform(0.1, 5.0, 120)
    sampler = ReweightSampler(domains=dom, domain_probs=pi, static_factor=a)
    b = np.ones(120)
    items = rng.choice(120, 30, replace=False)
    values = rng.uniform(0.0, 3.0, 30)
    sampler.update(items, values)
    b[items] = values
    expected = brute_force_q(dom, pi, a.astype(np.float32), b.astype(np.float32))
    np.testing.assert_allclose(all_q(sampler), expected, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(sampler.domain_probs, pi / pi.sum(), rtol=1e-12)


def test_update_duplicates_last_wins() -> None:
    sampler = ReweightSampler(4)
    sampler.update([1, 2, 1, 1], [5.0, 2.0, 0.0, 3.0])
    np.testing.assert_allclose(all_q(sampler), np.array([1, 3, 2, 1]) / 7, rtol=1e-12)
    sampler.update(np.array([0, 0]), np.array([4.0, 1.0]))
    np.testing.assert_allclose(all_q(sampler), np.array([1, 3, 2, 1]) / 7, rtol=1e-12)


def test_update_accepts_torch_tensors_and_empty() -> None:
    sampler = ReweightSampler(4)
    sampler.update(torch.tensor([3]), torch.tensor([3.0]))
    np.testing.assert_allclose(all_q(sampler), np.array([1, 1, 1, 3]) / 6, rtol=1e-12)
    before = all_q(sampler)
    sampler.update([], [])
    np.testing.assert_array_equal(all_q(sampler), before)


def test_static_and_dynamic_factors_multiply() -> None:
    sampler = ReweightSampler(4, static_factor=[1.0, 2.0, 3.0, 4.0])
    sampler.set_dynamic([4.0, 3.0, 2.0, 1.0])  # products 4, 6, 6, 4
    np.testing.assert_allclose(all_q(sampler), np.array([4, 6, 6, 4]) / 20, rtol=1e-12)
    sampler.set_static([2.0], items=[0])  # products 8, 6, 6, 4
    np.testing.assert_allclose(all_q(sampler), np.array([8, 6, 6, 4]) / 24, rtol=1e-12)
    sampler.update([3], [0.5])  # products 8, 6, 6, 2
    np.testing.assert_allclose(all_q(sampler), np.array([8, 6, 6, 2]) / 22, rtol=1e-12)
    sampler.set_static(np.ones(4))  # products 4, 3, 2, 0.5
    np.testing.assert_allclose(all_q(sampler), np.array([4, 3, 2, 0.5]) / 9.5, rtol=1e-12)


def test_set_domain_probs_normalises() -> None:
    sampler = ReweightSampler(domains=[0, 1, 1, 1])
    sampler.set_domain_probs([3, 1])
    np.testing.assert_allclose(sampler.domain_probs, [0.75, 0.25])
    np.testing.assert_allclose(all_q(sampler), [0.75, 0.25 / 3, 0.25 / 3, 0.25 / 3])
    sampler.set_domain_probs(torch.tensor([1.0, 1.0]))
    np.testing.assert_allclose(sampler.domain_probs, [0.5, 0.5])


@pytest.mark.parametrize("block_size", [2, 3, 16, 255])
@pytest.mark.parametrize("kind", ["contiguous", "interleaved"])
def test_block_sizes(block_size: int, kind: str) -> None:
    rng = np.random.default_rng(block_size)
    dom = layout(kind, 90, 3, seed=block_size)
    a = rng.uniform(0.2, 4.0, 90)
    pi = np.array([0.5, 0.25, 0.25])
    sampler = ReweightSampler(domains=dom, domain_probs=pi, static_factor=a, block_size=block_size)
    items = rng.choice(90, 15, replace=False)
    values = rng.uniform(0.0, 3.0, 15)
    sampler.update(items, values)
    b = np.ones(90)
    b[items] = values
    q = all_q(sampler)
    np.testing.assert_allclose(
        q, brute_force_q(dom, pi, a.astype(np.float32), b.astype(np.float32)), rtol=1e-9, atol=1e-15
    )
    assert chi2_pvalue(sampler.sample(100_000, seed=3), q) > 1e-3


def test_block_size_one_is_rejected_or_works() -> None:
    """block_size=1 passes validation ([1, 255]); building must then terminate and work.

    Run in a subprocess with a timeout so that a hang fails the test instead of the run.
    """
    code = (
        "import numpy as np\n"
        "from reweight.sampler import ReweightSampler\n"
        "try:\n"
        "    s = ReweightSampler(10, block_size=1, static_factor=np.arange(1, 11))\n"
        "except ValueError:\n"
        "    print('rejected')\n"
        "else:\n"
        "    q = s.probabilities(np.arange(10))\n"
        "    assert np.allclose(q, np.arange(1, 11) / 55), q\n"
        "    d = s.sample(20000, seed=0)\n"
        "    assert abs(np.mean(d == 9) - 10 / 55) < 0.02\n"
        "    print('ok')\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    try:
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=20, env=env
        )
    except subprocess.TimeoutExpired:
        pytest.fail("ReweightSampler(10, block_size=1) did not finish within 20 s (hang)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in {"ok", "rejected"}


def test_many_domains_interleaved() -> None:
    k, n = 300, 3000
    dom = layout("interleaved", n, k, seed=5)
    pi = np.random.default_rng(6).uniform(0.0, 1.0, k)
    sampler = ReweightSampler(domains=torch.from_numpy(dom), domain_probs=pi)
    assert sampler.item_domains(np.arange(n)).tolist() == dom.tolist()
    q = all_q(sampler)
    np.testing.assert_allclose(np.bincount(dom, weights=q, minlength=k), pi / pi.sum(), rtol=1e-9)
    sampler.update(np.arange(0, n, 7), np.full(len(range(0, n, 7)), 3.0))
    b = np.ones(n)
    b[::7] = 3.0
    np.testing.assert_allclose(all_q(sampler), brute_force_q(dom, pi, np.ones(n), b), rtol=1e-9)


@pytest.mark.parametrize(
    ("n", "k", "block_size"),
    [
        (200_000, 3, 16),  # ~67k items per domain: ranks past 2^16 (uint8 ids, 16 rank bits)
        (120_000, 300, 16),  # ~400 items per domain: ranks past 2^8 (uint16 ids, 8 rank bits)
        (20_000, 2, 3),  # odd block size
    ],
)
def test_item_lookup_of_large_interleaved_domains(n: int, k: int, block_size: int) -> None:
    """Updates reach exactly the items named, however far into its domain an item ranks."""
    rng = np.random.default_rng(n + k)
    dom = layout("interleaved", n, k, seed=k)
    sampler = ReweightSampler(domains=dom, block_size=block_size)
    assert sampler.item_domains(np.arange(n)).tolist() == dom.tolist()
    b = np.ones(n)
    for _ in range(3):
        items = rng.integers(0, n, 5000)
        values = rng.integers(1, 9, 5000) / 4
        sampler.update(items.astype(np.int32), values.astype(np.float32))  # other dtypes too
        b[items] = values  # numpy fancy assignment: the last duplicate wins as well
    q = all_q(sampler)
    np.testing.assert_allclose(q, brute_force_q(dom, sampler.natural_probs(), np.ones(n), b))
    probe = rng.integers(0, n, 20_000)
    np.testing.assert_array_equal(sampler.probabilities(probe), q[probe])
    draws = sampler.sample(100_000, seed=1)
    assert np.all(q[draws] > 0)
    # the heaviest items are drawn about as often as q says
    heavy = np.flatnonzero(b == b.max())
    expected = q[heavy].sum()
    assert abs(np.isin(draws, heavy).mean() - expected) < 5 * math.sqrt(expected / draws.size)


# ---------------------------------------------------------------- 1. empirical frequencies


@pytest.mark.parametrize("kind", ["contiguous", "interleaved"])
@pytest.mark.parametrize("through", ["sample", "iteration"])
def test_chi_square_frequencies_match_q(kind: str, through: str) -> None:
    n_items, k, n_draws = 200, 4, 200_000
    rng = np.random.default_rng(10)
    dom = layout(kind, n_items, k, seed=11)
    a = rng.uniform(0.2, 5.0, n_items)
    pi = [0.1, 0.4, 0.2, 0.3]
    sampler = ReweightSampler(
        domains=dom, domain_probs=pi, static_factor=a, num_samples=n_draws, seed=7
    )
    sampler.update(rng.choice(n_items, 20, replace=False), rng.uniform(0.5, 2.0, 20))
    q = all_q(sampler)
    assert q.sum() == pytest.approx(1.0, abs=1e-12)
    if through == "sample":
        draws = sampler.sample(n_draws, seed=123)
    else:
        draws = np.fromiter(iter(sampler), dtype=np.int64)
    assert draws.size == n_draws
    assert draws.min() >= 0 and draws.max() < n_items
    assert chi2_pvalue(draws, q) > 1e-3
    shares = np.bincount(dom[draws], minlength=k) / n_draws
    np.testing.assert_allclose(shares, pi, atol=5 * math.sqrt(0.25 / n_draws))


def test_zero_weight_items_are_never_drawn() -> None:
    dom = layout("interleaved", 100, 3, seed=3)
    sampler = ReweightSampler(domains=dom, num_samples=20_000)
    zeroed = np.flatnonzero(dom == 1)[::2]
    sampler.update(zeroed, np.zeros(zeroed.size))
    assert not np.isin(sampler.sample(20_000, seed=1), zeroed).any()
    assert not np.isin(np.fromiter(iter(sampler), dtype=np.int64), zeroed).any()


# ---------------------------------------------------------------- 2. domain shares


@pytest.mark.parametrize("kind", ["contiguous", "interleaved"])
def test_domain_shares_match_pi_with_skewed_items(kind: str) -> None:
    n_items, k, n_draws = 500, 5, 200_000
    rng = np.random.default_rng(20)
    dom = layout(kind, n_items, k, seed=21)
    a = np.exp(rng.normal(0.0, 4.0, n_items))  # factors spanning ~1e-7 .. 1e7 within domains
    # one item per domain dominates its domain
    for d in range(k):
        a[np.flatnonzero(dom == d)[0]] = 1e6
    pi = np.array([0.05, 0.4, 0.1, 0.25, 0.2])
    sampler = ReweightSampler(domains=dom, domain_probs=pi, static_factor=a)
    q = all_q(sampler)
    per_domain = np.bincount(dom, weights=q, minlength=k)
    np.testing.assert_allclose(per_domain, pi, rtol=1e-9)
    draws = sampler.sample(n_draws, seed=5)
    shares = np.bincount(dom[draws], minlength=k) / n_draws
    tolerance = 5 * np.sqrt(pi * (1 - pi) / n_draws)
    assert np.all(np.abs(shares - pi) < tolerance), (shares, pi)


def test_domain_shares_independent_of_domain_sizes() -> None:
    # a huge domain and a one-item domain with equal π get equal shares
    dom = np.r_[np.zeros(999, dtype=np.int64), 1]
    sampler = ReweightSampler(domains=dom, domain_probs=[1, 1])
    draws = sampler.sample(40_000, seed=0)
    assert abs(np.mean(draws == 999) - 0.5) < 5 * math.sqrt(0.25 / 40_000)


@pytest.mark.parametrize(("heavy", "light"), [(1e15, 1.0), (1e30, 1e-30)])
@pytest.mark.parametrize("light_first", [False, True])
def test_light_domain_next_to_heavy_domain_keeps_exact_probabilities(
    heavy: float, light: float, light_first: bool
) -> None:
    """One domain's items are far lighter than the other's; both domains get π = 1/2.

    q must still sum to 1 and the light domain's items must stay uniform within their domain
    (the formula normalises per domain, so the scale of another domain is irrelevant).
    """
    dom = np.repeat([0, 1], [100, 100])
    a = np.r_[np.full(100, heavy), np.full(100, light)]
    if light_first:
        dom = 1 - dom[::-1]
        a = a[::-1].copy()
    light_items = np.flatnonzero(a == light)
    sampler = ReweightSampler(domains=dom, static_factor=a, domain_probs=[0.5, 0.5])
    q = all_q(sampler)
    np.testing.assert_allclose(q, np.full(200, 0.5 / 100), rtol=1e-9)
    assert q.sum() == pytest.approx(1.0, abs=1e-9)
    draws = sampler.sample(200_000, seed=0)
    hits = draws[np.isin(draws, light_items)]
    assert abs(hits.size / draws.size - 0.5) < 5 * math.sqrt(0.25 / draws.size)
    counts = np.bincount(hits, minlength=200)[light_items]
    assert chisquare(counts).pvalue > 1e-3


@pytest.mark.parametrize("kind", ["contiguous", "interleaved"])
@pytest.mark.parametrize("block_size", [2, 16])
def test_large_light_domain_after_heavy_domains_draws_exactly(kind: str, block_size: int) -> None:
    """A domain 1e-60 times lighter than the mass before it spans many tree nodes: its draws
    take the exact walk, which must still follow q within the domain."""
    n_heavy, n_light = 3000, 2000
    dom = np.r_[np.zeros(n_heavy, dtype=np.int64), np.ones(n_light, dtype=np.int64)]
    rng = np.random.default_rng(block_size)
    a = np.r_[np.full(n_heavy, 1e30), rng.integers(1, 5, n_light) * 1e-30]
    if kind == "interleaved":
        order = rng.permutation(dom.size)
        dom, a = dom[order], a[order]
    sampler = ReweightSampler(
        domains=dom, static_factor=a, domain_probs=[0.5, 0.5], block_size=block_size
    )
    q = all_q(sampler)
    light = np.flatnonzero(dom == 1)
    assert q[light].sum() == pytest.approx(0.5, rel=1e-9)
    draws = sampler.sample(200_000, seed=3)
    hits = draws[dom[draws] == 1]
    assert abs(hits.size / draws.size - 0.5) < 5 * math.sqrt(0.25 / draws.size)
    counts = np.bincount(hits, minlength=dom.size)[light]
    expected = q[light] / q[light].sum() * hits.size
    assert chisquare(counts, expected).pvalue > 1e-3


# ---------------------------------------------------------------- 3. update lag


def _stale_count(rank: int, world: int, consumed_local: int, chunk: int) -> int:
    """This rank's draws still coming from the chunk generated before an update."""
    last = rank + (consumed_local - 1) * world  # last yielded global position
    generated_end = (last // chunk + 1) * chunk
    nxt = last + world
    return len(range(nxt, generated_end, world))


@pytest.mark.parametrize(("world", "rank"), [(1, 0), (2, 1), (3, 2), (3, 0)])
def test_zeroed_item_disappears_within_update_lag(world: int, rank: int) -> None:
    n_items, chunk, consumed = 50, 64, 37
    kwargs: dict[str, Any] = dict(
        chunk_size=chunk, num_samples=30_000, seed=3, rank=rank, world_size=world
    )
    sampler = ReweightSampler(n_items, **kwargs)
    twin = ReweightSampler(n_items, **kwargs)
    for s in (sampler, twin):
        s.update([7], [20.0])  # item 7 is frequent (q ≈ 0.29)
    assert sampler.update_lag == math.ceil(chunk / world)
    assert sampler.stats()["update_lag"] == sampler.update_lag
    it, twin_it = iter(sampler), iter(twin)
    first = [next(it) for _ in range(consumed)]
    assert first == [next(twin_it) for _ in range(consumed)]
    assert 7 in first
    sampler.update([7], [0.0])
    rest = list(it)
    twin_rest = list(twin_it)
    assert len(first) + len(rest) == len(sampler)
    # draws after the lag never show the zeroed item
    assert 7 not in rest[sampler.update_lag :]
    # precisely: the draws already generated keep the old weights, then the new ones apply
    stale = _stale_count(rank, world, consumed, chunk)
    assert stale <= sampler.update_lag
    assert rest[:stale] == twin_rest[:stale]
    assert 7 not in rest[stale:]
    assert 7 in twin_rest[stale:]


@pytest.mark.parametrize(("world", "rank"), [(1, 0), (2, 0), (4, 3)])
def test_boosted_item_dominates_within_update_lag(world: int, rank: int) -> None:
    n_items, chunk = 50, 100
    sampler = ReweightSampler(
        n_items, chunk_size=chunk, num_samples=20_000, seed=4, rank=rank, world_size=world
    )
    it = iter(sampler)
    before = [next(it) for _ in range(53)]
    assert before.count(11) < 10
    sampler.update([11], [1e6])  # q(11) = 1e6 / (1e6 + 49)
    lag = sampler.update_lag
    after = [next(it) for _ in range(lag + 2000)][lag:]
    assert np.mean(np.array(after) == 11) > 0.99


def test_update_lag_property() -> None:
    assert ReweightSampler(10, chunk_size=100).update_lag == 100
    assert ReweightSampler(10, chunk_size=100, rank=0, world_size=3).update_lag == 34
    assert ReweightSampler(10, chunk_size=1).update_lag == 1
    sampler = ReweightSampler(10, chunk_size=10)
    sampler.set_distributed(1, 4)
    assert sampler.update_lag == 3


def test_chunk_size_one_sees_updates_immediately() -> None:
    sampler = ReweightSampler(10, chunk_size=1, num_samples=1000)
    it = iter(sampler)
    [next(it) for _ in range(5)]
    sampler.update(np.arange(9), np.zeros(9))
    assert set(itertools.islice(it, 100)) == {9}


# ---------------------------------------------------------------- 4. determinism


def _make(seed: int, **kw: Any) -> ReweightSampler:
    dom = layout("interleaved", 300, 3, seed=30)
    a = np.random.default_rng(31).uniform(0.1, 3.0, 300)
    return ReweightSampler(
        domains=dom,
        domain_probs=[0.2, 0.5, 0.3],
        static_factor=a,
        seed=seed,
        chunk_size=128,
        num_samples=2000,
        **kw,
    )


def test_same_seed_same_stream_different_seed_different_stream() -> None:
    s1, s2, s3 = _make(5), _make(5), _make(6)
    a, b, c = list(s1), list(s2), list(s3)
    assert a == b
    assert a != c
    assert len(a) == 2000
    # also with identical update sequences mid-stream
    s1, s2 = _make(5), _make(5)
    i1, i2 = iter(s1), iter(s2)
    out1, out2 = [], []
    for step in range(10):
        out1 += [next(i1) for _ in range(77)]
        out2 += [next(i2) for _ in range(77)]
        items = np.arange(step * 20, step * 20 + 20)
        s1.update(items, np.full(20, 0.1 * step))
        s2.update(items, np.full(20, 0.1 * step))
    assert out1 == out2


def test_sample_is_deterministic_and_leaves_the_stream_alone() -> None:
    s1, s2 = _make(1), _make(1)
    assert np.array_equal(s1.sample(500, seed=9), s1.sample(500, seed=9))
    assert not np.array_equal(s1.sample(500, seed=9), s1.sample(500, seed=10))
    i1, i2 = iter(s1), iter(s2)
    head1 = [next(i1) for _ in range(300)]
    head2 = [next(i2) for _ in range(300)]
    s1.sample(10_000, seed=3)
    assert head1 == head2
    assert list(i1) == list(i2)


def test_stream_does_not_use_global_rng() -> None:
    torch.manual_seed(0)
    np.random.seed(0)
    a = list(_make(2))
    torch.manual_seed(1)
    np.random.seed(1)
    b = list(_make(2))
    assert a == b


# ---------------------------------------------------------------- 5. state round trip


def _state_sampler(**kw: Any) -> ReweightSampler:
    dom = layout("interleaved", 400, 4, seed=40)
    a = np.random.default_rng(41).uniform(0.1, 3.0, 400)
    base: dict[str, Any] = dict(
        domains=dom,
        domain_probs=[0.1, 0.2, 0.3, 0.4],
        static_factor=a,
        seed=11,
        chunk_size=100,
        num_samples=1000,
    )
    base.update(kw)
    return ReweightSampler(**base)


def _same_updates(samplers: list[ReweightSampler], step: int) -> None:
    rng = np.random.default_rng(step)
    items = rng.choice(400, 25, replace=False)
    values = rng.uniform(0.0, 4.0, 25)
    for s in samplers:
        s.update(items, values)


@pytest.mark.parametrize(
    "kw", [{}, {"infinite": True}, {"rank": 1, "world_size": 2, "num_samples": 2000}]
)
def test_state_round_trip_mid_stream(kw: dict[str, Any]) -> None:
    original = _state_sampler(**kw)
    it = iter(original)
    head = [next(it) for _ in range(137)]  # not a multiple of chunk_size
    assert len(head) == 137
    original.update([1, 2, 3], [0.0, 5.0, 0.5])
    original.set_static([2.0, 0.25], items=[10, 20])
    original.set_domain_probs([0.4, 0.3, 0.2, 0.1])
    state = original.state_dict()

    restored = _state_sampler(**kw)
    restored.load_state_dict(state)
    np.testing.assert_array_equal(all_q(restored), all_q(original))
    np.testing.assert_array_equal(restored.domain_probs, original.domain_probs)
    assert restored.stats()["ess"] == pytest.approx(original.stats()["ess"], rel=1e-12)
    rit = iter(restored)

    cont_o = [next(it) for _ in range(150)]
    cont_r = [next(rit) for _ in range(150)]
    assert cont_o == cont_r
    for step in range(5):  # updates applied identically after the restore
        _same_updates([original, restored], step)
        cont_o = [next(it) for _ in range(61)]
        cont_r = [next(rit) for _ in range(61)]
        assert cont_o == cont_r
    if not kw.get("infinite"):
        assert list(it) == list(rit)
        # and the next epoch matches too
        assert list(original) == list(restored)
        assert original.epoch == restored.epoch == 1


def test_state_dict_is_a_pure_read_and_survives_torch_save(tmp_path: Any) -> None:
    sampler = _state_sampler()
    twin = _state_sampler()
    it, tit = iter(sampler), iter(twin)
    [next(it) for _ in range(250)]
    [next(tit) for _ in range(250)]
    state = sampler.state_dict()
    sampler.state_dict(consumed=120)
    torch.save(state, tmp_path / "s.pt")
    loaded = torch.load(tmp_path / "s.pt", weights_only=False)
    assert list(it) == list(tit)  # taking states did not move the stream
    restored = _state_sampler()
    restored.load_state_dict(loaded)
    np.testing.assert_array_equal(all_q(restored), all_q(sampler))


@pytest.mark.parametrize(("yielded", "consumed"), [(137, 100), (137, 50), (250, 137), (300, 0)])
def test_state_with_consumed_replays_prefetched_draws(yielded: int, consumed: int) -> None:
    original = _state_sampler()
    it = iter(original)
    head = [next(it) for _ in range(yielded)]
    # weights change after the prefetched draws were generated: the replay keeps the old draws
    original.update(np.arange(0, 400, 3), np.zeros(134))
    state = original.state_dict(consumed=consumed)
    restored = _state_sampler()
    restored.load_state_dict(state)
    rit = iter(restored)
    replay = [next(rit) for _ in range(yielded - consumed)]
    assert replay == head[consumed:]
    assert [next(rit) for _ in range(200)] == [next(it) for _ in range(200)]
    assert len(head) + 200 + len(list(it)) == 1000
    assert yielded + 200 + len(list(rit)) == 1000


def test_state_restore_across_world_sizes_of_one_global_sequence() -> None:
    """A state saved by rank 0 of 2 restores the global position for rank 1 too."""
    single = list(_state_sampler(num_samples=1000))
    r0 = _state_sampler(rank=0, world_size=2)
    it = iter(r0)
    [next(it) for _ in range(40)]  # global positions 0..79 used
    state = r0.state_dict()
    r1 = _state_sampler(rank=1, world_size=2)
    r1.load_state_dict(state)
    assert list(r1) == single[81::2]


@pytest.mark.parametrize(
    "other",
    [
        dict(domains=layout("interleaved", 401, 4, seed=40)),  # num_items
        dict(domains=np.roll(layout("interleaved", 400, 4, seed=40), 1)),  # domain assignment
        dict(domains=np.sort(layout("interleaved", 400, 4, seed=40))),  # same sizes, other layout
        dict(seed=12),
        dict(chunk_size=101),
        dict(num_samples=999),
    ],
)
def test_load_state_from_another_configuration_raises(other: dict[str, Any]) -> None:
    source = _state_sampler()
    take(source, 10)
    state = source.state_dict()
    if "domains" in other and len(other["domains"]) != 400:
        other = dict(other, static_factor=np.ones(len(other["domains"])))
    target = _state_sampler(**other)
    before = all_q(target)
    with pytest.raises(ValueError):
        target.load_state_dict(state)
    np.testing.assert_array_equal(all_q(target), before)


def test_load_state_rejects_garbage() -> None:
    sampler = _state_sampler()
    with pytest.raises(ValueError):
        sampler.load_state_dict({})
    state = sampler.state_dict()
    with pytest.raises(ValueError):
        sampler.load_state_dict(dict(state, version=999))


def test_restore_then_set_epoch_of_the_same_epoch_keeps_the_position() -> None:
    """Lightning restores the state, then calls set_epoch(current epoch) before iterating."""
    original = _state_sampler()
    original.set_epoch(2)
    it = iter(original)
    [next(it) for _ in range(333)]
    state = original.state_dict()
    restored = _state_sampler()
    restored.load_state_dict(state)
    assert restored.epoch == 2
    restored.set_epoch(2)
    assert list(restored) == list(it)


def test_state_saved_at_the_end_of_an_epoch() -> None:
    original = _state_sampler()
    assert len(list(original)) == 1000
    state = original.state_dict()
    restored = _state_sampler()
    restored.load_state_dict(state)
    assert list(restored) == list(original)  # both start epoch 1
    assert restored.epoch == original.epoch == 1


@settings(max_examples=40, deadline=None)
@given(
    chunk=st.integers(1, 40),
    yielded=st.integers(1, 120),
    data=st.data(),
)
def test_replay_property(chunk: int, yielded: int, data: Any) -> None:
    consumed = data.draw(st.integers(0, yielded))
    kw: dict[str, Any] = dict(seed=5, chunk_size=chunk, num_samples=200)
    original = ReweightSampler(30, **kw)
    it = iter(original)
    head = [next(it) for _ in range(yielded)]
    original.update([1, 2], [0.0, 9.0])
    restored = ReweightSampler(30, **kw)
    restored.load_state_dict(original.state_dict(consumed=consumed))
    assert list(restored) == head[consumed:] + list(it)


# ---------------------------------------------------------------- 6. shards


@pytest.mark.parametrize(
    ("world", "num_samples", "chunk"),
    [(2, 1000, 128), (2, 1000, 7), (3, 1000, 128), (3, 1001, 5), (4, 10, 3)],
)
def test_rank_shards_interleave_to_the_single_process_stream(
    world: int, num_samples: int, chunk: int
) -> None:
    dom = layout("interleaved", 200, 3, seed=60)
    a = np.random.default_rng(61).uniform(0.1, 3.0, 200)
    kw: dict[str, Any] = dict(
        domains=dom, domain_probs=[0.3, 0.3, 0.4], static_factor=a, seed=2, chunk_size=chunk
    )
    per_rank = math.ceil(num_samples / world)
    shards = []
    for r in range(world):
        s = ReweightSampler(num_samples=num_samples, rank=r, world_size=world, **kw)
        assert len(s) == per_rank
        shard = list(s)
        assert len(shard) == per_rank
        shards.append(shard)
    interleaved = [shards[p % world][p // world] for p in range(per_rank * world)]
    single = list(ReweightSampler(num_samples=num_samples, **kw))
    assert len(single) == num_samples
    assert interleaved[:num_samples] == single
    # the padding draws are the continuation of the same global sequence
    padded = list(ReweightSampler(num_samples=per_rank * world, **kw))
    assert interleaved == padded


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 30),
    chunk=st.integers(1, 50),
    world=st.integers(1, 5),
    num_samples=st.integers(1, 300),
)
def test_shard_property(n: int, chunk: int, world: int, num_samples: int) -> None:
    kw: dict[str, Any] = dict(seed=9, chunk_size=chunk)
    shards = [
        list(ReweightSampler(n, num_samples=num_samples, rank=r, world_size=world, **kw))
        for r in range(world)
    ]
    per_rank = math.ceil(num_samples / world)
    assert all(len(shard) == per_rank for shard in shards)
    interleaved = [shards[p % world][p // world] for p in range(per_rank * world)]
    assert interleaved == list(ReweightSampler(n, num_samples=per_rank * world, **kw))


def test_set_distributed_matches_constructor_arguments() -> None:
    kw: dict[str, Any] = dict(seed=3, chunk_size=16, num_samples=100)
    a = ReweightSampler(30, rank=1, world_size=3, **kw)
    b = ReweightSampler(30, **kw)
    b.set_distributed(1, 3)
    assert len(b) == 34
    assert list(a) == list(b)
    with pytest.raises(ValueError):
        b.set_distributed(3, 3)
    with pytest.raises(ValueError):
        b.set_distributed(0, 0)
    with pytest.raises(ValueError):
        ReweightSampler(30, rank=2, world_size=2)


def test_ranks_see_updates_identically() -> None:
    """Every rank applies the same updates at the same local step: shards still interleave."""
    world, steps = 2, 12
    kw: dict[str, Any] = dict(seed=8, chunk_size=32, num_samples=10_000)
    ranks = [ReweightSampler(100, rank=r, world_size=world, **kw) for r in range(world)]
    its = [iter(s) for s in ranks]
    out: list[list[int]] = [[] for _ in range(world)]
    for step in range(steps):
        for r in range(world):
            out[r] += [next(its[r]) for _ in range(16)]  # 32 global draws per step
        for s in ranks:
            s.update([step], [0.0])
    single = ReweightSampler(100, **kw)
    sit = iter(single)
    expected: list[int] = []
    for step in range(steps):
        expected += [next(sit) for _ in range(32)]
        single.update([step], [0.0])
    assert [out[p % 2][p // 2] for p in range(len(expected))] == expected


# ---------------------------------------------------------------- 7. large N


def _large_checks(sampler: ReweightSampler, dom_of: Any, n: int, pi: np.ndarray) -> None:
    updated = np.array([0, n - 1, 12_345, 2**24 - 7])  # distinct items
    b = np.array([0.0, 5.0, 2.0, 3.0])
    sampler.update(updated, b)
    draws = sampler.sample(50_000, seed=0)
    assert draws.min() >= 0 and draws.max() < n
    assert not np.any(draws == 0)
    assert sampler.probabilities([0])[0] == 0.0
    shares = np.bincount(dom_of(draws), minlength=pi.size) / draws.size
    np.testing.assert_allclose(shares, pi, atol=5 * math.sqrt(0.25 / draws.size))
    it = iter(sampler)
    head = [next(it) for _ in range(5000)]
    assert max(head) < n and min(head) >= 0
    for d in range(pi.size):
        items = np.flatnonzero(dom_of(np.arange(n)) == d)
        assert sampler.probabilities(items).sum() == pytest.approx(pi[d], rel=1e-9)
    # brute force q for the updated items and one untouched item per domain
    sizes = np.bincount(dom_of(np.arange(n)), minlength=pi.size)
    mass = sizes.astype(np.float64)
    np.add.at(mass, dom_of(updated), b - 1.0)
    probe = np.r_[updated, [1, n - 2]]
    w = np.r_[b, 1.0, 1.0]
    expected = pi[dom_of(probe)] * w / mass[dom_of(probe)]
    np.testing.assert_allclose(sampler.probabilities(probe), expected, rtol=1e-9)
    assert sampler.domain_sizes.tolist() == sizes.tolist()


def test_more_than_2_pow_24_items_contiguous() -> None:
    n = 2**24 + 1
    dom = (np.arange(n) >= 2**23).astype(np.int64)
    pi = np.array([0.3, 0.7])
    sampler = ReweightSampler(domains=dom, domain_probs=pi, num_samples=10_000)
    assert len(sampler) == 10_000
    _large_checks(sampler, lambda items: (np.asarray(items) >= 2**23).astype(np.int64), n, pi)
    assert sampler.memory_bytes() < 16 * n


@pytest.mark.slow
def test_more_than_2_pow_24_items_interleaved() -> None:
    n = 2**24 + 1
    dom = np.random.default_rng(0).integers(0, 3, n)
    pi = np.array([0.5, 0.2, 0.3])
    sampler = ReweightSampler(domains=dom, domain_probs=pi, num_samples=10_000)
    _large_checks(sampler, lambda items: dom[np.asarray(items)], n, pi)
    assert sampler.memory_bytes() < 24 * n


def test_memory_bytes_grows_with_n_and_stays_small() -> None:
    small, big = ReweightSampler(1000), ReweightSampler(100_000)
    assert 0 < small.memory_bytes() < big.memory_bytes()
    assert big.memory_bytes() < 16 * 100_000
    big.update([5], [2.0])  # the dynamic factor appears
    assert big.memory_bytes() < 16 * 100_000


# ---------------------------------------------------------------- 8. bad inputs


def _snapshot(sampler: ReweightSampler) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return all_q(sampler), sampler.domain_probs, sampler.sample(300, seed=1)


def _assert_unchanged(sampler: ReweightSampler, snap: tuple[np.ndarray, ...]) -> None:
    after = _snapshot(sampler)
    for x, y in zip(snap, after, strict=True):
        np.testing.assert_array_equal(x, y)


def _bad_target() -> ReweightSampler:
    s = ReweightSampler(
        domains=[0, 0, 1, 1, 2], domain_probs=[0.2, 0.3, 0.5], static_factor=[1, 2, 3, 4, 5]
    )
    s.update([0], [2.0])
    return s


@pytest.mark.parametrize(
    ("call", "exc"),
    [
        (lambda s: s.update([1], [float("nan")]), ValueError),
        (lambda s: s.update([1], [float("inf")]), ValueError),
        (lambda s: s.update([1, 2], [1.0, -0.5]), ValueError),
        (lambda s: s.update([1, 2], [1.0]), ValueError),
        (lambda s: s.update([5], [1.0]), IndexError),
        (lambda s: s.update([-1], [1.0]), IndexError),
        (lambda s: s.update([1.0], [1.0]), TypeError),
        (lambda s: s.update(np.arange(5), np.zeros(5)), ValueError),  # all weights zero
        (lambda s: s.update([0, 1, 0], [1.0, 1.0, -1.0]), ValueError),
        (lambda s: s.set_dynamic(np.zeros(5)), ValueError),
        (lambda s: s.set_dynamic(np.ones(4)), ValueError),
        (lambda s: s.set_dynamic([1, 1, float("nan"), 1, 1]), ValueError),
        (lambda s: s.set_static(np.zeros(5)), ValueError),
        (lambda s: s.set_static(np.ones(6)), ValueError),
        (lambda s: s.set_static([1, 1, 1, -1, 1]), ValueError),
        (lambda s: s.set_static([0.0, 0.0, 0.0, 0.0, 0.0], items=np.arange(5)), ValueError),
        (lambda s: s.set_static([1.0], items=[7]), IndexError),
        (lambda s: s.set_domain_probs([0, 0, 0]), ValueError),
        (lambda s: s.set_domain_probs([1, 1]), ValueError),
        (lambda s: s.set_domain_probs([1, -1, 1]), ValueError),
        (lambda s: s.set_domain_probs([1, float("nan"), 1]), ValueError),
        (lambda s: s.set_domain_probs([1, float("inf"), 1]), ValueError),
        (lambda s: s.probabilities([5]), IndexError),
        (lambda s: s.item_domains([-1]), IndexError),
    ],
)
def test_bad_input_raises_and_changes_nothing(call: Any, exc: type[Exception]) -> None:
    sampler = _bad_target()
    snap = _snapshot(sampler)
    with pytest.raises(exc):
        call(sampler)
    _assert_unchanged(sampler, snap)


def test_failed_update_before_any_dynamic_factor_changes_nothing() -> None:
    sampler = ReweightSampler(domains=[0, 1, 1])
    snap = _snapshot(sampler)
    with pytest.raises(ValueError):
        sampler.update([0, 1, 2], [0.0, 0.0, 0.0])
    _assert_unchanged(sampler, snap)
    assert sampler.stats()["ess"] == pytest.approx(3.0)


def test_domain_probs_only_on_zero_mass_domains_raises() -> None:
    sampler = ReweightSampler(domains=[0, 0, 1, 1], domain_probs=[1, 0])
    sampler.update([2, 3], [0.0, 0.0])  # domain 1 has no mass (π = 0 there anyway)
    snap = _snapshot(sampler)
    with pytest.raises(ValueError):
        sampler.set_domain_probs([0, 1])
    _assert_unchanged(sampler, snap)
    # zeroing domain 0 now would leave nothing with positive π and mass
    with pytest.raises(ValueError):
        sampler.update([0, 1], [0.0, 0.0])
    _assert_unchanged(sampler, snap)


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        (dict(domains=[0, 1, 2]), None),  # valid control
        (dict(domains=[0, 1, 2], num_domains=2), ValueError),  # id out of range
        (dict(domains=[0, -1, 1]), ValueError),
        (dict(domains=[0, 2, 2]), ValueError),  # domain 1 empty
        (dict(domains=[0, 1, 1], num_domains=3), ValueError),  # domain 2 empty
        (dict(domains=[0.0, 1.0]), TypeError),
        (dict(domains=[]), ValueError),
        (dict(num_items=4, domains=[0, 1, 1]), ValueError),
        (dict(), ValueError),
        (dict(num_items=0), ValueError),
        (dict(num_items=3, chunk_size=0), ValueError),
        (dict(num_items=3, chunk_size=-5), ValueError),
        (dict(num_items=3, num_samples=0), ValueError),
        (dict(num_items=3, static_factor=[1, 2]), ValueError),
        (dict(num_items=3, static_factor=[1, -2, 1]), ValueError),
        (dict(num_items=3, static_factor=[1, float("nan"), 1]), ValueError),
        (dict(num_items=3, static_factor=[0, 0, 0]), ValueError),
        (dict(domains=[0, 1], domain_probs=[1, 1, 1]), ValueError),
        (dict(domains=[0, 1], domain_probs=[0, 0]), ValueError),
        (dict(domains=[0, 1], domain_probs=[1, -1]), ValueError),
        (dict(num_items=3, rank=1), ValueError),  # world_size defaults to 1
    ],
)
def test_bad_constructor_arguments(kwargs: dict[str, Any], exc: type[Exception] | None) -> None:
    if exc is None:
        ReweightSampler(**kwargs)
        return
    with pytest.raises(exc) as info:
        ReweightSampler(**kwargs)
    assert str(info.value)  # a message, not a bare exception


def test_error_messages_name_the_problem() -> None:
    with pytest.raises(ValueError, match="1"):
        ReweightSampler(domains=[0, 2, 2])  # names the empty domain
    with pytest.raises(ValueError, match="chunk_size"):
        ReweightSampler(3, chunk_size=0)
    with pytest.raises(IndexError, match="7"):
        ReweightSampler(3).update([7], [1.0])


def test_values_beyond_float32_range_are_rejected_or_kept_finite() -> None:
    """1e39 is a finite float64 weight; the sampler must not turn it into inf/NaN silently."""
    sampler = ReweightSampler(10)
    try:
        sampler.update([3], [1e39])
    except ValueError:
        np.testing.assert_allclose(all_q(sampler), np.full(10, 0.1))
        return
    q = all_q(sampler)
    assert np.all(np.isfinite(q)), q
    assert q.sum() == pytest.approx(1.0)
    assert q[3] > 0.99


def test_tiny_positive_weights_do_not_silently_become_zero() -> None:
    """Weights that underflow float32 must not leave the sampler with nothing to draw.

    Either the change is refused (ValueError, state unchanged) or the items stay drawable.
    """
    sampler = ReweightSampler(3)
    try:
        sampler.update([0, 1, 2], [1e-50, 1e-50, 1e-50])
    except ValueError:
        np.testing.assert_allclose(all_q(sampler), np.full(3, 1 / 3))
        return
    q = all_q(sampler)
    assert np.all(np.isfinite(sampler.domain_probs)), sampler.domain_probs
    assert q.sum() == pytest.approx(1.0), q
    draws = sampler.sample(100, seed=0)
    assert draws.min() >= 0 and draws.max() < 3, draws


def test_tiny_positive_static_factors_are_accepted_or_rejected_clearly() -> None:
    """Every factor is positive (1e-50): either it works, or the error says why.

    The error must not claim that the weights are zero.
    """
    try:
        sampler = ReweightSampler(10, static_factor=np.full(10, 1e-50))
    except ValueError as error:
        assert "weight 0" not in str(error), str(error)
        return
    np.testing.assert_allclose(all_q(sampler), np.full(10, 0.1), rtol=1e-6)


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_stats_when_factor_products_leave_float32_range(scale: float) -> None:
    """a and b are each fine float32 values, but a·b = scale² is not: stats stay exact."""
    sampler = ReweightSampler(4, static_factor=[scale, 1.0, 1.0, 1.0])
    sampler.update([0], [scale])
    q = all_q(sampler)
    assert q.sum() == pytest.approx(1.0)
    direct = _direct_stats(q)
    stats = sampler.stats()
    for key in ("ess", "max_min_ratio", "max_prob"):
        assert stats[key] == pytest.approx(direct[key], rel=1e-6), key


# ---------------------------------------------------------------- 9. zero-mass domains


def test_zero_mass_domain_warns_once_is_excluded_and_comes_back() -> None:
    dom = layout("interleaved", 60, 3, seed=90)
    pi = np.array([0.5, 0.3, 0.2])
    sampler = ReweightSampler(domains=dom, domain_probs=pi)
    members = np.flatnonzero(dom == 1)
    with pytest.warns(RuntimeWarning) as record:
        sampler.update(members, np.zeros(members.size))
    assert len([w for w in record if issubclass(w.category, RuntimeWarning)]) == 1
    expected = np.array([0.5, 0.0, 0.2]) / 0.7
    np.testing.assert_allclose(sampler.domain_probs, expected, rtol=1e-12)
    np.testing.assert_allclose(sampler.stats()["domain_probs"], expected, rtol=1e-12)
    q = all_q(sampler)
    assert q.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(q[members] == 0)
    assert not np.isin(sampler.sample(5000, seed=0), members).any()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no second warning
        sampler.update([int(np.flatnonzero(dom == 0)[0])], [2.0])
        sampler.set_domain_probs([0.4, 0.4, 0.2])
        np.testing.assert_allclose(sampler.domain_probs, [2 / 3, 0, 1 / 3], rtol=1e-12)
        sampler.set_domain_probs(pi)
        # restoring mass to one item brings the domain back with its full π
        sampler.update(members[:1], [1.0])
    np.testing.assert_allclose(sampler.domain_probs, pi, rtol=1e-12)
    q = all_q(sampler)
    assert q[members[0]] == pytest.approx(0.3)
    assert np.all(q[members[1:]] == 0)
    draws = sampler.sample(5000, seed=0)
    assert abs(np.mean(draws == members[0]) - 0.3) < 0.03


def test_zero_mass_domain_through_static_and_set_dynamic() -> None:
    dom = np.array([0, 0, 1, 1, 2, 2])
    sampler = ReweightSampler(domains=dom, domain_probs=[1, 1, 2])
    with pytest.warns(RuntimeWarning):
        sampler.set_static([1, 1, 1, 1, 0, 0])
    np.testing.assert_allclose(sampler.domain_probs, [0.5, 0.5, 0.0])
    sampler.set_static(np.ones(6))
    np.testing.assert_allclose(sampler.domain_probs, [0.25, 0.25, 0.5])
    with pytest.warns(RuntimeWarning):
        sampler.set_dynamic([0, 0, 1, 1, 1, 1])
    np.testing.assert_allclose(sampler.domain_probs, [0.0, 1 / 3, 2 / 3])
    assert sampler.stats()["reachable_items"] == 4


def test_no_warning_for_zero_mass_domain_that_has_zero_probability() -> None:
    """Domain 1 is asked to have π = 0 and has no mass: nothing is excluded, nothing to warn."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        sampler = ReweightSampler(
            domains=[0, 0, 1, 1], static_factor=[1, 1, 0, 0], domain_probs=[1, 0]
        )
    np.testing.assert_allclose(sampler.domain_probs, [1.0, 0.0])


# ---------------------------------------------------------------- 10. epochs, infinite, len


def test_len_is_ceil_of_num_samples_over_world_size() -> None:
    assert len(ReweightSampler(10)) == 10
    assert len(ReweightSampler(10, num_samples=25)) == 25
    assert len(ReweightSampler(10, num_samples=25, rank=0, world_size=2)) == 13
    assert len(ReweightSampler(10, num_samples=25, rank=2, world_size=3)) == 9
    assert len(list(ReweightSampler(10, num_samples=25, rank=1, world_size=2))) == 13


def test_set_epoch_semantics() -> None:
    kw: dict[str, Any] = dict(num_samples=500, chunk_size=64, seed=1)
    sampler = ReweightSampler(40, **kw)
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch0 != epoch1
    sampler.set_epoch(0)  # a different epoch: restart from the beginning of epoch 0
    assert list(sampler) == epoch0
    sampler.set_epoch(3)
    it = iter(sampler)
    head = [next(it) for _ in range(123)]
    sampler.set_epoch(3)  # the same epoch keeps the position
    tail = list(iter(sampler))
    fresh = ReweightSampler(40, **kw)
    fresh.set_epoch(3)
    assert head + tail == list(fresh)
    assert sampler.epoch == 3


def test_iterating_after_exhaustion_starts_the_next_epoch() -> None:
    kw: dict[str, Any] = dict(num_samples=300, chunk_size=50, seed=2)
    auto = ReweightSampler(40, **kw)
    first = list(auto)
    second = list(auto)
    assert auto.epoch == 1
    manual = ReweightSampler(40, **kw)
    manual.set_epoch(1)
    assert second == list(manual)
    assert first != second
    assert len(first) == len(second) == 300
    # Lightning's order: set_epoch(next) then iterate, after the epoch was exhausted
    auto.set_epoch(2)
    third = list(auto)
    manual.set_epoch(2)
    assert third == list(manual)


def test_exhausted_iterator_stays_exhausted_until_iter_is_called() -> None:
    sampler = ReweightSampler(5, num_samples=7)
    it = iter(sampler)
    assert len(list(it)) == 7
    assert list(it) == []
    assert len(list(sampler)) == 7


def test_infinite_mode() -> None:
    sampler = ReweightSampler(20, infinite=True, num_samples=50, chunk_size=16, seed=4)
    with pytest.raises(TypeError):
        len(sampler)
    draws = take(sampler, 1000)
    assert len(draws) == 1000
    assert set(draws) <= set(range(20))
    again = ReweightSampler(20, infinite=True, num_samples=50, chunk_size=16, seed=4)
    assert take(again, 1000) == draws
    sampler.update([0], [0.0])
    assert 0 not in take(sampler, 2000)[sampler.update_lag :]


def test_works_as_a_dataloader_sampler() -> None:
    data = torch.arange(30)
    kw: dict[str, Any] = dict(num_samples=64, seed=5, chunk_size=16)
    sampler = ReweightSampler(30, **kw)
    loader = DataLoader(data, sampler=sampler, batch_size=8)
    assert len(loader) == 8
    batches = [b.tolist() for b in loader]
    assert list(itertools.chain(*batches)) == list(ReweightSampler(30, **kw))


def test_set_epoch_rejects_negative_epochs() -> None:
    sampler = ReweightSampler(10)
    with pytest.raises(ValueError, match="epoch"):
        sampler.set_epoch(-1)
    with pytest.raises(ValueError, match="epoch"):
        sampler.align_epoch(-1)
    assert sampler.epoch == 0


def test_align_epoch_renames_the_epoch_under_way() -> None:
    """After align_epoch(e), set_epoch(e) keeps the position and set_epoch(e + j) starts the
    stream's epoch (current + j): the caller's numbering is shifted, not the stream."""
    kw: dict[str, Any] = dict(num_samples=300, chunk_size=64, seed=3)
    reference = ReweightSampler(40, **kw)
    epoch0, epoch1 = list(reference), list(reference)
    sampler = ReweightSampler(40, **kw)
    it = iter(sampler)
    head = [next(it) for _ in range(100)]
    sampler.align_epoch(4)
    assert (sampler.epoch, sampler.epoch_offset, sampler.draws_yielded) == (0, 4, 100)
    sampler.set_epoch(4)  # the epoch under way: position kept
    assert head + list(iter(sampler)) == epoch0
    sampler.set_epoch(5)  # the caller's next epoch is the stream's epoch 1
    assert sampler.epoch == 1
    assert list(sampler) == epoch1
    sampler.set_epoch(0)  # below the offset: the caller restarted its count
    assert (sampler.epoch, sampler.epoch_offset) == (0, 0)
    assert list(sampler) == epoch0


def test_epoch_offset_survives_a_state_round_trip_and_old_states_load() -> None:
    kw: dict[str, Any] = dict(num_samples=300, chunk_size=64, seed=3)
    original = ReweightSampler(40, **kw)
    it = iter(original)
    [next(it) for _ in range(70)]
    original.align_epoch(2)
    state = original.state_dict()
    assert state["version"] == 2 and state["epoch_offset"] == 2
    restored = ReweightSampler(40, **kw)
    restored.load_state_dict(state)
    assert (restored.epoch, restored.epoch_offset) == (0, 2)
    restored.set_epoch(2)  # Lightning's epoch number for the epoch under way
    original.set_epoch(2)
    assert list(restored) == list(it)
    # a version-1 state (no epoch_offset) restores with offset 0
    old = {k: v for k, v in state.items() if k != "epoch_offset"}
    old["version"] = 1
    legacy = ReweightSampler(40, **kw)
    legacy.load_state_dict(old)
    assert (legacy.epoch, legacy.epoch_offset, legacy.draws_yielded) == (0, 0, 70)


def test_load_state_rejects_corrupt_factors() -> None:
    sampler = ReweightSampler(40, seed=3)
    state = sampler.state_dict()
    before = all_q(sampler)
    for bad in (-1.0, float("nan"), float("inf")):
        static = state["static"].clone()
        static[3] = bad
        with pytest.raises(ValueError, match="static"):
            sampler.load_state_dict(dict(state, static=static))
        np.testing.assert_array_equal(all_q(sampler), before)


# ---------------------------------------------------------------- 11. stats


def _direct_stats(q: np.ndarray) -> dict[str, float]:
    live = q[q > 0]
    return {
        "ess": 1.0 / np.sum(q**2),
        "entropy": float(-np.sum(live * np.log(live))),
        "max_min_ratio": float(live.max() / live.min()),
        "max_prob": float(live.max()),
        "reachable_items": int(live.size),
    }


@pytest.mark.parametrize("kind", ["contiguous", "interleaved"])
def test_stats_agree_with_probabilities(kind: str) -> None:
    n = 70
    rng = np.random.default_rng(110)
    dom = layout(kind, n, 4, seed=111)
    sampler = ReweightSampler(
        domains=dom, domain_probs=[0.1, 0.2, 0.3, 0.4], static_factor=rng.uniform(0.1, 4.0, n)
    )
    sampler.update(rng.choice(n, 10, replace=False), rng.uniform(0.5, 3.0, 10))
    q = all_q(sampler)
    direct = _direct_stats(q)
    stats = sampler.stats()
    expected_keys = {
        "ess",
        "ess_fraction",
        "entropy",
        "entropy_fraction",
        "max_min_ratio",
        "max_prob",
        "reachable_items",
        "domain_probs",
        "update_lag",
    }
    assert expected_keys <= set(stats)
    for key in ("ess", "entropy", "max_min_ratio", "max_prob"):
        assert stats[key] == pytest.approx(direct[key], rel=1e-6), key
    assert stats["ess_fraction"] == pytest.approx(direct["ess"] / n, rel=1e-6)
    assert stats["entropy_fraction"] == pytest.approx(direct["entropy"] / math.log(n), rel=1e-6)
    assert stats["reachable_items"] == n
    np.testing.assert_allclose(stats["domain_probs"], sampler.domain_probs)
    assert stats["update_lag"] == sampler.update_lag
    # stats is a pure read
    np.testing.assert_array_equal(all_q(sampler), q)


def test_stats_with_zero_weight_items() -> None:
    """Items with weight 0 are not reachable and do not enter max/min."""
    dom = np.array([0, 0, 0, 1, 1, 1, 1])
    sampler = ReweightSampler(domains=dom, static_factor=[1, 2, 3, 1, 1, 1, 1])
    sampler.update([0, 4], [0.0, 0.0])
    q = all_q(sampler)
    direct = _direct_stats(q)
    stats = sampler.stats()
    for key in ("ess", "entropy", "max_min_ratio", "max_prob"):
        assert stats[key] == pytest.approx(direct[key], rel=1e-6), key
    assert stats["reachable_items"] == direct["reachable_items"] == 5


def test_stats_emit_no_numpy_warnings_with_a_zero_mass_domain() -> None:
    """stats() is a read: it must not leak numpy RuntimeWarnings (e.g. 0 * inf)."""
    sampler = ReweightSampler(domains=[0, 0, 1, 1])
    with pytest.warns(RuntimeWarning, match="domain 1"):
        sampler.update([2, 3], [0.0, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats = sampler.stats()
    assert stats["max_min_ratio"] == pytest.approx(1.0)
    assert stats["reachable_items"] == 2


def test_stats_uniform() -> None:
    stats = ReweightSampler(16).stats()
    assert stats["ess"] == pytest.approx(16)
    assert stats["ess_fraction"] == pytest.approx(1.0)
    assert stats["entropy_fraction"] == pytest.approx(1.0)
    assert stats["max_min_ratio"] == pytest.approx(1.0)
    assert stats["max_prob"] == pytest.approx(1 / 16)


@pytest.mark.parametrize("kind", ["contiguous", "interleaved"])
@pytest.mark.parametrize("block_size", [2, 16])
def test_stats_stay_exact_between_updates(kind: str, block_size: int) -> None:
    """stats() caches per-group figures; updates between calls must never leave them stale."""
    n = 600
    rng = np.random.default_rng(block_size)
    dom = layout(kind, n, 5, seed=7)
    sampler = ReweightSampler(
        domains=dom, domain_probs=[0.1, 0.3, 0.2, 0.15, 0.25], block_size=block_size
    )
    for step in range(8):
        items = rng.integers(0, n, 40)
        values = rng.uniform(0.0, 10.0, 40) ** (step % 3 + 1)
        values[::7] = 0.0
        sampler.update(items, values)
        if step % 3 == 0:
            sampler.set_static(rng.uniform(0.5, 2.0, 10), items=rng.integers(0, n, 10))
        q = all_q(sampler)
        direct = _direct_stats(q)
        stats = sampler.stats()
        for key in ("ess", "entropy", "max_min_ratio", "max_prob"):
            assert stats[key] == pytest.approx(direct[key], rel=1e-9), (step, key)
        assert stats["reachable_items"] == direct["reachable_items"]


# ---------------------------------------------------------------- 12. property-based

# Factors are multiples of 1/8 up to 10 (exact in float32, ratios bounded), so the brute force
# recomputation is exact up to float64 summation order.
_factor = st.integers(0, 80).map(lambda k: k / 8)
_positive_factor = st.integers(1, 80).map(lambda k: k / 8)


@st.composite
def _scenario(draw: Any) -> dict[str, Any]:
    k = draw(st.integers(1, 5))
    n = draw(st.integers(k, 40))
    dom = np.array(
        draw(
            st.permutations(
                list(range(k))
                + draw(st.lists(st.integers(0, k - 1), min_size=n - k, max_size=n - k))
            )
        )
    )
    if draw(st.booleans()):
        dom = np.sort(dom)
    static = np.array(draw(st.lists(_positive_factor, min_size=n, max_size=n)))
    pi = np.array(draw(st.lists(st.integers(0, 10), min_size=k, max_size=k)), dtype=np.float64)
    if pi.sum() == 0:
        pi[0] = 1.0
    ops = draw(
        st.lists(
            st.one_of(
                st.tuples(
                    st.just("update"),
                    st.lists(st.tuples(st.integers(0, n - 1), _factor), min_size=1, max_size=8),
                ),
                st.tuples(
                    st.just("static"),
                    st.lists(st.tuples(st.integers(0, n - 1), _factor), min_size=1, max_size=8),
                ),
                st.tuples(st.just("dynamic"), st.lists(_factor, min_size=n, max_size=n)),
                st.tuples(st.just("pi"), st.lists(st.integers(0, 10), min_size=k, max_size=k)),
            ),
            max_size=8,
        )
    )
    return dict(k=k, n=n, dom=dom, static=static, pi=pi, ops=ops)


def _valid(dom: np.ndarray, pi: np.ndarray, static: np.ndarray, dynamic: np.ndarray) -> bool:
    mass = np.bincount(dom, weights=static * dynamic, minlength=pi.size)
    return bool(np.any((mass > 0) & (pi > 0)))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_scenario())
def test_probabilities_match_brute_force_under_random_updates(sc: dict[str, Any]) -> None:
    dom, pi, n = sc["dom"], sc["pi"], sc["n"]
    static, dynamic = sc["static"].copy(), np.ones(n)
    sampler = ReweightSampler(domains=dom, domain_probs=pi, static_factor=static)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for op, payload in sc["ops"]:
            new_static, new_dynamic, new_pi = static.copy(), dynamic.copy(), pi.copy()
            if op in ("update", "static"):
                target = new_dynamic if op == "update" else new_static
                for i, v in payload:  # last duplicate wins
                    target[i] = v
            elif op == "dynamic":
                new_dynamic = np.array(payload, dtype=np.float64)
            else:
                new_pi = np.array(payload, dtype=np.float64)
            ok = _valid(dom, new_pi, new_static, new_dynamic) and new_pi.sum() > 0
            before = all_q(sampler)

            def apply(op: str = op, payload: Any = payload) -> None:
                if op in ("update", "static"):
                    items = [i for i, _ in payload]
                    values = [v for _, v in payload]
                if op == "update":
                    sampler.update(items, values)
                elif op == "static":
                    sampler.set_static(values, items=items)
                elif op == "dynamic":
                    sampler.set_dynamic(payload)
                else:
                    sampler.set_domain_probs(payload)

            if ok:
                apply()
                static, dynamic, pi = new_static, new_dynamic, new_pi
            else:
                with pytest.raises(ValueError):
                    apply()
                np.testing.assert_array_equal(all_q(sampler), before)

            q = all_q(sampler)
            expected = brute_force_q(dom, pi, static, dynamic)
            eff = effective_pi(dom, pi, static * dynamic)
            assert q.sum() == pytest.approx(1.0, abs=1e-12)
            np.testing.assert_allclose(q, expected, rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(sampler.domain_probs, eff, rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(
                np.bincount(dom, weights=q, minlength=sc["k"]), eff, rtol=1e-12, atol=1e-15
            )
    q = all_q(sampler)
    np.testing.assert_allclose(q, brute_force_q(dom, pi, static, dynamic), rtol=1e-12, atol=1e-15)
    draws = sampler.sample(200, seed=0)
    assert np.all(q[draws] > 0)
    assert sampler.stats()["ess"] == pytest.approx(1.0 / np.sum(q**2), rel=1e-6)
