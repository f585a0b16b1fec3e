"""The weight-source protocol: the pure p/q module on its own, the composition of sources in
every mode against DESIGN.md's formula computed by hand, the registry, and adding a source."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reweight import Reweighter
from reweight.sources import (
    MODES,
    SOURCES,
    DomainMixing,
    GlobalBatch,
    InBatchWeights,
    ItemUpdate,
    LossPriority,
    ReducibleLoss,
    Source,
    StaticImportance,
    make_source,
)
from reweight.weights.importance import (
    domain_mass,
    drawable_probs,
    importance_ratios,
    item_probabilities,
    mass_change,
    mixture,
)
from tests.state_compare import assert_states_equal

# ---------------------------------------------------------------- the pure module


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0.01, 10.0), min_size=1, max_size=12),
    st.lists(st.integers(0, 3), min_size=1, max_size=12),
    st.lists(st.floats(0.01, 1.0), min_size=4, max_size=4),
)
def test_item_probabilities_sum_to_the_domain_probabilities(
    factors: list[float], domains: list[int], pi: list[float]
) -> None:
    n = min(len(factors), len(domains))
    t, d = np.array(factors[:n]), np.array(domains[:n])
    pi_arr = np.array(pi) / sum(pi)
    p = item_probabilities(pi_arr, d, t, domain_mass(t, d, 4))
    present = np.bincount(d, minlength=4) > 0
    # Each domain with items receives exactly π(d) of the mass, whatever the factors.
    np.testing.assert_allclose(np.bincount(d, weights=p, minlength=4)[present], pi_arr[present])
    assert (p > 0).all()


def test_mass_change_keeps_the_mass_exact_under_updates() -> None:
    rng = np.random.default_rng(0)
    d = rng.integers(0, 3, 50)
    t = rng.uniform(0.1, 1.0, 50)
    mass = domain_mass(t, d, 3)
    for _ in range(20):
        items = rng.choice(50, 7, replace=False)
        new = rng.uniform(0.1, 1.0, 7)
        mass += mass_change(d[items], t[items], new, 3)
        t[items] = new
    np.testing.assert_allclose(mass, domain_mass(t, d, 3), rtol=1e-12)


def test_mixture_ratios_and_drawable_probs() -> None:
    assert mixture([], np.array([0.25, 0.75])).tolist() == [0.25, 0.75]
    np.testing.assert_allclose(mixture([np.array([2.0, 2.0])], np.ones(2)), [0.5, 0.5])
    with pytest.raises(ValueError, match="multiply to zero"):
        mixture([np.array([1.0, 0.0]), np.array([0.0, 1.0])], np.ones(2))
    assert importance_ratios(np.array([0.3, 0.2]), np.array([0.1, 0.0])).tolist() == [
        pytest.approx(3.0),
        0.0,
    ]
    assert drawable_probs(np.array([3.0, 1.0])).tolist() == [0.75, 0.25]


# ---------------------------------------------------------------- composition vs the formula

N, DOMAINS = 12, np.array([0] * 6 + [1] * 4 + [2] * 2)
LOGW = np.linspace(-1.0, 1.0, N)
PI = np.array([0.2, 0.3, 0.5])


def _by_hand(modes: dict[str, str], priorities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """p and q from the formula, each source's contribution on the side(s) its mode names."""
    a = np.exp(LOGW - LOGW.max())
    natural = np.bincount(DOMAINS) / N
    sides: dict[str, dict[str, Any]] = {
        "p": {"pi": natural, "t": np.ones(N)},
        "q": {"pi": natural, "t": np.ones(N)},
    }
    for kind, mode in modes.items():
        for side in ("p", "q"):
            if (side == "p" and mode == "proposal") or (side == "q" and mode == "weight"):
                continue
            if kind == "mixing":
                sides[side]["pi"] = PI
            elif kind == "static":
                sides[side]["t"] = sides[side]["t"] * a
            else:
                sides[side]["t"] = sides[side]["t"] * priorities
    out = []
    for side in ("p", "q"):
        pi, t = sides[side]["pi"], sides[side]["t"]
        mass = np.bincount(DOMAINS, weights=t)
        out.append(pi[DOMAINS] * t / mass[DOMAINS])
    return out[0], out[1]


