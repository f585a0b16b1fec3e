"""Tests for reweight.sampler.ReweightSampler through its public API only.

The sampling distribution is q(i) = π(d(i)) · a_i · b_i / Σ_{j∈d(i)} a_j · b_j. Most tests
compare the sampler against a brute-force recomputation of that formula from the factors the
test set, so they do not depend on the sum tree, the block layout or the kernels.
"""

from __future__ import annotations

import copy
import doctest
import itertools
import math
import os
import subprocess
import sys
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare
from torch.utils.data import DataLoader, DistributedSampler

import reweight.sampler.sampler
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
    result = doctest.testmod(reweight.sampler.sampler, optionflags=doctest.ELLIPSIS)
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


# ---------------------------------------------------------------- 3. the draw stream: no lag


class _Reader:
    """Reads a sampler like a training loop does: a new iterator whenever the last one ends
    (a new epoch)."""

    def __init__(self, sampler: ReweightSampler) -> None:
        self.sampler = sampler
        self.it = iter(sampler)

    def take(self, n: int) -> list[int]:
        out: list[int] = []
        fresh = False
        while len(out) < n:
            try:
                out.append(next(self.it))
                fresh = False
            except StopIteration:
                assert not fresh, "a new iterator ended before yielding anything"
                self.it = iter(self.sampler)
                fresh = True
        return out


def _reference_items(
    ref: ReweightSampler, first_local: int, count: int, rank: int, world: int
) -> tuple[list[int], np.ndarray]:
    """Items and q of rank ``rank``'s local draws ``first_local ..`` (global positions
    ``world·j + rank``), each position drawn alone from the reference's current weights."""
    draws = [
        ref._draw_positions(world * j + rank, 1) for j in range(first_local, first_local + count)
    ]
    items = [int(item[0]) for item, _ in draws]
    return items, np.array([q[0] for _, q in draws])


_WORLD_RANKS = [(1, 0), (2, 1), (3, 2), (3, 0)]


def _lag_sampler(world: int, rank: int, **kw: Any) -> ReweightSampler:
    base: dict[str, Any] = dict(num_samples=60_000, seed=3, rank=rank, world_size=world)
    base.update(kw)
    return ReweightSampler(50, **base)


@pytest.mark.parametrize(("world", "rank"), _WORLD_RANKS)
def test_zeroed_item_never_appears_from_the_next_draw_on(world: int, rank: int) -> None:
    sampler = _lag_sampler(world, rank)
    twin = _lag_sampler(world, rank)
    for s in (sampler, twin):
        s.update([7], [20.0])  # item 7 is frequent: q = 20 / 69
    it, twin_it = iter(sampler), iter(twin)
    head = [next(it) for _ in range(37)]
    assert head == [next(twin_it) for _ in range(37)]
    assert 7 in head
    sampler.update([7], [0.0])
    assert 7 not in [next(it) for _ in range(10_000)]
    # without the update the twin keeps drawing item 7 at its rate (≈ 2,900 in 10,000)
    assert [next(twin_it) for _ in range(10_000)].count(7) > 2_000


@pytest.mark.parametrize(("world", "rank"), [(1, 0), (2, 0), (3, 1), (4, 3)])
def test_boosted_item_dominates_from_the_next_draw_on(world: int, rank: int) -> None:
    sampler = _lag_sampler(world, rank, seed=4)
    it = iter(sampler)
    before = [next(it) for _ in range(53)]
    assert before.count(11) < 10
    sampler.update([11], [1e6])  # q(11) = 1e6 / (1e6 + 49)
    after = [next(it) for _ in range(2_000)]
    assert after[:20] == [11] * 20
    assert np.mean(np.array(after) == 11) > 0.99


_EVEN = np.arange(0, 20, 2)  # ten items of domain 0 (the even items)

_WEIGHT_CHANGES: dict[str, tuple[Any, np.ndarray]] = {
    "update": (lambda s: s.update(_EVEN, np.zeros(_EVEN.size)), _EVEN),
    "set_static_items": (lambda s: s.set_static(np.zeros(_EVEN.size), items=_EVEN), _EVEN),
    "set_static": (lambda s: s.set_static(np.where(np.isin(np.arange(50), _EVEN), 0, 1)), _EVEN),
    "set_dynamic": (
        lambda s: s.set_dynamic(np.where(np.isin(np.arange(50), _EVEN), 0.0, 2.0)),
        _EVEN,
    ),
    "set_domain_probs": (lambda s: s.set_domain_probs([0.0, 1.0]), np.arange(0, 50, 2)),
}


@pytest.mark.parametrize("change", sorted(_WEIGHT_CHANGES))
@pytest.mark.parametrize(("world", "rank"), [(1, 0), (2, 1), (3, 2)])
def test_every_kind_of_weight_change_reaches_the_next_draw(
    change: str, world: int, rank: int
) -> None:
    apply, forbidden = _WEIGHT_CHANGES[change]
    sampler = ReweightSampler(
        domains=np.arange(50) % 2, num_samples=50_000, seed=5, rank=rank, world_size=world
    )
    it = iter(sampler)
    head = [next(it) for _ in range(40)]
    assert np.isin(head, forbidden).any()
    apply(sampler)
    assert np.all(sampler.probabilities(forbidden) == 0)
    assert not np.isin([next(it) for _ in range(10_000)], forbidden).any()


def _random_change(seed: int, n: int, k: int) -> Any:
    """One random weight change (it zeroes one item at most, so some mass always remains)."""
    rng = np.random.default_rng(seed)
    kind = seed % 5
    if kind == 0:
        items, values = rng.integers(0, n, 6), rng.uniform(0.0, 4.0, 6)
        values[0] = 0.0
        return lambda s: s.update(items, values)
    if kind == 1:
        items, values = rng.integers(0, n, 6), rng.uniform(0.1, 4.0, 6)
        return lambda s: s.set_static(values, items=items)
    if kind == 2:
        dynamic = rng.uniform(0.1, 4.0, n)
        return lambda s: s.set_dynamic(dynamic)
    if kind == 3:
        static = rng.uniform(0.1, 4.0, n)
        return lambda s: s.set_static(static)
    probs = rng.uniform(0.1, 1.0, k)
    return lambda s: s.set_domain_probs(probs)


