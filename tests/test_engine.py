"""Tests for reweight.engine: Reweighter with StaticImportance and DomainMixing sources."""

from __future__ import annotations

import doctest
import itertools
import math

import numpy as np
import pytest
import torch

import reweight.engine
from reweight import DomainMixing, Reweighter, StaticImportance
from reweight.weights import static_factor
from tests.state_compare import assert_states_equal

# Three imbalanced domains: 60 / 30 / 10 items, laid out contiguously.
SIZES = (60, 30, 10)
DOMAINS = np.repeat(np.arange(3), SIZES)
NAMES = ["web", "code", "math"]
N = int(sum(SIZES))
NATURAL = np.asarray(SIZES, dtype=np.float64) / N
PI = np.array([0.2, 0.3, 0.5])


def _rw(**kwargs: object) -> Reweighter:
    return Reweighter(domains=DOMAINS, domain_names=NAMES, **kwargs)  # type: ignore[arg-type]


def _batch(index: object) -> dict[str, torch.Tensor]:
    return {"index": torch.as_tensor(index, dtype=torch.int64)}


def _take(iterator: object, n: int) -> list[int]:
    return list(itertools.islice(iterator, n))  # type: ignore[call-overload]


def test_doctests() -> None:
    result = doctest.testmod(reweight.engine)
    assert result.attempted > 0
    assert result.failed == 0


# ---------------------------------------------------------------- reduce basics


def test_reduce_without_weighting_is_plain_mean() -> None:
    rw = _rw()
    losses = torch.tensor([1.0, 2.0, 3.0, 6.0])
    out = rw.reduce(losses, _batch([0, 61, 95, 99]))
    assert torch.allclose(out, losses.mean())
    assert torch.equal(
        rw.importance_ratios(torch.tensor([0, 99])), torch.ones(2, dtype=torch.float64)
    )


def test_reduce_keeps_gradient_through_losses() -> None:
    rw = _rw(sources=[DomainMixing(PI, mode="weight")])
    losses = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    rw.reduce(losses, _batch([0, 60, 90])).backward()
    assert losses.grad is not None and torch.isfinite(losses.grad).all()


def test_reduce_requires_index() -> None:
    rw = _rw()
    with pytest.raises(ValueError, match="IndexedDataset"):
        rw.reduce(torch.ones(2), {"x": torch.zeros(2)})
    with pytest.raises(ValueError, match="IndexedDataset"):
        rw.reduce(torch.ones(2), (torch.zeros(2), torch.zeros(2)))


def test_reduce_length_mismatch_raises() -> None:
    rw = _rw()
    with pytest.raises(ValueError, match="reduction='none'"):
        rw.reduce(torch.ones(3), _batch([0, 1]))
    with pytest.raises(ValueError):
        rw.reduce(torch.ones(2, 2), _batch([0, 1]))
    with pytest.raises(TypeError):
        rw.reduce([1.0, 2.0], _batch([0, 1]))  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("weighted", [False, True])
def test_non_finite_loss_raises_and_changes_nothing(bad: float, weighted: bool) -> None:
    rw = _rw(sources=[DomainMixing(PI, mode="weight")] if weighted else [], nonfinite="raise")
    rw.reduce(torch.ones(4), _batch([0, 1, 60, 90]))
    before = rw.state_dict()
    metrics_before = rw.metrics()
    with pytest.raises(ValueError, match="NaN or inf"):
        rw.reduce(torch.tensor([1.0, bad, 2.0]), _batch([2, 3, 91]))
    assert_states_equal(rw.state_dict(), before)
    assert rw.metrics() == metrics_before


# ---------------------------------------------------------------- domain weights


def test_domain_weights_weight_mode_ratio_and_reduce() -> None:
    rw = _rw(sources=[DomainMixing(PI, mode="weight")])
    idx = np.arange(N)
    expected = PI[DOMAINS] / NATURAL[DOMAINS]
    np.testing.assert_allclose(rw.importance_ratios(idx).numpy(), expected, rtol=1e-12)
    # The sampler keeps drawing domains in their natural proportions.
    np.testing.assert_allclose(rw.sampler.domain_probs, NATURAL, rtol=1e-12)

    gen = torch.Generator().manual_seed(0)
    index = torch.tensor([0, 5, 61, 62, 95, 99, 40])
    losses = torch.rand(index.numel(), generator=gen, dtype=torch.float64)
    w = torch.from_numpy(expected[index.numpy()])
    want = (w * losses).sum() / w.sum()
    got = rw.reduce(losses, _batch(index))
    assert torch.allclose(got, want, rtol=1e-10)
    m = rw.metrics()
    assert m["loss_weight/max"] == pytest.approx(float(w.max() * len(w) / w.sum()))
    assert 0 < m["loss_weight/ess_fraction"] <= 1