@pytest.mark.parametrize(
    "modes",
    [
        dict(zip(("static", "mixing", "loss_priority"), combo, strict=True))
        for combo in itertools.product(MODES, repeat=3)
    ],
    ids=lambda m: "-".join(f"{k[0]}{v[0]}" for k, v in m.items()),
)
def test_p_and_q_follow_the_formula_in_every_mode(modes: dict[str, str]) -> None:
    rw = Reweighter(
        domains=DOMAINS,
        sources=[
            StaticImportance(LOGW, mode=modes["static"]),
            DomainMixing(PI.tolist(), mode=modes["mixing"]),
            LossPriority(mode=modes["loss_priority"], pressure=8.0, refresh_every=1, decay=0.0),
        ],
    )
    losses = np.linspace(3.0, 0.5, N)
    rw.reduce(torch.from_numpy(losses), {"index": torch.arange(N)})
    rw.step()  # step 1: a full refresh of every priority
    priorities = rw.sources[2].table.all_priorities(1, method="rank", pressure=8.0, floor=1e-3)
    p, q = _by_hand(modes, priorities)
    items = np.arange(N)
    np.testing.assert_allclose(rw.sampler.probabilities(items), q, rtol=1e-6)
    np.testing.assert_allclose(rw.importance_ratios(items).numpy(), p / q, rtol=1e-5)
    # An incremental update (only the batch's items) keeps p's own masses exact.
    rw.reduce(torch.tensor([5.0, 0.1]), {"index": torch.tensor([11, 0])})
    priorities = priorities.copy()
    priorities[[0, 11]] = rw.sources[2].table.priorities(
        [0, 11], 1, method="rank", pressure=8.0, floor=1e-3
    )
    p, q = _by_hand(modes, priorities)
    np.testing.assert_allclose(rw.importance_ratios(items).numpy(), p / q, rtol=1e-5)


def test_no_sources_is_a_plain_uniform_sampler_with_plain_mean_loss() -> None:
    rw = Reweighter(8)
    loss = rw.reduce(torch.tensor([1.0, 2.0, 6.0]), {"index": torch.tensor([0, 1, 2])})
    assert float(loss) == pytest.approx(3.0)
    np.testing.assert_allclose(rw.sampler.probabilities(range(8)), 1 / 8)
    assert rw.state_dict()["sources"] == {} and not rw.needs_total_steps


# ---------------------------------------------------------------- registry and names


def test_make_source_lists_the_kinds_and_builds_every_registered_one() -> None:
    with pytest.raises(ValueError, match="valid kinds: static, mixing, in_batch"):
        make_source({"kind": "nope"})
    with pytest.raises(TypeError, match="kind"):
        make_source({"mode": "sample"})
    with pytest.raises(TypeError, match=r"source .mixing.*unexpected"):
        make_source({"kind": "mixing", "rule": 1.0, "sample_rule": 2.0})
    assert set(SOURCES) == {"static", "mixing", "in_batch", "loss_priority", "reducible_loss"}
    for kind, cls in SOURCES.items():
        assert cls.kind == kind


def test_every_source_rejects_a_mode_it_does_not_have_and_fields_it_would_ignore() -> None:
    with pytest.raises(ValueError, match=r"InBatchWeights.mode.*weight"):
        InBatchWeights(mode="sample")
    with pytest.raises(ValueError, match="sample, weight, proposal"):
        DomainMixing(1.0, mode="hybrid")
    with pytest.raises(ValueError, match=r"pressure.*only used by priority=.rank."):
        LossPriority(priority="softmax", pressure=10.0)
    with pytest.raises(ValueError, match=r"temperature.*only used by priority=.softmax."):
        LossPriority(temperature=2.0)


def test_sources_are_named_by_kind_and_repeats_are_numbered() -> None:
    rw = Reweighter(
        domains=[0, 1], sources=[DomainMixing(1.0, mode="weight"), DomainMixing(3.0, "proposal")]
    )
    assert [s.name for s in rw.sources] == ["mixing", "mixing_2"]
    assert "mixing_2/tau" in rw.metrics()
    with pytest.raises(ValueError, match="two sources are named 'x'"):
        Reweighter(2, sources=[InBatchWeights(name="x"), InBatchWeights(name="x")])


def test_a_source_belongs_to_one_reweighter() -> None:
    source = InBatchWeights()
    Reweighter(2, sources=[source])
    with pytest.raises(ValueError, match="already belongs"):
        Reweighter(2, sources=[source])


def test_two_sources_that_change_items_are_refused() -> None:
    with pytest.raises(ValueError, match="change item factors"):
        Reweighter(4, sources=[LossPriority(), ReducibleLoss(reference=np.zeros(4))])


# ---------------------------------------------------------------- reducible loss


def test_reducible_loss_ranks_by_loss_minus_irreducible_from_file_or_batch(tmp_path: Any) -> None:
    reference = np.array([0.0, 0.0, 3.5, 0.0])
    path = tmp_path / "il.npy"
    np.save(path, reference)
    for source, batch in (
        (ReducibleLoss(reference=str(path), pressure=10.0, refresh_every=1), {}),
        (
            ReducibleLoss(pressure=10.0, refresh_every=1),
            {"reference_loss": torch.from_numpy(reference)},
        ),
    ):
        rw = Reweighter(4, sources=[source])
        rw.reduce(torch.tensor([4.0, 3.0, 4.0, 1.0]), {"index": torch.arange(4), **batch})
        rw.step()
        factors = rw.sampler.factors(range(4))[1]
        assert np.argsort(-factors).tolist() == [0, 1, 3, 2]  # the noisy item 2 comes last