@settings(max_examples=25, deadline=None)
@given(
    world=st.integers(1, 3),
    samples_per_rank=st.integers(5, 60),
    schedule=st.lists(
        st.tuples(st.integers(0, 40), st.integers(0, 2**32 - 1)), min_size=1, max_size=10
    ),
    tail=st.integers(1, 40),
)
def test_draws_come_from_the_weights_in_force_with_no_lag(
    world: int, samples_per_rank: int, schedule: list[tuple[int, int]], tail: int
) -> None:
    """Every rank's local draw j is global position world·j + rank drawn from the weights in
    force when it is handed out: a reference that draws each position from the same weights,
    after the same changes at the same points, gives the same items (epochs crossed)."""
    dom = layout("interleaved", 60, 3, seed=70)
    kw: dict[str, Any] = dict(domains=dom, domain_probs=[0.2, 0.3, 0.5], seed=21)
    ref = ReweightSampler(**kw)
    ranks = [
        ReweightSampler(num_samples=samples_per_rank * world, rank=r, world_size=world, **kw)
        for r in range(world)
    ]
    readers = [_Reader(s) for s in ranks]
    counter = 0
    for gap, change_seed in [*schedule, (tail, None)]:
        for r, reader in enumerate(readers):
            expected, _ = _reference_items(ref, counter, gap, r, world)
            assert reader.take(gap) == expected
        counter += gap
        if change_seed is not None:
            change = _random_change(change_seed, 60, 3)
            for s in [ref, *ranks]:
                change(s)
    assert all(s.draws_yielded == counter for s in ranks)
    assert all(s.epoch == counter // samples_per_rank for s in ranks)


# ---------------------------------------------------------------- 4. determinism


def _make(seed: int, **kw: Any) -> ReweightSampler:
    dom = layout("interleaved", 300, 3, seed=30)
    a = np.random.default_rng(31).uniform(0.1, 3.0, 300)
    return ReweightSampler(
        domains=dom,
        domain_probs=[0.2, 0.5, 0.3],
        static_factor=a,
        seed=seed,
        num_samples=2000,
        **kw,
    )


def test_same_seed_same_stream_different_seed_different_stream() -> None:
    s1, s2, s3 = _make(5), _make(5), _make(6)
    a, b, c = list(s1), list(s2), list(s3)
    assert a == b
    assert len(a) == 2000
    assert np.mean(np.array(a) != np.array(c)) > 0.9
    # also with identical update sequences mid-stream
    s1, s2, s3 = _make(5), _make(5), _make(6)
    i1, i2, i3 = iter(s1), iter(s2), iter(s3)
    out1, out2, out3 = [], [], []
    for step in range(10):
        out1 += [next(i1) for _ in range(77)]
        out2 += [next(i2) for _ in range(77)]
        out3 += [next(i3) for _ in range(77)]
        items = np.arange(step * 20, step * 20 + 20)
        for s in (s1, s2, s3):
            s.update(items, np.full(20, 0.1 * step))
    assert out1 == out2
    assert out1 != out3


def test_stream_depends_on_the_weights_not_on_how_they_were_reached() -> None:
    """The item at a position is a function of (seed, position, weights in force): after a
    detour through other weights and back, the stream is the plain one again."""
    plain, detour = _make(7, infinite=True), _make(7, infinite=True)
    it = iter(detour)
    head = [next(it) for _ in range(100)]
    detour.update([5, 6], [9.0, 0.0])
    detour.set_domain_probs([0.6, 0.2, 0.2])
    middle = [next(it) for _ in range(50)]
    detour.update([5, 6], [1.0, 1.0])  # back to the original weights
    detour.set_domain_probs([0.2, 0.5, 0.3])
    tail = [next(it) for _ in range(100)]
    expected = take(plain, 250)
    assert head == expected[:100]
    assert middle != expected[100:150]
    assert tail == expected[150:]


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


# ---------------------------------------------------------------- 5. draw records, replay


def _commit_global(
    ranks: list[ReweightSampler], handed: list[list[int]], start: int, size: int
) -> Any:
    """Every rank matches and commits the global batch of local draws ``start .. start+size``
    of every rank (rank-major); returns rank 0's match."""
    batch = np.concatenate([np.asarray(h[start : start + size], dtype=np.int64) for h in handed])
    rank_ids = np.repeat(np.arange(len(ranks)), size)
    matches = [s.match_draws(batch, rank_ids) for s in ranks]
    for s, match in zip(ranks, matches, strict=True):
        assert match is not None
        s.commit_draws(match)
    return matches[0]


@pytest.mark.parametrize("world", [1, 3])
def test_match_draws_gives_the_q_at_draw_time_and_commit_advances(world: int) -> None:
    dom = layout("interleaved", 80, 4, seed=71)
    a = np.random.default_rng(72).uniform(0.1, 3.0, 80)
    ranks = [
        ReweightSampler(
            domains=dom, static_factor=a, seed=22, num_samples=10_000, rank=r, world_size=world
        )
        for r in range(world)
    ]
    its = [iter(s) for s in ranks]
    rng = np.random.default_rng(0)
    drawn: list[list[int]] = [[] for _ in range(world)]
    q_then: list[list[float]] = [[] for _ in range(world)]
    clock_then: list[list[int]] = [[] for _ in range(world)]
    for step in range(6):
        for s in ranks:
            s.clock = 100 + step
        for r, (s, it) in enumerate(zip(ranks, its, strict=True)):
            for _ in range(5):
                item = next(it)
                drawn[r].append(item)
                q_then[r].append(float(s.probabilities([item])[0]))
                clock_then[r].append(100 + step)
        if step % 2:  # the clock also moves alone: draws are stamped when handed out
            items, values = rng.choice(80, 20, replace=False), rng.uniform(0.0, 5.0, 20)
            for s in ranks:
                s.update(items, values)
    assert all(s.draws_yielded == 30 and s.draws_in_flight == 0 for s in ranks)
    consumed = 0
    for size in (7, 11, 12):
        batch = np.concatenate([drawn[r][consumed : consumed + size] for r in range(world)])
        rank_ids = np.repeat(np.arange(world), size)
        expected_q = np.concatenate([q_then[r][consumed : consumed + size] for r in range(world)])
        expected_clock = np.concatenate(
            [clock_then[r][consumed : consumed + size] for r in range(world)]
        )
        # the weights moved since: the q now differs from the q at draw time
        assert not np.allclose(ranks[0].probabilities(batch), expected_q)
        for s in ranks:
            match = s.match_draws(batch, rank_ids)
            assert match is not None
            again = s.match_draws(batch, rank_ids)  # a pure read
            assert again is not None and np.array_equal(again.q, match.q)
            np.testing.assert_allclose(match.q, expected_q, rtol=1e-12)
            assert match.clock.tolist() == expected_clock.tolist()
            assert match.consumed.tolist() == [consumed + size] * world
            assert s.draws_consumed == (30 if consumed == 0 else consumed)  # untracked: handed
            s.commit_draws(match)
            assert s.draws_consumed == consumed + size
            assert s.draws_yielded == 30
            assert s.draws_in_flight == world * (30 - consumed - size)
        consumed += size
    assert consumed == 30


def test_match_draws_rejects_batches_not_from_the_stream() -> None:
    sampler = ReweightSampler(40, num_samples=100, seed=8)
    it = iter(sampler)
    handed = [next(it) for _ in range(10)]
    wrong = [(i + 1) % 40 for i in handed[:4]]
    assert sampler.match_draws(wrong, [0] * 4) is None
    assert sampler.match_draws(handed[:4], [1] * 4) is None  # rank outside the world
    assert sampler.match_draws([*handed, handed[0]], [0] * 11) is None  # more than handed out
    assert sampler.match_draws([], []) is None
    with pytest.raises(ValueError, match="ranks"):
        sampler.match_draws(handed[:3], [0, 0])
    assert (sampler.draws_yielded, sampler.draws_consumed, sampler.draws_in_flight) == (10, 10, 0)
    match = sampler.match_draws(handed[:4], [0] * 4)
    assert match is not None
    sampler.commit_draws(match)
    assert (sampler.draws_yielded, sampler.draws_consumed, sampler.draws_in_flight) == (10, 4, 6)


def test_new_iterator_replays_the_draws_not_committed() -> None:
    kw: dict[str, Any] = dict(num_samples=1000, seed=6)
    sampler, twin = ReweightSampler(40, **kw), ReweightSampler(40, **kw)
    it, twin_it = iter(sampler), iter(twin)
    handed = [next(it) for _ in range(30)]
    assert handed == [next(twin_it) for _ in range(30)]
    q_handed = sampler.match_draws(handed, [0] * 30).q
    _commit_global([sampler], [handed], 0, 12)
    assert (sampler.draws_yielded, sampler.draws_consumed, sampler.draws_in_flight) == (30, 12, 18)
    # the weights change before the restart: the replay keeps the items and q of the draws
    zeroed = np.unique(handed[12:])
    for s in (sampler, twin):
        s.update(zeroed, np.zeros(zeroed.size))
    replay_it = iter(sampler)
    assert list(it) == []  # the older iterator stopped
    replayed = [next(replay_it) for _ in range(18)]
    assert replayed == handed[12:]
    assert np.all(sampler.probabilities(replayed) == 0)
    assert sampler.draws_yielded == 30
    match = sampler.match_draws(replayed, [0] * 18)
    assert match is not None
    np.testing.assert_array_equal(match.q, q_handed[12:])
    # then it continues where the twin's first iterator goes on, from the new weights
    cont = [next(replay_it) for _ in range(300)]
    assert cont == [next(twin_it) for _ in range(300)]
    assert not np.isin(cont, zeroed).any()


def test_replay_without_commit_hands_out_the_same_draws_again() -> None:
    sampler = ReweightSampler(40, num_samples=1000, seed=6)
    it = iter(sampler)
    handed = [next(it) for _ in range(20)]
    _commit_global([sampler], [handed], 0, 5)
    first = take(sampler, 25)
    assert first[:15] == handed[5:]
    second = take(sampler, 25)  # nothing committed since: the same draws again
    assert second == first
    _commit_global([sampler], [handed[:5] + first], 5, 25)
    assert sampler.draws_consumed == 30
    third = take(sampler, 10)
    assert sampler.draws_yielded == 40
    reference = ReweightSampler(40, infinite=True, seed=6)
    assert handed[:5] + first + third == take(reference, 40)


def test_without_tracking_a_new_iterator_continues_after_the_last_draw() -> None:
    kw: dict[str, Any] = dict(num_samples=300, seed=6)
    sampler = ReweightSampler(40, **kw)
    it = iter(sampler)
    handed = [next(it) for _ in range(30)]
    assert (sampler.draws_yielded, sampler.draws_consumed, sampler.draws_in_flight) == (30, 30, 0)
    rest = list(iter(sampler))
    assert list(it) == []
    assert handed + rest == list(ReweightSampler(40, **kw))


def test_prefetch_at_the_end_of_an_epoch_is_replayed_not_lost() -> None:
    """A loader prefetched the whole epoch, training used 15 of 20 draws: the next iterator
    hands out the 5 others (still epoch 0's) and ends; the one after starts epoch 1."""
    kw: dict[str, Any] = dict(num_samples=20, seed=1)
    sampler = ReweightSampler(40, **kw)
    epoch0 = list(sampler)
    _commit_global([sampler], [epoch0], 0, 15)
    assert sampler.epoch == 1  # the next new draw is epoch 1's
    assert list(sampler) == epoch0[15:]
    _commit_global([sampler], [epoch0], 15, 5)
    epoch1 = list(sampler)
    reference = ReweightSampler(40, **kw)
    assert epoch0 == list(reference)
    assert epoch1 == list(reference)
    assert sampler.epoch == 2


# ---------------------------------------------------------------- 6. one global sequence


@pytest.mark.parametrize(
    ("world", "num_samples"), [(1, 999), (2, 1001), (3, 1000), (3, 1001), (4, 10), (4, 1003)]
)
def test_rank_shards_interleave_to_the_single_process_stream(world: int, num_samples: int) -> None:
    dom = layout("interleaved", 200, 3, seed=60)
    a = np.random.default_rng(61).uniform(0.1, 3.0, 200)
    kw: dict[str, Any] = dict(domains=dom, domain_probs=[0.3, 0.3, 0.4], static_factor=a, seed=2)
    per_rank = math.ceil(num_samples / world)
    samplers = [
        ReweightSampler(num_samples=num_samples, rank=r, world_size=world, **kw)
        for r in range(world)
    ]
    single = list(ReweightSampler(num_samples=num_samples, **kw))
    assert len(single) == num_samples
    padded = ReweightSampler(num_samples=per_rank * world, **kw)
    for epoch in range(2):
        shards = [list(s) for s in samplers]
        assert all(len(shard) == per_rank for shard in shards)
        assert all(len(s) == per_rank and s.epoch == epoch + 1 for s in samplers)
        interleaved = [shards[p % world][p // world] for p in range(per_rank * world)]
        if epoch == 0:
            assert interleaved[:num_samples] == single
        # the padding draws are the continuation of the same global sequence
        assert interleaved == list(padded)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 30), world=st.integers(1, 5), num_samples=st.integers(1, 300))
def test_shard_property(n: int, world: int, num_samples: int) -> None:
    shards = [
        list(ReweightSampler(n, seed=9, num_samples=num_samples, rank=r, world_size=world))
        for r in range(world)
    ]
    per_rank = math.ceil(num_samples / world)
    assert all(len(shard) == per_rank for shard in shards)
    interleaved = [shards[p % world][p // world] for p in range(per_rank * world)]
    assert interleaved == take(ReweightSampler(n, seed=9, infinite=True), per_rank * world)


def test_set_distributed_matches_constructor_arguments() -> None:
    kw: dict[str, Any] = dict(seed=3, num_samples=100)
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
    assert (b.rank, b.num_replicas, len(b)) == (1, 3, 34)


def test_set_distributed_keeps_the_global_position() -> None:
    sampler = ReweightSampler(40, infinite=True, seed=1)
    head = take(sampler, 10)  # global positions 0..9
    sampler.set_distributed(0, 2)  # local counter 5 of 2 ranks: position 10 next
    assert sampler.draws_yielded == 5
    reference = take(ReweightSampler(40, infinite=True, seed=1), 20)
    assert head == reference[:10]
    assert take(sampler, 5) == reference[10:20:2]
    before = _observe(sampler)
    with pytest.raises(ValueError, match="ranks"):
        sampler.set_distributed(1, 3)  # global position 20 is not a multiple of 3
    assert (sampler.rank, sampler.num_replicas) == (0, 2)
    _assert_untouched(sampler, before)


@pytest.mark.parametrize("world", [2, 3, 4])
def test_ranks_see_updates_identically(world: int) -> None:
    """Every rank applies the same updates at the same local counters: the shards still
    interleave to one sequence, that of one process applying them at the same global counter."""
    kw: dict[str, Any] = dict(seed=8, num_samples=1003)
    ranks = [ReweightSampler(100, rank=r, world_size=world, **kw) for r in range(world)]
    readers = [_Reader(s) for s in ranks]
    single = ReweightSampler(100, seed=8, infinite=True)
    single_it = iter(single)
    rng = np.random.default_rng(world)
    out: list[list[int]] = [[] for _ in range(world)]
    expected: list[int] = []
    for step in range(12):
        gap = int(rng.integers(1, 60))  # crosses the ranks' epoch ends (ceil(1003 / world))
        for r in range(world):
            out[r] += readers[r].take(gap)
        expected += [next(single_it) for _ in range(world * gap)]
        for s in [*ranks, single]:
            s.update([step, 50 + step], [0.0, 30.0])
    assert [out[p % world][p // world] for p in range(len(expected))] == expected


# ---------------------------------------------------------------- 7. state


def _state_sampler(**kw: Any) -> ReweightSampler:
    dom = layout("interleaved", 400, 4, seed=40)
    a = np.random.default_rng(41).uniform(0.1, 3.0, 400)
    base: dict[str, Any] = dict(
        domains=dom, domain_probs=[0.1, 0.2, 0.3, 0.4], static_factor=a, seed=11, num_samples=1000
    )
    base.update(kw)
    return ReweightSampler(**base)


def _same_updates(samplers: list[ReweightSampler], step: int) -> None:
    rng = np.random.default_rng(step)
    items = rng.choice(400, 25, replace=False)
    values = rng.uniform(0.0, 4.0, 25)
    for s in samplers:
        s.update(items, values)


def _assert_same_state(a: Any, b: Any, path: str = "state") -> None:
    """Nested states are equal: same keys, same Python values, same tensors (dtype too)."""
    if isinstance(a, Mapping):
        assert isinstance(b, Mapping), path
        assert set(a) == set(b), (path, set(a) ^ set(b))
        for key in a:
            _assert_same_state(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), path
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a, b), path
    else:
        assert type(a) is type(b) and a == b, (path, a, b)


def _assert_untouched(sampler: ReweightSampler, before: tuple[Any, ...]) -> None:
    """Compares with ``_observe(sampler)`` taken before: state, counters, place, clock."""
    after = _observe(sampler)
    _assert_same_state(after[0], before[0])
    assert after[1:] == before[1:]


def _observe(sampler: ReweightSampler) -> tuple[Any, ...]:
    counters = (sampler.draws_yielded, sampler.draws_consumed, sampler.draws_in_flight)
    return (
        sampler.state_dict(),
        counters,
        (sampler.epoch, sampler.clock, sampler.rank, sampler.num_replicas),
        all_q(sampler).tolist(),
    )


def _in_flight_sampler(**kw: Any) -> tuple[ReweightSampler, Any, list[int]]:
    """A sampler with 57 draws handed out, 25 committed, and weights changed in between."""
    sampler = _state_sampler(**kw)
    it = iter(sampler)
    handed = [next(it) for _ in range(40)]
    match = sampler.match_draws(handed[:25], [sampler.rank] * 25)  # this rank's draws only
    assert match is not None
    sampler.commit_draws(match)
    sampler.update([1, 2, 3], [0.0, 5.0, 0.5])
    handed += [next(it) for _ in range(17)]
    return sampler, it, handed


@pytest.mark.parametrize("infinite", [False, True])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_state_round_trip_mid_stream(world: int, infinite: bool) -> None:
    """A state saved by rank 0 restores every rank: each first hands out again its draws in
    flight (same items, same draw-time q), then continues exactly like the original."""
    kw: dict[str, Any] = dict(num_samples=1000 * world, infinite=infinite)
    ranks = [_state_sampler(rank=r, world_size=world, **kw) for r in range(world)]
    its = [iter(s) for s in ranks]
    handed = [[next(it) for _ in range(40)] for it in its]
    _commit_global(ranks, handed, 0, 25)
    # then an uneven global batch: rank r trained on 2·r more (every rank's position is kept)
    consumed = [25 + 2 * r for r in range(world)]
    if world > 1:
        extra = np.concatenate(
            [np.asarray(handed[r][25 : consumed[r]], dtype=np.int64) for r in range(world)]
        )
        extra_ranks = np.repeat(np.arange(world), [2 * r for r in range(world)])
        for s in ranks:
            s.commit_draws(s.match_draws(extra, extra_ranks))
    for s in ranks:
        s.update([1, 2, 3], [0.0, 5.0, 0.5])
        s.set_static([2.0, 0.25], items=[10, 20])
        s.set_domain_probs([0.4, 0.3, 0.2, 0.1])
    for r, it in enumerate(its):
        handed[r] += [next(it) for _ in range(17)]  # 57 handed out
    state = ranks[0].state_dict()
    in_flight = np.concatenate([h[c:] for h, c in zip(handed, consumed, strict=True)])
    in_flight_ranks = np.repeat(np.arange(world), [57 - c for c in consumed])
    original_q = ranks[0].match_draws(in_flight, in_flight_ranks).q

    for r in range(world):
        restored = _state_sampler(rank=r, world_size=world, **kw)
        stale = iter(restored)
        next(stale)
        restored.load_state_dict(state)
        assert list(stale) == []  # iterators of the replaced stream stop
        np.testing.assert_array_equal(all_q(restored), all_q(ranks[r]))
        np.testing.assert_array_equal(restored.domain_probs, ranks[r].domain_probs)
        assert restored.stats()["ess"] == pytest.approx(ranks[r].stats()["ess"], rel=1e-12)
        assert (restored.draws_yielded, restored.draws_consumed) == (57, consumed[r])
        assert restored.draws_in_flight == ranks[r].draws_in_flight == in_flight.size
        match = restored.match_draws(in_flight, in_flight_ranks)
        assert match is not None
        np.testing.assert_array_equal(match.q, original_q)
        rit = iter(restored)
        assert [next(rit) for _ in range(57 - consumed[r])] == handed[r][consumed[r] :]
        assert restored.draws_yielded == 57
        for step in range(4):  # updates applied identically after the restore
            _same_updates([ranks[r], restored], step)
            assert [next(rit) for _ in range(61)] == [next(its[r]) for _ in range(61)]
        if not infinite:
            rest = list(rit)
            assert rest == list(its[r])
            assert len(rest) == 1000 - 57 - 4 * 61
            assert restored.epoch == ranks[r].epoch == 1


@pytest.mark.parametrize(
    "kw", [{}, {"infinite": True}, {"rank": 1, "world_size": 2, "num_samples": 2000}]
)
def test_state_round_trip_without_tracking(kw: dict[str, Any]) -> None:
    """Nobody commits: a restored twin's first iterator continues after the last draw handed
    out, exactly where the original's iterator goes on."""
    original = _state_sampler(**kw)
    it = iter(original)
    head = [next(it) for _ in range(137)]
    assert len(head) == 137
    original.update([1, 2, 3], [0.0, 5.0, 0.5])
    original.set_static([2.0, 0.25], items=[10, 20])
    original.set_domain_probs([0.4, 0.3, 0.2, 0.1])
    state = original.state_dict()
    assert state["stream"]["items"].numel() == 0  # nothing in flight

    restored = _state_sampler(**kw)
    restored.load_state_dict(state)
    np.testing.assert_array_equal(all_q(restored), all_q(original))
    assert (restored.draws_yielded, restored.draws_consumed, restored.draws_in_flight) == (
        137,
        137,
        0,
    )
    rit = iter(restored)
    assert [next(rit) for _ in range(150)] == [next(it) for _ in range(150)]
    for step in range(5):
        _same_updates([original, restored], step)
        assert [next(rit) for _ in range(61)] == [next(it) for _ in range(61)]
    if not kw.get("infinite"):
        assert list(it) == list(rit)
        assert list(original) == list(restored)  # and the next epoch
        assert original.epoch == restored.epoch == 2


def test_state_dict_is_a_pure_read_and_survives_torch_save(tmp_path: Any) -> None:
    sampler, it, handed = _in_flight_sampler()
    twin, twin_it, twin_handed = _in_flight_sampler()
    assert handed == twin_handed
    state = sampler.state_dict()
    _assert_same_state(sampler.state_dict(), state)
    snapshot = copy.deepcopy(state)
    assert state["version"] == 3
    torch.save(state, tmp_path / "s.pt")
    loaded = torch.load(tmp_path / "s.pt")  # weights_only: plain tensors and Python values
    _assert_same_state(loaded, state)
    rest, twin_rest = list(it), list(twin_it)
    assert rest == twin_rest  # taking states did not move the stream
    sampler.update([4, 5], [0.0, 3.0])  # the state does not alias the sampler's arrays
    _assert_same_state(state, snapshot)
    restored = _state_sampler()
    restored.load_state_dict(loaded)
    np.testing.assert_array_equal(all_q(restored), all_q(twin))
    assert list(restored) == handed[25:] + twin_rest


def test_restored_state_saves_the_same_state() -> None:
    sampler, _, _ = _in_flight_sampler()
    state = sampler.state_dict()
    restored = _state_sampler()
    restored.load_state_dict(state)
    _assert_same_state(restored.state_dict(), state)


def test_restore_then_set_epoch_keeps_the_position() -> None:
    """Lightning restores the state, then calls set_epoch(its epoch) before iterating."""
    original = _state_sampler()
    original.set_epoch(2)
    it = iter(original)
    [next(it) for _ in range(333)]
    state = original.state_dict()
    restored = _state_sampler()
    restored.load_state_dict(state)
    restored.set_epoch(2)
    assert restored.epoch == original.epoch == 0  # the stream's epoch, not the caller's
    assert list(restored) == list(it)


def test_state_saved_at_the_end_of_an_epoch() -> None:
    original = _state_sampler()
    assert len(list(original)) == 1000
    state = original.state_dict()
    restored = _state_sampler()
    restored.load_state_dict(state)
    assert restored.epoch == original.epoch == 1
    assert list(restored) == list(original)  # both hand out epoch 1
    # with 10 draws of epoch 0 in flight: they come back first, then epoch 1
    original, restored = _state_sampler(), _state_sampler()
    epoch0 = list(original)
    _commit_global([original], [epoch0], 0, 990)
    restored.load_state_dict(original.state_dict())
    assert list(restored) == epoch0[990:]
    _commit_global([restored], [epoch0], 990, 10)
    reference = _state_sampler()
    assert list(reference) == epoch0
    assert list(restored) == list(reference)


_OTHER_CONFIGURATIONS = [
    (dict(domains=layout("interleaved", 401, 4, seed=40), static_factor=None), "num_items"),
    (dict(domains=layout("interleaved", 400, 5, seed=40), domain_probs=None), "num_domains"),
    (dict(domains=np.roll(layout("interleaved", 400, 4, seed=40), 1)), "layout_hash"),
    (dict(domains=np.sort(layout("interleaved", 400, 4, seed=40))), "layout_hash"),
    (dict(block_size=8), "block_size"),
    (dict(seed=12), "seed"),
    (dict(num_samples=999), "num_samples"),
    (dict(infinite=True), "infinite"),
]


@pytest.mark.parametrize(("other", "field"), _OTHER_CONFIGURATIONS)
def test_load_state_from_another_configuration_raises(other: dict[str, Any], field: str) -> None:
    source, _, _ = _in_flight_sampler()
    state = source.state_dict()
    target = _state_sampler(**other)
    take(target, 10)
    before = _observe(target)
    with pytest.raises(ValueError, match=field):
        target.load_state_dict(state)
    _assert_untouched(target, before)


def test_load_state_with_another_world_size_raises() -> None:
    source = _state_sampler(rank=0, world_size=2, num_samples=2000)
    take(source, 10)
    state = source.state_dict()
    for rank, world in [(0, 1), (2, 3)]:
        target = _state_sampler(rank=rank, world_size=world, num_samples=2000)
        before = _observe(target)
        with pytest.raises(ValueError, match="ranks"):
            target.load_state_dict(state)
        _assert_untouched(target, before)
    single_state = _state_sampler(num_samples=2000).state_dict()
    target = _state_sampler(rank=1, world_size=2, num_samples=2000)
    with pytest.raises(ValueError, match="ranks"):
        target.load_state_dict(single_state)


def _truncations(state: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    for key in state:
        out.append({k: v for k, v in state.items() if k != key})
    for key in state["stream"]:
        out.append(dict(state, stream={k: v for k, v in state["stream"].items() if k != key}))
    return out


def test_load_state_rejects_garbage_and_truncated_states() -> None:
    sampler, it, _ = _in_flight_sampler()
    _, twin_it, _ = _in_flight_sampler()
    state = sampler.state_dict()
    before = _observe(sampler)
    garbage: list[Any] = [
        None,
        [],
        "state",
        3,
        {},
        {"version": 3},
        [("version", 3)],
        dict(state, version="3"),
        dict(state, version=None),
        dict(state, fingerprint=None),
        dict(state, fingerprint={}),
        dict(state, stream=None),
        dict(state, stream=[]),
        dict(state, stream={}),
        dict(state, static=None),
        dict(state, static="x"),
        dict(state, static=state["static"].tolist()),
        dict(state, dynamic="x"),
        dict(state, domain_probs=[1.0, 0.0, 0.0, 0.0]),
        dict(state, domain_probs=None),
        dict(state, stream=dict(state["stream"], consumed=[25])),
        dict(state, stream=dict(state["stream"], items=None)),
        dict(state, stream=dict(state["stream"], yielded=None)),
        dict(state, stream=dict(state["stream"], yielded="57")),
        dict(state, stream=dict(state["stream"], yielded=57.0)),
        *_truncations(state),
    ]
    for bad in garbage:
        with pytest.raises(ValueError):
            sampler.load_state_dict(bad)
        _assert_untouched(sampler, before)
    # a failed load leaves the live iterator alone
    assert list(it) == list(twin_it)


def _set(field: str, value: Any) -> Any:
    def corrupt(state: dict[str, Any]) -> dict[str, Any]:
        stream = dict(state["stream"])
        stream[field] = value(stream) if callable(value) else value
        return dict(state, stream=stream)

    return corrupt


def _edit(field: str, index: int, value: Any) -> Any:
    def edit(stream: dict[str, Any]) -> torch.Tensor:
        tensor = stream[field].clone()
        tensor[index] = value
        return tensor

    return _set(field, edit)


def _shorten_records(state: dict[str, Any]) -> dict[str, Any]:
    stream = dict(state["stream"])
    for key in ("items", "q", "clock"):
        stream[key] = stream[key][:-1]
    return dict(state, stream=stream)


_CORRUPT_STREAMS = {
    "item too large": (_edit("items", 0, 400), "items"),
    "negative item": (_edit("items", 3, -1), "items"),
    "float items": (_set("items", lambda s: s["items"].double()), "items"),
    "2-D items": (_set("items", lambda s: s["items"][None, :]), "items"),
    "negative consumed": (_edit("consumed", 1, -1), "consumed"),
    "consumed beyond yielded": (_edit("consumed", 0, 58), "consumed"),
    "consumed of 3 ranks": (
        _set("consumed", lambda s: torch.cat([s["consumed"]] * 2)[:3]),
        "consumed",
    ),
    "zero q": (_edit("q", 0, 0.0), "'q'"),
    "q above 1": (_edit("q", 5, 1.5), "'q'"),
    "negative q": (_edit("q", 5, -0.25), "'q'"),
    "NaN q": (_edit("q", 2, float("nan")), "'q'"),
    "infinite q": (_edit("q", 2, float("inf")), "'q'"),
    "short q": (_set("q", lambda s: s["q"][:-1]), "'q'"),
    "short clock": (_set("clock", lambda s: s["clock"][:-1]), "'clock'"),
    "long items": (_set("items", lambda s: torch.cat([s["items"], s["items"][:1]])), "'items'"),
    "negative clock": (_edit("clock", 0, -3), "'clock'"),
    "records start late": (_set("records_start", lambda s: s["records_start"] + 2), "records"),
    "records end early": (_shorten_records, "records"),
    "yielded beyond records": (_set("yielded", lambda s: s["yielded"] + 1), "records"),
    "negative yielded": (_set("yielded", -1), "yielded"),
    "float records_start": (_set("records_start", 1.5), "records_start"),
    "zero world_size": (_set("world_size", 0), "world_size"),
    "int tracking": (_set("tracking", 1), "tracking"),
    "version 2": (lambda state: dict(state, version=2), "version"),
}


@pytest.mark.parametrize("case", sorted(_CORRUPT_STREAMS))
def test_load_state_rejects_corrupt_stream_fields(case: str) -> None:
    corrupt, field = _CORRUPT_STREAMS[case]
    ranks = [_state_sampler(rank=r, world_size=2, num_samples=2000) for r in range(2)]
    its = [iter(s) for s in ranks]
    handed = [[next(it) for _ in range(40)] for it in its]
    _commit_global(ranks, handed, 0, 25)
    ranks[0].update([1, 2, 3], [0.0, 5.0, 0.5])
    [next(its[0]) for _ in range(17)]
    state = ranks[0].state_dict()
    assert state["stream"]["items"].numel() == 2 * (57 - 25)
    control = _state_sampler(rank=0, world_size=2, num_samples=2000)
    control.load_state_dict(state)  # the uncorrupted state loads
    target = _state_sampler(rank=0, world_size=2, num_samples=2000)
    take(target, 5)
    before = _observe(target)
    with pytest.raises(ValueError, match=field):
        target.load_state_dict(corrupt(state))
    _assert_untouched(target, before)


def _tensor_corruptions(value: torch.Tensor) -> st.SearchStrategy[Any]:
    size = value.numel()
    if value.is_floating_point():
        scalars: st.SearchStrategy[Any] = st.floats(width=32)
    else:
        scalars = st.integers(-3, 1000)

    def edit(args: tuple[int, Any]) -> torch.Tensor:
        out = value.clone()
        out[args[0] % size] = args[1]
        return out

    dtypes = [torch.int64, torch.int32, torch.float64, torch.float32, torch.bool]
    return st.one_of(
        st.tuples(st.integers(0, max(size - 1, 0)), scalars).map(edit)
        if size
        else st.just(value.clone()),
        st.integers(0, size + 2).map(lambda n: torch.cat([value, value])[:n].clone()),
        st.sampled_from(dtypes).map(lambda dtype: value.to(dtype)),
        st.just(value[None, :].clone()),
        st.just(value.sum()),
        st.lists(st.integers(-2, 500), max_size=80).map(
            lambda v: torch.tensor(v, dtype=value.dtype)
        ),
    )


_PLAIN_CORRUPTIONS = st.one_of(
    st.none(),
    st.text(max_size=3),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.just({}),
    st.lists(st.integers(-2, 5), max_size=3),
    st.just(torch.tensor([1, 1])),
    st.just(torch.zeros(3, dtype=torch.bfloat16)),
    st.just(np.array(["a"], dtype=object)),
)


def _corruptions(value: Any) -> st.SearchStrategy[Any]:
    """Values to put in place of a state field: near misses of the same type first, then
    anything."""
    if isinstance(value, torch.Tensor) and value.dim() == 1:
        near = _tensor_corruptions(value)
    elif isinstance(value, bool):
        near = st.booleans()
    elif isinstance(value, int):
        near = st.integers(value - 3, value + 3)
    else:
        return _PLAIN_CORRUPTIONS
    return st.one_of(near, near, _PLAIN_CORRUPTIONS)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_load_state_fuzz_raises_value_error_or_loads(data: Any) -> None:
    """Random fields of a real state (with draws in flight) corrupted: the load either works,
    and the sampler then draws valid items, or raises ValueError and changes nothing."""
    sampler, _, _ = _in_flight_sampler(rank=0, world_size=2, num_samples=2000)
    sampler.update([0], [2.0])  # a dynamic factor tensor in the state
    state = sampler.state_dict()
    target, _, _ = _in_flight_sampler(rank=1, world_size=2, num_samples=2000)
    before = _observe(target)
    bad: dict[str, Any] = copy.deepcopy(state)
    stream_keys = sorted(state["stream"])
    top_keys = sorted(state)
    for _ in range(data.draw(st.integers(1, 3))):
        # mostly the draw stream's fields: the configuration fields fail first and fast
        if data.draw(st.integers(0, 2)) and isinstance(bad["stream"], dict):
            holder, key = bad["stream"], data.draw(st.sampled_from(stream_keys))
        else:
            holder, key = bad, data.draw(st.sampled_from(top_keys))
        holder[key] = data.draw(_corruptions(holder.get(key)))
    try:
        target.load_state_dict(bad)
    except ValueError:
        _assert_untouched(target, before)
        return
    draws = take(target, 100)
    assert len(draws) > 0
    assert min(draws) >= 0 and max(draws) < target.num_items
    target.state_dict()


@pytest.mark.parametrize(
    "field", ["version", "seed", "num_samples", "infinite", "fingerprint.num_items"]
)
def test_load_state_rejects_tensors_in_scalar_fields(field: str) -> None:
    sampler = _state_sampler()
    state = sampler.state_dict()
    value = torch.tensor([1, 1])
    if field.startswith("fingerprint."):
        bad = dict(state, fingerprint=dict(state["fingerprint"], num_items=value))
    else:
        bad = dict(state, **{field: value})
    before = _observe(sampler)
    with pytest.raises(ValueError):
        sampler.load_state_dict(bad)
    _assert_untouched(sampler, before)


@pytest.mark.parametrize("field", ["static", "domain_probs", "stream.q"])
def test_load_state_rejects_tensors_of_unusual_dtypes(field: str) -> None:
    sampler, _, _ = _in_flight_sampler()
    state = sampler.state_dict()
    if field == "stream.q":
        bad = dict(state, stream=dict(state["stream"], q=state["stream"]["q"].bfloat16()))
    else:
        bad = dict(state, **{field: state[field].bfloat16()})
    before = _observe(sampler)
    with pytest.raises(ValueError):
        sampler.load_state_dict(bad)
    _assert_untouched(sampler, before)


_OPS = st.one_of(
    st.tuples(st.just("next"), st.integers(1, 12)),
    st.tuples(st.just("update"), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("iter"), st.just(0)),
    st.tuples(st.just("commit"), st.integers(1, 12)),
)


class _Trainer:
    """Drives a sampler like a training loop with a prefetching loader: draws (``next``),
    restarts its iterator, changes weights, commits what it trained on. Records what it saw."""

    def __init__(self, sampler: ReweightSampler) -> None:
        self.sampler = sampler
        self.reader = _Reader(sampler)
        self.by_counter: dict[int, int] = {}  # local counter -> item handed out there
        self.log: list[Any] = []
        self.tracking = False

    def copy_history(self, other: _Trainer) -> None:
        self.by_counter = dict(other.by_counter)
        self.tracking = other.tracking

    def run(self, op: str, arg: int) -> None:
        s = self.sampler
        if op == "next":
            for _ in range(arg):
                item = self.reader.take(1)[0]
                counter = s.draws_yielded - 1
                # a counter always hands out the same item (a replay never redraws)
                assert self.by_counter.setdefault(counter, item) == item
                self.log.append(("item", item))
        elif op == "iter":
            self.reader = _Reader(s)
            # a new iterator starts at the first draw not trained on (a replay if any)
            assert s.draws_yielded == s.draws_consumed
        elif op == "update":
            change = _random_change(arg, s.num_items, s.num_domains)
            change(s)
        else:
            # training uses the next draws it received and has not trained on
            start = s.draws_consumed if self.tracking else 0
            available = list(range(start, min(start + arg, s.draws_yielded)))
            if not available:
                return
            batch = [self.by_counter[c] for c in available]
            match = s.match_draws(batch, [0] * len(batch))
            assert match is not None
            s.commit_draws(match)
            self.tracking = True
            self.log.append(("commit", match.q.tolist(), s.draws_consumed, s.draws_in_flight))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(_OPS, max_size=30), data=st.data())
def test_restored_twin_continues_like_the_original(ops: list[tuple[str, int]], data: Any) -> None:
    cut = data.draw(st.integers(0, len(ops)))
    dom = layout("interleaved", 30, 3, seed=80)
    kw: dict[str, Any] = dict(domains=dom, num_samples=23, seed=33)
    original = _Trainer(ReweightSampler(**kw))
    original.run("next", 1)  # training reports what it uses from the first batch on
    original.run("commit", 1)
    for op, arg in ops[:cut]:
        original.run(op, arg)
    state = original.sampler.state_dict()
    twin = _Trainer(ReweightSampler(**kw))
    twin.sampler.load_state_dict(state)
    twin.copy_history(original)
    for trainer in (original, twin):  # the restarted run builds a new loader iterator
        trainer.run("iter", 0)
        trainer.log = []
    for op, arg in ops[cut:]:
        original.run(op, arg)
        twin.run(op, arg)
    original.run("next", 30)
    twin.run("next", 30)
    assert twin.log == original.log
    for name in ("draws_yielded", "draws_consumed", "draws_in_flight", "epoch"):
        assert getattr(twin.sampler, name) == getattr(original.sampler, name), name


# ---------------------------------------------------------------- 8. large N


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


# ---------------------------------------------------------------- 9. bad inputs


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
        (lambda s: s.update([5], [1.0]), ValueError),
        (lambda s: s.update([-1], [1.0]), ValueError),
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
        (lambda s: s.set_static([1.0], items=[7]), ValueError),
        (lambda s: s.set_domain_probs([0, 0, 0]), ValueError),
        (lambda s: s.set_domain_probs([1, 1]), ValueError),
        (lambda s: s.set_domain_probs([1, -1, 1]), ValueError),
        (lambda s: s.set_domain_probs([1, float("nan"), 1]), ValueError),
        (lambda s: s.set_domain_probs([1, float("inf"), 1]), ValueError),
        (lambda s: s.probabilities([5]), ValueError),
        (lambda s: s.item_domains([-1]), ValueError),
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
        (dict(num_items=3, chunk_size=64), TypeError),  # the chunked stream is gone
        (dict(num_items=3, block_size=1), ValueError),
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
    with pytest.raises(ValueError, match="block_size"):
        ReweightSampler(3, block_size=0)
    with pytest.raises(ValueError, match="7"):
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


# ---------------------------------------------------------------- 10. zero-mass domains


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


# ---------------------------------------------------------------- 11. epochs, infinite, len


def test_len_is_ceil_of_num_samples_over_world_size() -> None:
    assert len(ReweightSampler(10)) == 10
    assert len(ReweightSampler(10, num_samples=25)) == 25
    assert len(ReweightSampler(10, num_samples=25, rank=0, world_size=2)) == 13
    assert len(ReweightSampler(10, num_samples=25, rank=2, world_size=3)) == 9
    assert len(list(ReweightSampler(10, num_samples=25, rank=1, world_size=2))) == 13


def test_epochs_continue_one_stream() -> None:
    sampler = ReweightSampler(40, num_samples=300, seed=2)
    assert (sampler.epoch, sampler.draws_yielded, len(sampler)) == (0, 0, 300)
    first = list(sampler)
    assert (sampler.epoch, sampler.draws_yielded) == (1, 300)
    second = list(sampler)
    assert (sampler.epoch, sampler.draws_yielded) == (2, 600)
    assert len(first) == len(second) == 300
    assert first != second  # the next epoch continues the stream, it does not repeat it
    assert first + second == take(ReweightSampler(40, infinite=True, seed=2), 600)


def test_an_iterator_ends_at_the_end_of_the_epoch_it_starts_in() -> None:
    for world, rank in [(1, 0), (3, 2)]:
        sampler = ReweightSampler(40, num_samples=100, seed=2, rank=rank, world_size=world)
        per_rank = len(sampler)
        it = iter(sampler)
        head = [next(it) for _ in range(30)]
        rest = list(iter(sampler))  # a new iterator (nothing committed): from draw 30 on
        assert list(it) == []  # the older iterator stopped
        assert len(rest) == per_rank - 30
        assert sampler.epoch == 1
        reference = take(ReweightSampler(40, infinite=True, seed=2), world * per_rank)
        assert head + rest == reference[rank::world]


def test_set_epoch_does_not_change_the_stream() -> None:
    plain = ReweightSampler(40, num_samples=120, seed=1)
    expected = [list(plain) for _ in range(3)]
    sampler = ReweightSampler(40, num_samples=120, seed=1)
    for epoch, want in zip((5, 0, 0), expected, strict=True):  # any numbering, even backwards
        sampler.set_epoch(epoch)
        assert list(sampler) == want
    assert sampler.epoch == 3
    # mid-epoch, set_epoch keeps the position
    sampler = ReweightSampler(40, num_samples=120, seed=1)
    it = iter(sampler)
    head = [next(it) for _ in range(50)]
    sampler.set_epoch(7)
    assert sampler.epoch == 0
    assert head + list(iter(sampler)) == expected[0]


def test_exhausted_iterator_stays_exhausted_until_iter_is_called() -> None:
    sampler = ReweightSampler(5, num_samples=7)
    it = iter(sampler)
    assert len(list(it)) == 7
    assert list(it) == []
    assert len(list(sampler)) == 7


def test_infinite_mode() -> None:
    sampler = ReweightSampler(20, infinite=True, num_samples=50, seed=4)
    with pytest.raises(TypeError):
        len(sampler)
    it = iter(sampler)
    draws = [next(it) for _ in range(1000)]  # one iterator, never ends
    assert set(draws) <= set(range(20))
    assert sampler.epoch == 0
    assert sampler.draws_yielded == 1000
    again = ReweightSampler(20, infinite=True, num_samples=50, seed=4)
    assert take(again, 1000) == draws
    assert take(ReweightSampler(20, infinite=True, seed=5), 1000) != draws
    sampler.update([0], [0.0])
    assert 0 not in [next(it) for _ in range(2000)]
    assert sampler.epoch == 0


def test_works_as_a_dataloader_sampler() -> None:
    data = torch.arange(30)
    kw: dict[str, Any] = dict(num_samples=64, seed=5)
    sampler = ReweightSampler(30, **kw)
    loader = DataLoader(data, sampler=sampler, batch_size=8)
    assert len(loader) == 8
    reference = ReweightSampler(30, **kw)
    for _ in range(2):  # two epochs: the second continues the stream
        batches = [b.tolist() for b in loader]
        assert len(batches) == 8
        assert list(itertools.chain(*batches)) == list(reference)
    # an update between two batches reaches the next batch (no prefetch without workers)
    batches = iter(loader)
    next(batches)
    sampler.update(np.arange(10, 30), np.zeros(20))
    for batch in batches:
        assert batch.max() < 10


def test_set_epoch_rejects_negative_epochs() -> None:
    sampler = ReweightSampler(10)
    with pytest.raises(ValueError, match="epoch"):
        sampler.set_epoch(-1)
    assert sampler.epoch == 0


def test_the_chunked_stream_api_is_gone() -> None:
    with pytest.raises(TypeError):
        ReweightSampler(10, chunk_size=4)  # type: ignore[call-arg]
    sampler = ReweightSampler(10)
    for name in ("chunk_size", "update_lag", "align_epoch", "epoch_offset"):
        assert not hasattr(sampler, name), name
    with pytest.raises(TypeError):
        sampler.state_dict(consumed=0)  # type: ignore[call-arg]
    assert sampler.state_dict()["version"] == 3
    assert "update_lag" not in sampler.stats()


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


# ---------------------------------------------------------------- 12. stats


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
    }
    assert expected_keys <= set(stats)
    for key in ("ess", "entropy", "max_min_ratio", "max_prob"):
        assert stats[key] == pytest.approx(direct[key], rel=1e-6), key
    assert stats["ess_fraction"] == pytest.approx(direct["ess"] / n, rel=1e-6)
    assert stats["entropy_fraction"] == pytest.approx(direct["entropy"] / math.log(n), rel=1e-6)
    assert stats["reachable_items"] == n
    np.testing.assert_allclose(stats["domain_probs"], sampler.domain_probs)
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


# ---------------------------------------------------------------- 13. property-based

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


def test_the_excluded_domain_warning_comes_before_any_change() -> None:
    sampler = ReweightSampler(domains=[0, 0, 1, 1, 2, 2], domain_probs=[1.0, 0.0, 0.0])
    sampler.update([2, 3], [0.0, 0.0])  # domain 1 has no weight (and probability 0: no warning)
    before = sampler.state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeWarning, match="excluded from sampling"):
            sampler.set_domain_probs([0.5, 0.25, 0.25])
    assert torch.equal(sampler.state_dict()["domain_probs"], before["domain_probs"])


def test_the_excluded_domain_warning_of_a_restore_comes_before_any_change() -> None:
    source = ReweightSampler(domains=[0, 0, 1, 1, 2, 2], domain_probs=[0.5, 0.25, 0.25])
    with pytest.warns(RuntimeWarning, match="excluded from sampling"):
        source.update([2, 3], [0.0, 0.0])  # domain 1 keeps probability 0.25, no weight
    target = ReweightSampler(domains=[0, 0, 1, 1, 2, 2], domain_probs=[0.5, 0.25, 0.25])
    before = target.state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeWarning, match="excluded from sampling"):
            target.load_state_dict(source.state_dict())
    after = target.state_dict()
    for key in ("domain_probs", "static", "dynamic"):
        assert (before[key] is None and after[key] is None) or torch.equal(before[key], after[key])