def test_domain_weights_by_name_mapping() -> None:
    rw = _rw(sources=[DomainMixing({"web": 1.0, "math": 1.0}, mode="sample")])
    np.testing.assert_allclose(rw.sampler.domain_probs, [0.5, 0.0, 0.5])
    with pytest.raises(ValueError, match="unknown domain"):
        _rw(sources=[DomainMixing({"nope": 1.0})])
    with pytest.raises(ValueError, match="one per domain"):
        _rw(sources=[DomainMixing([1.0, 2.0])])


def test_domain_weights_sample_mode() -> None:
    rw = _rw(sources=[DomainMixing(PI * 7, mode="sample")])  # normalised
    np.testing.assert_allclose(rw.sampler.domain_probs, PI, rtol=1e-12)
    np.testing.assert_array_equal(rw.importance_ratios(np.arange(N)).numpy(), np.ones(N))
    losses = torch.tensor([1.0, 2.0, 4.0])
    assert torch.allclose(rw.reduce(losses, _batch([0, 60, 90])), losses.mean())
    draws = rw.sampler.sample(20_000, seed=3)
    shares = np.bincount(DOMAINS[draws], minlength=3) / draws.size
    np.testing.assert_allclose(shares, PI, atol=0.015)


# ---------------------------------------------------------------- static weights


def _logw(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 2.0, N)


def test_static_sample_mode_probabilities() -> None:
    logw = _logw()
    beta, clip, floor = 0.5, 3.0, 0.2
    rw = _rw(sources=[StaticImportance(logw, beta=beta, clip=clip, floor=floor, mode="sample")])
    a = np.exp(beta * np.clip(logw, -clip, clip))
    a = a / a.max()
    a = np.maximum(a, floor * a.mean())
    q = rw.sampler.probabilities(np.arange(N))
    for d in range(3):
        members = d == DOMAINS
        want = NATURAL[d] * a[members] / a[members].sum()
        np.testing.assert_allclose(q[members], want, rtol=1e-5)
    # Sample mode: no loss correction.
    np.testing.assert_array_equal(rw.importance_ratios(np.arange(N)).numpy(), np.ones(N))
    # The floor actually bites for this data (otherwise the test would not test it).
    raw = np.exp(beta * np.clip(logw, -clip, clip))
    raw = raw / raw.max()
    assert (raw < floor * raw.mean()).any()


def test_static_sample_mode_with_domain_sampling() -> None:
    logw = _logw(1)
    rw = _rw(
        sources=[StaticImportance(logw, beta=0.5, mode="sample"), DomainMixing(PI, mode="sample")],
    )
    a = static_factor(logw, 0.5)
    q = rw.sampler.probabilities(np.arange(N))
    for d in range(3):
        members = d == DOMAINS
        np.testing.assert_allclose(q[members], PI[d] * a[members] / a[members].sum(), rtol=1e-5)
    assert q.sum() == pytest.approx(1.0)


def test_static_weight_mode_ratio() -> None:
    logw = _logw(2)
    rw = _rw(sources=[StaticImportance(logw, beta=1.0, mode="weight")])
    a = static_factor(logw, 1.0)
    q = rw.sampler.probabilities(np.arange(N))
    np.testing.assert_allclose(q, 1.0 / N, rtol=1e-12)  # drawn as if unweighted
    # p(i) keeps the natural domain mass and distributes it by a within the domain.
    p = np.empty(N)
    for d in range(3):
        members = d == DOMAINS
        p[members] = NATURAL[d] * a[members] / a[members].sum()
    ratio = rw.importance_ratios(np.arange(N)).numpy()
    np.testing.assert_allclose(ratio / ratio.sum(), (p / q) / (p / q).sum(), rtol=1e-5)


def test_static_weight_mode_is_unbiased_monte_carlo() -> None:
    """E over sampled batches of reduce() ≈ Σ_i p(i)·loss_i (self-normalised IS, big batches)."""
    logw = _logw(3)
    rw = _rw(
        sources=[
            StaticImportance(logw, beta=1.0, clip=2.0, mode="weight"),
            DomainMixing(PI, mode="weight"),
        ],
    )
    a = static_factor(logw, 1.0, clip=2.0)
    p = np.empty(N)
    for d in range(3):
        members = d == DOMAINS
        p[members] = PI[d] * a[members] / a[members].sum()
    per_item = np.random.default_rng(4).uniform(0.5, 3.0, N) + 2.0 * DOMAINS
    target = float(np.sum(p * per_item))
    unweighted = float(np.mean(per_item))
    assert abs(target - unweighted) / target > 0.2  # the correction matters

    loss_table = torch.from_numpy(per_item)
    estimates = []
    for b in range(200):
        idx = torch.from_numpy(rw.sampler.sample(256, seed=1000 + b))
        estimates.append(float(rw.reduce(loss_table[idx], _batch(idx))))
    assert np.mean(estimates) == pytest.approx(target, rel=0.03)


