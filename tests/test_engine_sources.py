"""Reweighter with every source: in-batch loss weights, loss-table priorities, domain rules
(schedules, sampled at one rule and corrected to another, online), the importance correction
between them, guards and state."""

from __future__ import annotations

import datetime
import itertools
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from reweight import DomainMixing, InBatchWeights, LossPriority, Reweighter, StaticImportance
from reweight.mixing import Linear, cooldown, temperature_probs
from reweight.sources import Source
from reweight.weights import loss_weights
from tests.ranks import free_port
from tests.state_compare import assert_states_equal

SIZES = (60, 30, 10)
DOMAINS = np.repeat(np.arange(3), SIZES)
NAMES = ["web", "code", "math"]
N = int(sum(SIZES))


def _rw(**kwargs: object) -> Reweighter:
    return Reweighter(domains=DOMAINS, domain_names=NAMES, **kwargs)  # type: ignore[arg-type]


def _batch(index: object) -> dict[str, torch.Tensor]:
    return {"index": torch.as_tensor(index, dtype=torch.int64)}


def _logw() -> np.ndarray:
    return np.random.default_rng(3).normal(size=N)


# ---------------------------------------------------------------- in-batch weights


@pytest.mark.parametrize("strategy", ["linupper", "quadratic", "extremes", "upper", "hard"])
def test_in_batch_weights_are_the_strategy_weights_of_the_batch(strategy: str) -> None:
    rw = _rw(sources=[InBatchWeights(strategy, r=0.5)])
    losses = torch.tensor([0.2, 1.5, 0.9, 3.0, 2.2], dtype=torch.float64)
    out = rw.reduce(losses, _batch([0, 1, 61, 62, 95]))
    want = loss_weights(losses, strategy, 0.5).numpy()
    np.testing.assert_allclose(rw.last_loss_weights, want, rtol=1e-12)
    assert float(out) == pytest.approx(float((torch.from_numpy(want) * losses).mean()))
    assert rw.last_loss_weights.mean() == pytest.approx(1.0)


def test_burn_in_gives_uniform_weights_then_the_strategy() -> None:
    rw = _rw(sources=[InBatchWeights("linupper", r=0.3, burn_in_steps=2)])
    losses = torch.tensor([0.1, 2.0, 4.0])
    for _ in range(2):
        rw.reduce(losses, _batch([0, 1, 2]))
        np.testing.assert_array_equal(rw.last_loss_weights, np.ones(3))
        assert rw.metrics()["in_batch/burn_in"] == 1.0
        rw.step()
    rw.reduce(losses, _batch([0, 1, 2]))
    assert rw.last_loss_weights[0] < 1 < rw.last_loss_weights[2]
    assert rw.metrics()["in_batch/burn_in"] == 0.0


def test_r_schedule_follows_progress() -> None:
    rw = _rw(sources=[InBatchWeights("linupper", r=Linear(2.0, 0.4))], total_steps=10)
    assert rw.metrics()["in_batch/r"] == pytest.approx(2.0)
    for _ in range(5):
        rw.step()
    assert rw.metrics()["in_batch/r"] == pytest.approx(1.2)
    spec = _rw(
        sources=[InBatchWeights(r={"kind": "linear", "start": 2.0, "end": 0.4})], total_steps=4
    )
    for _ in range(4):
        spec.step()
    assert spec.metrics()["in_batch/r"] == pytest.approx(0.4)


def test_schedule_without_total_steps_is_an_error() -> None:
    rw = _rw(sources=[InBatchWeights(r=Linear(1.0, 0.5))])
    with pytest.raises(ValueError, match="total_steps"):
        rw.step()
    with pytest.raises(ValueError, match="total_steps"):
        _rw(total_steps=0)


def test_unknown_strategy_and_mode_list_valid_names() -> None:
    with pytest.raises(ValueError, match="linupper"):
        _rw(sources=[InBatchWeights("nope")])
    with pytest.raises(ValueError, match="proposal"):
        _rw(sources=[LossPriority(mode="nope")])
    # In-batch weights are loss weights by nature: the only mode is "weight".
    with pytest.raises(ValueError, match="valid modes: weight"):
        _rw(sources=[InBatchWeights(mode="sample")])
    with pytest.raises(ValueError, match="rank"):
        _rw(sources=[LossPriority(priority="nope", mode="sample")])
    with pytest.raises(ValueError, match="unknown"):
        _rw(sources=[DomainMixing({"kind": "uniform"}, mode="nope")])