def test_reducible_loss_without_irreducible_losses_is_a_clear_error_that_changes_nothing() -> None:
    rw = Reweighter(4, sources=[ReducibleLoss()])
    before = rw.state_dict()
    with pytest.raises(ValueError, match="needs irreducible losses"):
        rw.reduce(torch.ones(2), {"index": torch.tensor([0, 1])})
    assert_states_equal(rw.state_dict(), before)
    with pytest.raises(ValueError, match="4 finite values"):
        Reweighter(4, sources=[ReducibleLoss(reference=[0.0, 1.0])])


def test_reducible_loss_by_weighting_upweights_learnable_items() -> None:
    rw = Reweighter(
        4, sources=[ReducibleLoss(reference=[0.0, 0.0, 3.5, 0.0], mode="weight", refresh_every=1)]
    )
    rw.reduce(torch.tensor([4.0, 3.0, 4.0, 1.0]), {"index": torch.arange(4)})
    rw.step()
    ratios = rw.importance_ratios(torch.arange(4)).numpy()
    assert ratios.argmax() == 0 and ratios.argmin() == 2


# ---------------------------------------------------------------- a fifth source


@dataclass(eq=False)
class _EvenItems(Source):
    """A toy source: even items twice as likely (a fixed item factor)."""

    kind = "even_items"
    mode: str = "sample"
    name: str | None = None

    def item_factors(self) -> np.ndarray:
        return np.where(np.arange(self.layout.num_items) % 2 == 0, 1.0, 0.5)


def test_a_new_source_is_one_class_and_one_registry_line(monkeypatch: Any) -> None:
    monkeypatch.setitem(SOURCES, "even_items", _EvenItems)
    rw = Reweighter(4, sources=[{"kind": "even_items"}])
    np.testing.assert_allclose(rw.sampler.probabilities(range(4)), [1 / 3, 1 / 6, 1 / 3, 1 / 6])
    rw = Reweighter(4, sources=[{"kind": "even_items", "mode": "weight"}])
    np.testing.assert_allclose(rw.importance_ratios(torch.arange(4)).numpy(), [4 / 3, 2 / 3] * 2)


def test_global_batch_finite_drops_masked_samples() -> None:
    batch = GlobalBatch(
        np.arange(3), np.zeros(3, int), np.array([1.0, np.nan, 2.0]), np.array([1, 0, 1], bool),
        {"reference_loss": np.array([0.1, 0.2, 0.3])},
    )  # fmt: skip
    finite = batch.finite()
    assert finite.index.tolist() == [0, 2] and finite.columns["reference_loss"].tolist() == [
        0.1,
        0.3,
    ]
    assert ItemUpdate(None, np.ones(2)).items is None


def test_a_failed_construction_leaves_the_sources_free_to_use_again() -> None:
    static = StaticImportance(LOGW)
    starving = DomainMixing([1.0, 0.0, 1.0], mode="weight")
    with pytest.raises(ValueError, match=r"DomainMixing.rule \(source 'mixing'\)"):
        Reweighter(domains=DOMAINS, sources=[static, starving])
    assert static.name is None
    rw = Reweighter(domains=DOMAINS, sources=[static, DomainMixing([1.0, 1.0, 1.0])])
    assert rw.source_names == ["static", "mixing"]


def test_reference_losses_are_refused_by_a_rule_that_would_ignore_them() -> None:
    with pytest.raises(ValueError, match=r"DomainMixing.reference is only read by .*DoReMi"):
        Reweighter(domains=DOMAINS, sources=[DomainMixing("uniform", reference=np.ones(N))])
    rw = Reweighter(
        domains=DOMAINS,
        sources=[DomainMixing({"kind": "doremi"}, reference=np.ones(N))],
        total_steps=10,
    )
    assert rw.sources[0].batch_keys == ("reference_loss",)
    assert Reweighter(domains=DOMAINS, sources=[DomainMixing(2.0)]).sources[0].batch_keys == ()


@dataclass(eq=False)
class _FavourLast(Source):
    """A toy source that sets domain probabilities: the last domain gets half of the draws."""

    kind = "favour_last"
    mode: str = "sample"
    name: str | None = None

    def domain_probs(self, progress: float) -> np.ndarray:
        k = self.layout.num_domains
        return np.array([0.5 / (k - 1)] * (k - 1) + [0.5])


def test_a_new_source_that_sets_domains_needs_no_flag(monkeypatch: Any) -> None:
    monkeypatch.setitem(SOURCES, "favour_last", _FavourLast)
    rw = Reweighter(domains=DOMAINS, sources=[{"kind": "favour_last"}])
    shares = np.bincount(DOMAINS, weights=rw.sampler.probabilities(range(N)))
    np.testing.assert_allclose(shares, [0.25, 0.25, 0.5])
    rw = Reweighter(domains=DOMAINS, sources=[_FavourLast(mode="weight")])
    assert rw.metrics()["domain/2/target"] == pytest.approx(0.5)
    assert rw.importance_ratios(torch.tensor([11])).item() == pytest.approx(0.5 / (2 / N))