def test_static_weights_from_npy_path(tmp_path: object) -> None:
    from pathlib import Path

    logw = _logw(5)
    path = Path(str(tmp_path)) / "logw.npy"
    np.save(path, logw.astype(np.float32))
    from_path = _rw(sources=[StaticImportance(str(path), beta=0.5)])
    from_path_obj = _rw(sources=[StaticImportance(path, beta=0.5)])
    from_array = _rw(sources=[StaticImportance(logw.astype(np.float32), beta=0.5)])
    idx = np.arange(N)
    np.testing.assert_allclose(
        from_path.sampler.probabilities(idx), from_array.sampler.probabilities(idx)
    )
    np.testing.assert_allclose(
        from_path_obj.sampler.probabilities(idx), from_array.sampler.probabilities(idx)
    )
    with pytest.raises(FileNotFoundError):
        _rw(sources=[StaticImportance(str(path) + ".missing")])


def test_static_weights_from_tensor() -> None:
    logw = _logw(6)
    rw = _rw(sources=[StaticImportance(torch.from_numpy(logw), beta=0.5)])
    ref = _rw(sources=[StaticImportance(logw, beta=0.5)])
    idx = np.arange(N)
    np.testing.assert_allclose(rw.sampler.probabilities(idx), ref.sampler.probabilities(idx))


def test_unknown_mode_raises() -> None:
    with pytest.raises(ValueError, match="valid modes"):
        _rw(sources=[StaticImportance(np.zeros(N), mode="upweight")])
    with pytest.raises(ValueError, match="valid modes"):
        _rw(sources=[DomainMixing(PI, mode="both")])


def test_static_length_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="one per item"):
        _rw(sources=[StaticImportance(np.zeros(N - 1))])


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_static_nan_or_plus_inf_raises(bad: float) -> None:
    logw = np.zeros(N)
    logw[7] = bad
    with pytest.raises(ValueError, match=r"NaN or \+inf"):
        _rw(sources=[StaticImportance(logw)])


def test_static_minus_inf_excludes_items_in_sample_mode_only() -> None:
    """−inf log weights (what `python -m reweight.static weights --min-tokens` writes for too
    short documents) are never drawn; the other items keep their relative factors."""
    logw = np.linspace(-1.0, 1.0, N)
    excluded = np.arange(0, N, 5)
    logw[excluded] = -math.inf
    rw = _rw(sources=[StaticImportance(logw, clip=3.0)])
    drawn = rw.sampler.sample(20_000, seed=1)
    assert not np.isin(drawn, excluded).any()
    assert np.unique(drawn).size == N - excluded.size  # everything else is reachable
    for mode in ("weight", "proposal"):
        with pytest.raises(ValueError, match=r"-inf.*mode='sample'.*--min-tokens 0"):
            _rw(sources=[StaticImportance(logw, mode=mode)])
    with pytest.raises(ValueError, match="every one of the"):
        _rw(sources=[StaticImportance(np.full(N, -math.inf))])


# ---------------------------------------------------------------- state


def _consume(rw: Reweighter, it: object, batches: int, batch_size: int = 16) -> list[int]:
    seen: list[int] = []
    for _ in range(batches):
        idx = _take(it, batch_size)
        rw.reduce(torch.ones(len(idx)), _batch(idx))
        rw.step()
        seen += idx
    return seen


@pytest.mark.parametrize("prefetched", [0, 24])
def test_state_round_trip_continues_stream(prefetched: int) -> None:
    def build() -> Reweighter:  # sources hold per-run state: fresh ones for each Reweighter
        return _rw(
            sources=[
                StaticImportance(_logw(7), beta=0.5, mode="sample"),
                DomainMixing(PI, mode="weight"),
            ],
            seed=11,
            num_samples=1000,
        )

    rw = build()
    it = iter(rw.sampler)
    _consume(rw, it, 3)
    extra = _take(it, prefetched)  # drawn by a DataLoader's prefetch, not trained on yet
    state = rw.state_dict()
    assert state["global_step"] == 3
    assert state["sampler"]["stream"]["consumed"].tolist() == [48]
    assert state["sampler"]["stream"]["items"].tolist() == extra  # the draws in flight
    expected = extra + _take(it, 200)

    fresh = build()
    fresh.load_state_dict(state)
    assert fresh.global_step == 3
    assert _take(iter(fresh.sampler), len(expected)) == expected
    np.testing.assert_allclose(
        fresh.metrics()["domain/web/realised"], rw.metrics()["domain/web/realised"]
    )