# ---------------------------------------------------------------- guards


def test_nonfinite_losses_are_masked_counted_and_warned_once() -> None:
    rw = _rw(sources=[InBatchWeights("linupper"), LossPriority(mode="proposal")])
    losses = torch.tensor([1.0, math.nan, 3.0, math.inf], requires_grad=True)
    with pytest.warns(RuntimeWarning, match="masked"):
        out = rw.reduce(losses, _batch([0, 1, 60, 90]))
    assert torch.isfinite(out)
    out.backward()
    assert losses.grad is not None
    assert torch.isfinite(losses.grad).all() and losses.grad[1] == 0 and losses.grad[3] == 0
    w = rw.last_loss_weights
    assert w.size == 2 and np.isfinite(w).all() and w.mean() == pytest.approx(1.0)
    m = rw.metrics()
    assert m["guard/masked_losses"] == 2.0 and m["guard/masked_last"] == 2.0
    # The table never saw the bad values; probabilities stay finite.
    assert np.isfinite(rw.sampler.probabilities(np.arange(N))).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        rw.reduce(torch.tensor([math.nan, 1.0]), _batch([2, 3]))
    assert rw.metrics()["guard/masked_losses"] == 3.0


def test_all_nonfinite_is_an_error_that_changes_nothing() -> None:
    rw = _rw(sources=[InBatchWeights("linupper"), LossPriority(mode="proposal")])
    rw.reduce(torch.tensor([1.0, 2.0]), _batch([0, 1]))
    before = rw.state_dict()
    with pytest.raises(ValueError, match="NaN or inf"):
        rw.reduce(torch.tensor([math.nan, math.inf]), _batch([2, 3]))
    assert_states_equal(rw.state_dict(), before)


def test_batch_index_out_of_range_is_an_error() -> None:
    with pytest.raises(ValueError, match="outside"):
        _rw().reduce(torch.ones(2), _batch([0, N]))


def test_cap_z_limits_an_outlier_weight() -> None:
    losses = torch.tensor([1.0] * 20 + [1.1] * 20 + [100.0])
    idx = list(range(41))
    plain = _rw(sources=[InBatchWeights("hard", r=1.0)])
    capped = _rw(sources=[InBatchWeights("hard", r=1.0, cap_z=2.0)])
    plain.reduce(losses, _batch(idx))
    capped.reduce(losses, _batch(idx))
    assert plain.last_loss_weights.max() > 40  # the outlier takes nearly everything
    assert capped.last_loss_weights.max() < plain.last_loss_weights.max()


# ---------------------------------------------------------------- sampling priorities


def test_sample_mode_draws_high_loss_items_more() -> None:
    rw = _rw(sources=[LossPriority(priority="rank", pressure=50.0, mode="sample")])
    idx = np.arange(60)  # all of "web"
    rw.reduce(torch.from_numpy(idx / 60.0), _batch(idx))
    rw.step()  # the first refresh ranks the seen items among all items
    q = rw.sampler.probabilities(idx)
    assert np.all(np.diff(q) >= 0) and q[-1] / q[0] == pytest.approx(50.0, rel=0.05)
    np.testing.assert_allclose(rw.last_loss_weights, np.ones(60))  # the target is q itself
    assert rw.metrics()["loss_priority/coverage"] == pytest.approx(0.6)


def test_refresh_updates_every_item() -> None:
    rw = _rw(sources=[LossPriority(refresh_every=2, relax_steps=1, mode="sample")])
    rw.reduce(torch.arange(10, dtype=torch.float64), _batch(np.arange(10)))
    rw.step()
    rw.step()  # refresh: staleness relaxes every seen item toward the prior
    m = rw.metrics()
    assert m["loss_priority/staleness_max"] == 2.0


# Sources hold per-run state, so each config builds fresh ones.
CONFIGS: dict[str, Callable[[], list[Source]]] = {
    "static-weight": lambda: [StaticImportance(_logw(), mode="weight")],
    "static-sample+dyn-both": lambda: [
        StaticImportance(_logw(), mode="sample"),
        InBatchWeights("uniform"),
        LossPriority(mode="proposal"),
    ],
    "static-weight+dyn-both": lambda: [
        StaticImportance(_logw(), mode="weight"),
        InBatchWeights("uniform"),
        LossPriority(mode="proposal"),
    ],
    "static-weight+dyn-sample": lambda: [
        StaticImportance(_logw(), mode="weight"),
        LossPriority(mode="sample"),
    ],
    "mixing-weight+dyn-both": lambda: [
        DomainMixing({"kind": "uniform"}, mode="weight"),
        InBatchWeights("uniform"),
        LossPriority(priority="softmax", mode="proposal"),
    ],
    "hybrid+static-weight": lambda: [
        DomainMixing({"kind": "uniform"}, mode="weight"),
        DomainMixing(3.0, mode="proposal"),
        StaticImportance(_logw(), mode="weight"),
    ],
}


def _target(rw: Reweighter, sources: list[Source]) -> np.ndarray:
    """p(i) from DESIGN.md's formula, computed independently of the engine."""
    metrics = rw.metrics()
    pi = np.array([metrics[f"domain/{name}/target"] for name in NAMES])  # π_p now
    t = np.ones(N)
    for source in sources:
        if isinstance(source, StaticImportance) and source.in_target:
            t = t * source.factor()
        if isinstance(source, LossPriority) and source.in_target:
            t = t * rw.sampler.factors(np.arange(N))[1]
    mass = np.bincount(DOMAINS, weights=t)
    return pi[DOMAINS] * t / mass[DOMAINS]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_importance_correction_turns_q_into_p(name: str) -> None:
    """q(i) · (p/q)(i) = p(i) for every item, after updates changed the priorities."""
    sources = CONFIGS[name]()
    rw = _rw(sources=sources, total_steps=10)
    gen = np.random.default_rng(0)
    for _ in range(3):
        idx = gen.choice(N, size=16, replace=False)
        rw.reduce(torch.from_numpy(gen.random(16) * 3), _batch(idx))
        rw.step()
    items = np.arange(N)
    q = rw.sampler.probabilities(items)
    ratio = rw.importance_ratios(items).numpy()
    np.testing.assert_allclose(q * ratio, _target(rw, sources), rtol=1e-5, atol=1e-12)


# ---------------------------------------------------------------- domain rules


def test_temperature_cooldown_moves_the_sampler() -> None:
    tau = cooldown(high=5.0, low=1.0, start=0.0, end=1.0)
    rw = _rw(sources=[DomainMixing({"kind": "temperature", "tau": tau})], total_steps=4)
    np.testing.assert_allclose(rw.sampler.domain_probs, temperature_probs(SIZES, 5.0))
    for step in range(1, 5):
        rw.step()
        want = temperature_probs(SIZES, tau(step / 4))
        np.testing.assert_allclose(rw.sampler.domain_probs, want, rtol=1e-12)
        assert rw.metrics()["mixing/tau"] == pytest.approx(tau(step / 4))
    np.testing.assert_allclose(rw.sampler.domain_probs, np.asarray(SIZES) / N)


def test_weight_mode_samples_naturally_and_weights_by_the_rule() -> None:
    rw = _rw(sources=[DomainMixing({"kind": "temperature", "tau": 3.0}, mode="weight")])
    natural = np.asarray(SIZES) / N
    np.testing.assert_allclose(rw.sampler.domain_probs, natural)
    target = temperature_probs(SIZES, 3.0)
    ratio = rw.importance_ratios(np.array([0, 60, 90])).numpy()
    np.testing.assert_allclose(ratio, target / natural, rtol=1e-12)


def test_hybrid_samples_at_one_temperature_and_corrects_to_another() -> None:
    rw = _rw(
        sources=[
            DomainMixing({"kind": "uniform"}, mode="weight"),
            DomainMixing(2.0, mode="proposal"),
        ],
    )
    sampled = temperature_probs(SIZES, 2.0)
    np.testing.assert_allclose(rw.sampler.domain_probs, sampled)
    ratio = rw.importance_ratios(np.array([0, 60, 90])).numpy()
    np.testing.assert_allclose(ratio, (1 / 3) / sampled, rtol=1e-12)
    # "hybrid" and sample_rule are gone: a "weight" source plus a "proposal" source instead.
    with pytest.raises(ValueError, match="valid modes: sample, weight, proposal"):
        _rw(sources=[DomainMixing({"kind": "uniform"}, mode="hybrid")])
    with pytest.raises(TypeError, match="sample_rule"):
        _rw(sources=[{"kind": "mixing", "rule": {"kind": "uniform"}, "sample_rule": 2.0}])