def test_state_round_trip_across_epochs() -> None:
    kwargs = dict(seed=5, num_samples=40)
    rw = _rw(**kwargs)
    it = iter(rw.sampler)
    _consume(rw, it, 2)  # 32 of 40
    state = rw.state_dict()
    rest = list(it) + _take(iter(rw.sampler), 40)  # finish epoch 0, then epoch 1
    fresh = _rw(**kwargs)
    fresh.load_state_dict(state)
    got = list(iter(fresh.sampler)) + _take(iter(fresh.sampler), 40)
    assert got == rest


def test_state_dict_reads_do_not_mutate() -> None:
    rw = _rw(seed=1)
    it = iter(rw.sampler)
    _consume(rw, it, 1)
    _take(it, 5)
    s1 = rw.state_dict()
    assert_states_equal(rw.state_dict(), s1)
    assert s1["sampler"]["stream"]["items"].numel() == 5


def test_load_other_static_weights_raises() -> None:
    rw = _rw(sources=[StaticImportance(_logw(8), beta=0.5)])
    state = rw.state_dict()
    other = _rw(sources=[StaticImportance(_logw(9), beta=0.5)])
    with pytest.raises(ValueError, match="another configuration"):
        other.load_state_dict(state)
    no_static = _rw()
    with pytest.raises(ValueError, match="another configuration"):
        no_static.load_state_dict(state)


def test_load_other_domain_names_raises() -> None:
    state = _rw().state_dict()
    other = Reweighter(domains=DOMAINS, domain_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="another configuration"):
        other.load_state_dict(state)


def test_load_other_domain_weights_or_seed_raises() -> None:
    state = _rw(sources=[DomainMixing(PI)]).state_dict()
    with pytest.raises(ValueError, match="another configuration"):
        _rw(sources=[DomainMixing([1.0, 1.0, 1.0])]).load_state_dict(state)
    with pytest.raises(ValueError, match="another configuration"):
        _rw(sources=[DomainMixing(PI)], seed=99).load_state_dict(state)


def test_load_bad_version_raises() -> None:
    rw = _rw()
    state = dict(rw.state_dict())
    state["version"] = 999
    with pytest.raises(ValueError, match="version"):
        rw.load_state_dict(state)
    with pytest.raises(ValueError):
        rw.load_state_dict([])  # type: ignore[arg-type]


# ---------------------------------------------------------------- metrics


def test_metrics_keys_and_types() -> None:
    rw = _rw(
        sources=[
            StaticImportance(_logw(10), beta=0.5, mode="weight"),
            DomainMixing(PI, mode="sample"),
        ],
    )
    it = iter(rw.sampler)
    _consume(rw, it, 2)
    m = rw.metrics()
    for key in ("sampler/ess_fraction", "lag/draw_age_steps", "lag/prefetched_draws"):
        assert key in m
    for name in NAMES:
        for kind in ("target", "sampled", "realised"):
            assert f"domain/{name}/{kind}" in m
    assert all(type(v) is float for v in m.values()), {k: type(v) for k, v in m.items()}
    assert all(math.isfinite(v) for v in m.values())
    assert 0 < m["sampler/ess_fraction"] <= 1
    assert m["lag/draw_age_steps"] == 0.0  # drawn at the step that trained on it
    assert sum(m[f"domain/{n}/target"] for n in NAMES) == pytest.approx(1.0)
    assert sum(m[f"domain/{n}/realised"] for n in NAMES) == pytest.approx(1.0)
    for d, name in enumerate(NAMES):
        assert m[f"domain/{name}/target"] == pytest.approx(PI[d])
    # Reading metrics does not change them.
    assert rw.metrics() == m


def test_metrics_before_any_batch() -> None:
    m = _rw().metrics()
    assert all(type(v) is float for v in m.values())
    assert m["sampler/ess_fraction"] == pytest.approx(1.0)


def test_prefetched_draws() -> None:
    rw = _rw(seed=2)
    it = iter(rw.sampler)
    _consume(rw, it, 1)
    _take(it, 10)
    assert rw.sampler.draws_in_flight == 10
    assert rw.metrics()["lag/prefetched_draws"] == 10.0


def test_from_dataset() -> None:
    from reweight import IndexedDataset

    ds = IndexedDataset.concat({"a": list(range(5)), "b": list(range(3))})
    rw = Reweighter.from_dataset(ds, sources=[DomainMixing({"a": 1, "b": 1})])
    assert rw.domain_names == ["a", "b"]
    np.testing.assert_allclose(rw.sampler.domain_probs, [0.5, 0.5])
    assert Reweighter.from_dataset(IndexedDataset(list(range(4)))).sampler.num_items == 4