@pytest.mark.parametrize("mode", ["sample", "weight", "hybrid"])
def test_every_mode_has_the_same_expected_loss(mode: str) -> None:
    """Upsample vs upweight: E_q[w·f] is the same target expectation in every mode."""
    spec = {"kind": "temperature", "tau": 4.0}
    if mode == "hybrid":  # draw at τ = 1.5, correct to the rule
        sources = [DomainMixing(spec, mode="weight"), DomainMixing(1.5, mode="proposal")]
    else:
        sources = [DomainMixing(spec, mode=mode)]
    rw = _rw(sources=sources)
    items = np.arange(N)
    f = np.sin(items)
    q = rw.sampler.probabilities(items)
    w = rw.importance_ratios(items).numpy()
    target = temperature_probs(SIZES, 4.0)
    want = sum(target[d] * f[np.equal(DOMAINS, d)].mean() for d in range(3))
    assert float((q * w * f).sum()) == pytest.approx(want, rel=1e-10)


def test_doremi_upweights_the_domain_with_excess_loss() -> None:
    rule = {"kind": "doremi", "eta": 1.0}
    rw = _rw(sources=[DomainMixing(rule)], total_steps=50)
    gen = np.random.default_rng(1)
    for _ in range(20):
        idx = gen.choice(N, size=24, replace=False)
        loss = np.where(DOMAINS[idx] == 2, 3.0, 1.0)
        batch = _batch(idx)
        batch["reference_loss"] = torch.ones(24)
        rw.reduce(torch.from_numpy(loss), batch)
        rw.step()
    probs = rw.sampler.domain_probs
    assert probs[2] > 0.9
    m = rw.metrics()
    assert m["mixing/weights/math"] == pytest.approx(probs[2])
    assert "mixing/average_weights/web" in m and "domain/math/loss" in m


def test_doremi_reference_from_a_per_item_array() -> None:
    reference = np.where(DOMAINS == 1, 0.0, 5.0)
    rw = _rw(sources=[DomainMixing({"kind": "doremi"}, reference=reference)], total_steps=50)
    for _ in range(10):
        idx = np.arange(0, N, 3)
        rw.reduce(torch.ones(idx.size), _batch(idx))
        rw.step()
    assert np.argmax(rw.sampler.domain_probs) == 1
    with pytest.raises(ValueError, match="one per item"):
        _rw(sources=[DomainMixing({"kind": "doremi"}, reference=np.ones(3))])


def test_odm_prefers_the_high_loss_domain() -> None:
    rw = _rw(
        sources=[DomainMixing({"kind": "odm", "eta": 1.0, "warmup_steps": 5})],
        total_steps=400,
    )
    gen = np.random.default_rng(2)
    for _ in range(300):
        idx = rw.sampler.sample(16, seed=int(gen.integers(1 << 30)))
        loss = np.where(DOMAINS[idx] == 1, 4.0, 1.0)
        rw.reduce(torch.from_numpy(loss), _batch(idx))
        rw.step()
    assert np.argmax(rw.sampler.domain_probs) == 1


def test_domain_rule_with_wrong_domain_count_is_an_error() -> None:
    from reweight.mixing import FixedMixture

    with pytest.raises(ValueError, match="domains"):
        _rw(sources=[DomainMixing(FixedMixture([0.5, 0.5]))])


# ---------------------------------------------------------------- state


def _full(**kwargs: object) -> Reweighter:
    return _rw(
        sources=[
            StaticImportance(_logw(), mode="weight"),
            DomainMixing({"kind": "doremi"}),
            InBatchWeights("linupper"),
            LossPriority(refresh_every=3, mode="proposal"),
        ],
        total_steps=20,
        seed=5,
        **kwargs,
    )


def _run(rw: Reweighter, it: object, steps: int, gen: np.random.Generator) -> list[np.ndarray]:
    out = []
    for _ in range(steps):
        idx = np.array(list(itertools.islice(it, 8)))  # type: ignore[call-overload]
        batch = _batch(idx)
        batch["reference_loss"] = torch.ones(8)
        rw.reduce(torch.from_numpy(gen.random(8) * 2), batch)
        rw.step()
        out.append(np.concatenate([idx, rw.last_loss_weights, rw.sampler.domain_probs]))
    return out


def test_resume_continues_exactly_with_every_source() -> None:
    whole = _full()
    gen = np.random.default_rng(9)
    it = iter(whole.sampler)
    first = _run(whole, it, 5, gen)
    state = whole.state_dict()
    gen_state = gen.bit_generator.state
    rest = _run(whole, it, 5, gen)

    resumed = _full()
    resumed.load_state_dict(state)
    gen2 = np.random.default_rng()
    gen2.bit_generator.state = gen_state
    again = _run(resumed, iter(resumed.sampler), 5, gen2)
    assert len(first) == 5
    for a, b in zip(rest, again, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_state_from_another_dynamic_configuration_is_rejected() -> None:
    state = _full().state_dict()
    other = _rw(
        sources=[
            StaticImportance(_logw(), mode="weight"),
            DomainMixing({"kind": "doremi"}),
            InBatchWeights("quadratic"),
            LossPriority(mode="proposal"),
        ],
        total_steps=20,
        seed=5,
    )
    with pytest.raises(ValueError, match=r"another configuration.*sources"):
        other.load_state_dict(state)


def test_metrics_are_finite_floats_with_every_source() -> None:
    rw = _full()
    _run(rw, iter(rw.sampler), 3, np.random.default_rng(0))
    m = rw.metrics()
    assert all(type(v) is float and math.isfinite(v) for v in m.values())
    for key in (
        "progress",
        "in_batch/r",
        "loss_priority/coverage",
        "loss_priority/staleness_mean",
        "loss_weight/ess_fraction",
        "loss_weight/max_min_ratio",
        "mixing/weights/web",
        "domain/web/loss",
        "guard/masked_losses",
    ):
        assert key in m, key


# ---------------------------------------------------------------- two ranks (gloo)


GLOBAL_LOSS = torch.tensor([0.3, 2.0, 1.1, 0.7, 5.0, 0.2, 1.9], dtype=torch.float64)
GLOBAL_INDEX = torch.tensor([0, 61, 95, 3, 62, 96, 7])
SPLIT = 3  # rank 0 takes the first 3 samples, rank 1 the other 4 (unequal on purpose)


def _ddp_worker(rank: int, port: int, out_dir: str) -> None:
    tdist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=2,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        rw = _rw(
            sources=[
                InBatchWeights("linupper", r=0.5),
                LossPriority(mode="proposal"),
                DomainMixing({"kind": "doremi"}, mode="weight"),
            ],
            total_steps=10,
        )
        part = slice(0, SPLIT) if rank == 0 else slice(SPLIT, None)
        loss = GLOBAL_LOSS[part].clone().requires_grad_(True)
        batch = _batch(GLOBAL_INDEX[part])
        batch["reference_loss"] = torch.full_like(loss, 0.5)
        out = rw.reduce(loss, batch)
        out.backward()
        rw.step()
        torch.save(
            {
                "weights": rw.last_loss_weights,
                "loss": out.detach(),
                "grad": loss.grad,
                "probs": rw.sampler.domain_probs,
                "q": rw.sampler.probabilities(np.arange(N)),
                "metrics": rw.metrics(),
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        tdist.destroy_process_group()


@pytest.mark.distributed
@pytest.mark.slow
def test_two_ranks_compute_the_weights_of_one_process(tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    single = _rw(
        sources=[
            InBatchWeights("linupper", r=0.5),
            LossPriority(mode="proposal"),
            DomainMixing({"kind": "doremi"}, mode="weight"),
        ],
        total_steps=10,
    )
    loss = GLOBAL_LOSS.clone().requires_grad_(True)
    batch = _batch(GLOBAL_INDEX)
    batch["reference_loss"] = torch.full_like(loss, 0.5)
    out = single.reduce(loss, batch)
    out.backward()
    single.step()
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for res in ranks:
        np.testing.assert_allclose(res["weights"], single.last_loss_weights, rtol=1e-12)
        np.testing.assert_allclose(res["probs"], single.sampler.domain_probs, rtol=1e-12)
        np.testing.assert_allclose(res["q"], single.sampler.probabilities(np.arange(N)), rtol=1e-6)
        # Realised shares are the global batch's (all ranks), not the rank's own.
        for name in NAMES:
            key = f"domain/{name}/realised"
            assert res["metrics"][key] == pytest.approx(single.metrics()[key], abs=1e-12)
    # DDP averages gradients over ranks: the mean of the ranks' gradients is the one-process one.
    assert loss.grad is not None
    grads = torch.cat([ranks[0]["grad"], ranks[1]["grad"]]) / 2
    torch.testing.assert_close(grads, loss.grad, rtol=1e-12, atol=1e-15)
    assert float((ranks[0]["loss"] + ranks[1]["loss"]) / 2) == pytest.approx(float(out.detach()))
