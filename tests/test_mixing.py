"""Tests for reweight.mixing: temperature sampling, schedules, domain rules and their configs."""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reweight.mixing import (
    ODM,
    RULES,
    SCHEDULES,
    STATE_VERSION,
    Constant,
    Cosine,
    DomainRule,
    DoReMi,
    EndUpsample,
    Exponential,
    FixedMixture,
    Linear,
    Phases,
    Step,
    TemperatureRule,
    cooldown,
    floor_probs,
    make_rule,
    make_schedule,
    parse_batch,
    temperature_probs,
)

SIZES = [900.0, 90.0, 10.0]
NAMES = ["web", "code", "math"]
GRID = np.linspace(0.0, 1.0, 1001)


def _entropy(p: np.ndarray) -> float:
    q = p[p > 0]
    return float(-(q * np.log(q)).sum())


def _assert_distribution(p: np.ndarray, k: int) -> None:
    assert p.dtype == np.float64
    assert p.shape == (k,)
    assert np.isfinite(p).all()
    assert (p >= 0).all()
    assert abs(p.sum() - 1.0) < 1e-12


# --------------------------------------------------------------------------- temperature


def test_temperature_one_is_natural_proportions() -> None:
    assert temperature_probs([900, 90, 10], 1.0).tolist() == [0.9, 0.09, 0.01]
    sizes = np.array([3.0, 5.0, 0.0, 12.0])
    np.testing.assert_allclose(temperature_probs(sizes, 1.0), sizes / sizes.sum(), rtol=1e-15)


def test_temperature_infinite_is_uniform_over_non_empty_domains() -> None:
    p = temperature_probs([1e9, 0, 3, 1], math.inf)
    np.testing.assert_allclose(p, [1 / 3, 0.0, 1 / 3, 1 / 3], rtol=1e-15)
    assert p[1] == 0.0


def test_temperature_large_tau_tends_to_uniform_and_small_tau_to_the_largest() -> None:
    np.testing.assert_allclose(temperature_probs(SIZES, 1e12), np.full(3, 1 / 3), atol=1e-10)
    np.testing.assert_allclose(temperature_probs(SIZES, 1e-3), [1.0, 0.0, 0.0], atol=1e-300)
    # Ties at the top share the mass; a subnormal τ does not produce NaN.
    np.testing.assert_allclose(temperature_probs([5, 5, 1], 1e-310), [0.5, 0.5, 0.0])


def test_temperature_exponent_matches_direct_formula() -> None:
    sizes = np.array([900.0, 90.0, 10.0])
    for tau in (0.5, 2.0, 3.3, 5.0, 100.0):
        direct = sizes ** (1 / tau)
        np.testing.assert_allclose(temperature_probs(sizes, tau), direct / direct.sum(), rtol=1e-13)


def test_temperature_is_exact_for_huge_sizes() -> None:
    p = temperature_probs([1e300, 1e299, 1.0], 0.1)
    _assert_distribution(p, 3)
    ratio = 10.0**10  # (1e300 / 1e299)^(1/0.1)
    assert p[0] / p[1] == pytest.approx(ratio, rel=1e-9)


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(
        st.floats(min_value=1e-3, max_value=1e12, allow_nan=False), min_size=2, max_size=12
    ),
    taus=st.tuples(
        st.floats(min_value=0.05, max_value=1e4), st.floats(min_value=0.05, max_value=1e4)
    ),
)
def test_temperature_flattens_monotonically_as_tau_grows(
    sizes: list[float], taus: tuple[float, float]
) -> None:
    low, high = sorted(taus)
    p_low, p_high = temperature_probs(sizes, low), temperature_probs(sizes, high)
    _assert_distribution(p_low, len(sizes))
    _assert_distribution(p_high, len(sizes))
    largest, smallest = int(np.argmax(sizes)), int(np.argmin(sizes))
    assert _entropy(p_high) >= _entropy(p_low) - 1e-9
    assert p_high[largest] <= p_low[largest] + 1e-12
    assert p_high[smallest] >= p_low[smallest] - 1e-12
    # The order of the domains never changes with τ.
    order = np.argsort(sizes, kind="stable")
    assert (np.diff(p_high[order]) >= -1e-12).all()


@settings(max_examples=150, deadline=None)
@given(
    weights=st.lists(st.floats(min_value=0.0, max_value=1e6), min_size=1, max_size=10).filter(
        lambda w: sum(w) > 0
    ),
    share=st.floats(min_value=0.0, max_value=1.0),
)
def test_floor_probs_floors_exactly_and_keeps_ratios(weights: list[float], share: float) -> None:
    k = len(weights)
    floor = share / k
    out = floor_probs(weights, floor)
    _assert_distribution(out, k)
    assert (out >= floor - 1e-15).all()
    # Entries strictly above the floor keep their input ratios.
    p = np.asarray(weights) / sum(weights)
    free = out > floor + 1e-12
    if free.sum() >= 2:
        i, j = np.flatnonzero(free)[:2]
        assert out[i] * p[j] == pytest.approx(out[j] * p[i], rel=1e-9)
    # Nothing that was already above the floor is lowered below it... and nothing gains
    # relative to its input when it was already free.
    assert (out[free] <= p[free] + 1e-12).all()


def test_floor_probs_with_mask_and_limits() -> None:
    out = floor_probs([0.7, 0.2, 0.1, 0.0], 0.15, mask=[1, 1, 1, 0])
    np.testing.assert_allclose(out, [0.85 * 7 / 9, 0.85 * 2 / 9, 0.15, 0.0])
    np.testing.assert_allclose(floor_probs([1.0, 0.0], 0.5), [0.5, 0.5])
    assert floor_probs([0.2, 0.8], 0.0).tolist() == [0.2, 0.8]
    with pytest.raises(ValueError, match="min_prob must lie in"):
        floor_probs([0.5, 0.5], 0.6)
    with pytest.raises(ValueError, match="outside mask"):
        floor_probs([0.5, 0.5], 0.1, mask=[True, False])
    with pytest.raises(ValueError, match="mask has 1 entries"):
        floor_probs([0.5, 0.5], 0.1, mask=[True])
    with pytest.raises(ValueError, match="not all zero"):
        floor_probs([0.0, 0.0], 0.1)


def test_temperature_min_prob_floors_non_empty_domains_only() -> None:
    p = temperature_probs([1e6, 1.0, 0.0, 1.0], 1.0, min_prob=0.05)
    np.testing.assert_allclose(p, [0.9, 0.05, 0.0, 0.05])
    with pytest.raises(ValueError, match="min_prob must lie in"):
        temperature_probs([1, 1, 0], 1.0, min_prob=0.6)


@pytest.mark.parametrize("tau", [0.0, -1.0, math.nan, -math.inf])
def test_temperature_rejects_bad_tau(tau: float) -> None:
    with pytest.raises(ValueError, match="tau"):
        temperature_probs(SIZES, tau)


@pytest.mark.parametrize(
    ("sizes", "match"),
    [
        ([1.0, -1.0], "domain 1 has size -1.0"),
        ([1.0, math.nan], "domain 1 has size nan"),
        ([math.inf, 1.0], "domain 0 has size inf"),
        ([0.0, 0.0], "every domain is empty"),
        ([], "sizes is empty"),
    ],
)
def test_temperature_rejects_bad_sizes(sizes: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        temperature_probs(sizes, 1.0)


def test_temperature_rejects_non_numbers() -> None:
    with pytest.raises(TypeError, match="tau must be a real number"):
        temperature_probs(SIZES, True)
    with pytest.raises(TypeError, match="tau must be a real number"):
        temperature_probs(SIZES, "2")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sizes must be a sequence of numbers"):
        temperature_probs(["a", "b"], 1.0)


# --------------------------------------------------------------------------- schedules

RAMPS: list[Callable[..., Any]] = [Linear, Cosine, Exponential]


@pytest.mark.parametrize("ramp", RAMPS)
def test_ramp_endpoints_and_holds(ramp: Callable[..., Any]) -> None:
    s = ramp(5.0, 1.0, begin=0.25, until=0.75)
    assert [s(0.0), s(0.1), s(0.25)] == [5.0, 5.0, 5.0]
    assert [s(0.75), s(0.9), s(1.0)] == [1.0, 1.0, 1.0]
    assert 1.0 < s(0.5) < 5.0
    full = ramp(2.0, 8.0)
    assert (full(0.0), full(1.0)) == (2.0, 8.0)


@pytest.mark.parametrize("ramp", RAMPS)
@settings(max_examples=60, deadline=None)
@given(
    start=st.floats(min_value=0.01, max_value=100.0),
    end=st.floats(min_value=0.01, max_value=100.0),
    window=st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)).filter(
        lambda w: abs(w[0] - w[1]) > 1e-6
    ),
)
def test_ramps_are_monotone_and_stay_in_range(
    ramp: Callable[..., Any], start: float, end: float, window: tuple[float, float]
) -> None:
    begin, until = sorted(window)
    s = ramp(start, end, begin=begin, until=until)
    values = np.array([s(float(p)) for p in GRID])
    sign = 1.0 if end >= start else -1.0
    assert (sign * np.diff(values) >= 0).all()
    assert values.min() >= min(start, end) and values.max() <= max(start, end)
    assert values[0] == start and values[-1] == end


def test_ramp_interior_values() -> None:
    assert Linear(5.0, 1.0)(0.25) == 4.0
    assert Cosine(5.0, 1.0)(0.5) == pytest.approx(3.0)
    assert Cosine(5.0, 1.0)(0.25) == pytest.approx(1.0 + 4.0 * (1 + math.cos(math.pi / 4)) / 2)
    assert Exponential(8.0, 1.0)(1 / 3) == pytest.approx(4.0)
    # Geometric: equal ratios over equal progress.
    e = Exponential(100.0, 1.0)
    assert e(0.2) / e(0.1) == pytest.approx(e(0.9) / e(0.8))


@pytest.mark.parametrize(
    "schedule",
    [
        Constant(2.0),
        Step([5.0, 2.0, 1.0], [0.3, 0.6]),
        Linear(5.0, 1.0),
        Cosine(5.0, 1.0, begin=0.1),
        Exponential(5.0, 1.0, until=0.9),
        Phases([(0.5, 5.0), (1.0, Cosine(5.0, 1.0))]),
        cooldown(),
    ],
)
def test_schedules_are_pure_functions_of_progress(schedule: Any) -> None:
    forward = [schedule(float(p)) for p in GRID]
    backward = [schedule(float(p)) for p in GRID[::-1]][::-1]
    again = [schedule(float(p)) for p in GRID]
    assert forward == backward == again
    with pytest.raises(dataclasses.FrozenInstanceError):
        schedule.start = 0.0
    assert make_schedule(schedule) is schedule
    assert eval(repr(schedule)) == schedule  # readable, complete repr


def test_schedule_reprs_are_readable() -> None:
    assert repr(Cosine(5, 1)) == "Cosine(start=5.0, end=1.0, begin=0.0, until=1.0)"
    assert repr(Step([2, 1], [0.5])) == "Step(values=(2.0, 1.0), boundaries=(0.5,))"
    assert repr(Phases([(1.0, 3)])) == "Phases(parts=((1.0, Constant(value=3.0)),))"


def test_progress_is_validated_and_round_off_clamped() -> None:
    s = Linear(5.0, 1.0)
    assert s(1.0 + 1e-12) == 1.0
    assert s(-1e-12) == 5.0
    for bad in (-0.01, 1.01, math.nan, math.inf):
        with pytest.raises(ValueError, match="progress must lie in"):
            s(bad)
    for wrong in ("0.5", None, True):
        with pytest.raises(TypeError, match="progress must be a real number"):
            s(wrong)  # type: ignore[arg-type]
    assert s(np.float32(0.25)) == 4.0


def test_step_boundaries_are_right_continuous() -> None:
    s = Step([5.0, 2.0, 1.0], [0.5, 0.9])
    assert [s(0.0), s(0.4999999), s(0.5), s(0.8999999), s(0.9), s(1.0)] == [
        5.0,
        5.0,
        2.0,
        2.0,
        1.0,
        1.0,
    ]
    assert Step([math.inf, 1.0], [0.5])(0.1) == math.inf
    with pytest.raises(ValueError, match="one more value than boundaries"):
        Step([1.0, 2.0], [0.2, 0.4])
    with pytest.raises(ValueError, match="strictly increasing"):
        Step([1.0, 2.0, 3.0], [0.4, 0.4])
    with pytest.raises(ValueError, match="strictly increasing"):
        Step([1.0, 2.0], [1.5])
    with pytest.raises(ValueError, match="not NaN"):
        Step([math.nan, 2.0], [0.5])


def test_phases_rescale_progress_within_each_phase() -> None:
    s = Phases(
        [(0.5, 5.0), (0.75, Linear(5.0, 3.0)), (1.0, {"kind": "linear", "start": 3, "end": 1})]
    )
    assert [s(0.0), s(0.49), s(0.5), s(0.625), s(0.75), s(0.875), s(1.0)] == pytest.approx(
        [5.0, 5.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    )
    # A boundary belongs to the phase after it.
    jump = Phases([(0.5, 1.0), (1.0, 2.0)])
    assert (jump(0.4999999), jump(0.5), jump(1.0)) == (1.0, 2.0, 2.0)
    as_mappings = Phases([{"until": 0.5, "schedule": 1.0}, {"until": 1.0, "schedule": 2.0}])
    assert as_mappings == jump


@pytest.mark.parametrize(
    ("parts", "error", "match"),
    [
        ([(0.5, 1.0)], ValueError, "must end at progress 1.0"),
        ([(0.5, 1.0), (0.5, 2.0), (1.0, 3.0)], ValueError, "strictly increasing"),
        ([(0.0, 1.0), (1.0, 2.0)], ValueError, "strictly increasing and > 0"),
        ([], ValueError, "at least one part"),
        ([(1.0,)], TypeError, "pair"),
        ([{"until": 1.0}], ValueError, "keys 'until' and 'schedule'"),
        ([(1.0, "fast")], TypeError, "schedule spec"),
    ],
)
def test_phases_reject_bad_parts(parts: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Phases(parts)


def test_cooldown_goes_from_high_to_one() -> None:
    s = cooldown(high=10.0, start=0.1, end=0.6)
    assert [s(0.0), s(0.1), s(0.6), s(1.0)] == [10.0, 10.0, 1.0, 1.0]
    values = np.array([s(float(p)) for p in GRID])
    assert (np.diff(values) <= 0).all()
    default = cooldown()
    assert (default(0.0), default(1.0)) == (5.0, 1.0)
    assert isinstance(cooldown(shape="exponential"), Exponential)
    assert isinstance(cooldown(shape="linear"), Linear)
    assert cooldown(4.0, 2.0)(1.0) == 2.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"high": 0.5}, "0 < low <= high"),
        ({"low": 0.0}, "0 < low <= high"),
        ({"start": 0.8, "end": 0.2}, "begin < until"),
        ({"shape": "sigmoid"}, r"valid shapes: \['cosine', 'exponential', 'linear'\]"),
    ],
)
def test_cooldown_rejects_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cooldown(**kwargs)


def test_ramps_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="start > 0 and end > 0"):
        Exponential(0.0, 1.0)
    with pytest.raises(ValueError, match="begin < until"):
        Linear(1.0, 2.0, begin=0.5, until=0.5)
    with pytest.raises(ValueError, match="finite"):
        Linear(math.inf, 1.0)
    with pytest.raises(TypeError, match="real number"):
        Cosine("5", 1.0)  # type: ignore[arg-type]
    assert Constant(math.inf)(0.3) == math.inf


def test_make_schedule_from_plain_specs() -> None:
    assert make_schedule(3) == Constant(3.0)
    assert make_schedule({"kind": "cosine", "start": 5.0, "end": 1.0}) == Cosine(5.0, 1.0)
    assert make_schedule({"kind": "step", "values": [2, 1], "boundaries": [0.5]}) == Step(
        [2, 1], [0.5]
    )
    assert make_schedule({"kind": "cooldown", "high": 8.0}) == cooldown(high=8.0)
    nested = make_schedule(
        {"kind": "phases", "parts": [[0.8, 2.0], [1.0, {"kind": "constant", "value": 1.0}]]}
    )
    assert (nested(0.5), nested(0.9)) == (2.0, 1.0)
    assert set(SCHEDULES) == {
        "constant",
        "step",
        "linear",
        "cosine",
        "exponential",
        "phases",
        "cooldown",
    }


def test_make_schedule_errors_list_the_valid_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown schedule kind 'sine'; valid kinds: \['con"):
        make_schedule({"kind": "sine"})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['stop'\]; valid keys"):
        make_schedule({"kind": "linear", "start": 1, "stop": 2})
    with pytest.raises(ValueError, match=r"needs key\(s\) \['end'\]"):
        make_schedule({"kind": "linear", "start": 1})
    with pytest.raises(TypeError, match="schedule spec"):
        make_schedule("cosine")
    with pytest.raises(TypeError, match="schedule spec"):
        make_schedule(True)


# --------------------------------------------------------------------------- rules: basics


def _drive(rule: DomainRule, steps: range, seed: int = 0) -> list[np.ndarray]:
    """Feeds deterministic batches (domain 2 has the highest loss) and records π after each."""
    out = []
    for step in steps:
        rng = np.random.default_rng([seed, step])
        progress = min(step / 1000, 1.0)
        domains = rng.choice(rule.num_domains, size=32, p=rule.probs(progress))
        losses = 1.0 + domains + 0.1 * rng.standard_normal(32)
        reference = np.full(32, 1.5)
        rule.observe(domains, losses, progress, reference=reference)
        out.append(rule.probs(progress))
    return out


def test_fixed_mixture_normalises_and_reads_do_not_mutate() -> None:
    rule = FixedMixture([2.0, 1.0, 1.0])
    p = rule.probs(0.5)
    assert p.tolist() == [0.5, 0.25, 0.25]
    p[0] = 99.0
    assert rule.probs(0.5).tolist() == [0.5, 0.25, 0.25]
    assert rule.online is False and rule.metrics() == {}
    rule.observe([0, 1], [1.0, 2.0], 0.3)  # non-online: π never changes
    assert rule.probs(0.9).tolist() == [0.5, 0.25, 0.25]
    for bad, match in (([1.0, -1.0], ">= 0"), ([0.0, 0.0], "all zero"), ([math.nan], "finite")):
        with pytest.raises(ValueError, match=match):
            FixedMixture(bad)


def test_temperature_rule_follows_its_schedule() -> None:
    rule = TemperatureRule(SIZES, cooldown(high=5.0, start=0.2, end=0.8))
    np.testing.assert_allclose(rule.probs(0.0), temperature_probs(SIZES, 5.0))
    np.testing.assert_allclose(rule.probs(0.2), temperature_probs(SIZES, 5.0))
    assert rule.probs(0.8).tolist() == [0.9, 0.09, 0.01]
    assert rule.metrics(0.5) == {"tau": pytest.approx(3.0)}
    # Without an argument, metrics use the progress of the latest observe.
    assert rule.metrics() == {"tau": 5.0}
    rule.observe([0], [1.0], 0.9)
    assert rule.metrics() == {"tau": 1.0}
    spec_rule = TemperatureRule(SIZES, {"kind": "cosine", "start": 5, "end": 1}, min_prob=0.05)
    assert spec_rule.probs(1.0)[2] == pytest.approx(0.05)
    assert TemperatureRule([3, 1], math.inf).probs(0.0).tolist() == [0.5, 0.5]


def test_temperature_rule_rejects_invalid_taus_up_front() -> None:
    with pytest.raises(ValueError, match="tau must be > 0"):
        TemperatureRule(SIZES, Linear(1.0, -1.0))
    with pytest.raises(ValueError, match="tau must be > 0"):
        TemperatureRule(SIZES, Step([1.0, 0.0], [0.99]))
    with pytest.raises(ValueError, match=r"domain 0 has size -1\.0"):
        TemperatureRule([-1, 2], 1.0)


# --------------------------------------------------------------------------- end upsampling


def test_end_upsample_switches_exactly_at_the_final_fraction() -> None:
    base = TemperatureRule(SIZES, 1.0)
    rule = EndUpsample(base, fraction=0.2, factors={2: 10.0})
    before = rule.probs(0.8 - 1e-9)
    after = rule.probs(0.8)
    assert before.tolist() == [0.9, 0.09, 0.01]
    expected = np.array([0.9, 0.09, 0.1]) / 1.09
    np.testing.assert_allclose(after, expected, rtol=1e-14)
    np.testing.assert_allclose(rule.probs(1.0), expected, rtol=1e-14)
    assert rule.metrics(0.5) == {"upsampling": 0.0, "tau": 1.0}
    assert rule.metrics(0.8) == {"upsampling": 1.0, "tau": 1.0}
    assert rule.online is False


def test_end_upsample_default_fraction_is_in_the_papers_range() -> None:
    rule = EndUpsample(FixedMixture([1, 1]), factors=[1.0, 2.0])
    assert 0.1 <= rule.fraction <= 0.2
    assert not rule.upsampling(0.84) and rule.upsampling(0.85)


def test_end_upsample_can_switch_to_a_given_mixture() -> None:
    rule = EndUpsample(FixedMixture([0.9, 0.1]), fraction=0.1, mixture=[1.0, 3.0])
    assert rule.probs(0.5).tolist() == [0.9, 0.1]
    assert rule.probs(0.95).tolist() == [0.25, 0.75]


def test_end_upsample_forwards_observations_to_an_online_base() -> None:
    base = DoReMi(3, reference=[1.0, 1.0, 1.0])
    rule = EndUpsample(base, fraction=0.15, factors={0: 2.0})
    assert rule.online is True
    rule.observe([0, 1, 2], [1.0, 1.0, 5.0], 0.1)
    assert base.metrics()["updates"] == 1.0
    assert rule.metrics(0.9)["upsampling"] == 1.0
    np.testing.assert_array_equal(rule.metrics()["weights"], base.probs(0.1))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({}, ValueError, "exactly one of factors"),
        ({"factors": {0: 2.0}, "mixture": [1, 1]}, ValueError, "exactly one of factors"),
        ({"factors": {0: 2.0}, "fraction": 0.0}, ValueError, "fraction must lie in"),
        ({"factors": {0: 2.0}, "fraction": 1.5}, ValueError, "fraction must lie in"),
        ({"factors": {0: -2.0}}, ValueError, "finite and >= 0"),
        ({"factors": {5: 2.0}}, ValueError, "outside 0..1"),
        ({"factors": {"math": 2.0}}, TypeError, "domain indices"),
        ({"factors": [0.0, 0.0]}, ValueError, "all zero"),
        ({"factors": [1.0]}, ValueError, "1 entries for 2 domains"),
        ({"mixture": [1.0, 1.0, 1.0]}, ValueError, "3 entries for 2 domains"),
    ],
)
def test_end_upsample_rejects_bad_arguments(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        EndUpsample(FixedMixture([1, 1]), **kwargs)


def test_end_upsample_errors_when_factors_leave_no_mass() -> None:
    rule = EndUpsample(FixedMixture([1.0, 0.0]), fraction=0.5, factors={0: 0.0})
    with pytest.raises(ValueError, match="leave no mass"):
        rule.probs(0.9)


# --------------------------------------------------------------------------- DoReMi


def test_doremi_update_matches_a_hand_computed_step() -> None:
    eta, c = 0.5, 0.1
    rule = DoReMi(3, eta=eta, smoothing=c, min_prob=0.0, initial=[0.5, 0.3, 0.2])
    domains = [0, 0, 1, 1, 2]
    losses = [3.0, 1.0, 2.0, 2.5, 0.5]
    reference = [1.0, 2.0, 1.0, 1.0, 1.0]
    rule.observe(domains, losses, 0.1, reference=reference)
    # λ_0 = mean(max(3-1, 0), max(1-2, 0)) = 1; λ_1 = mean(1, 1.5) = 1.25; λ_2 = max(-0.5, 0) = 0.
    raw = [0.5 * math.exp(eta * 1.0), 0.3 * math.exp(eta * 1.25), 0.2 * math.exp(0.0)]
    total = sum(raw)
    expected = [(1 - c) * r / total + c / 3 for r in raw]
    np.testing.assert_allclose(rule.probs(0.1), expected, rtol=1e-13)
    metrics = rule.metrics()
    np.testing.assert_allclose(metrics["excess_loss"], [1.0, 1.25, 0.0])
    np.testing.assert_allclose(metrics["average_weights"], expected, rtol=1e-13)


def test_doremi_prefers_per_sample_reference_over_per_domain_reference() -> None:
    with_domain_ref = DoReMi(2, reference=[0.0, 0.0])
    with_domain_ref.observe([0, 1], [2.0, 1.0], 0.0)
    np.testing.assert_allclose(with_domain_ref.metrics()["excess_loss"], [2.0, 1.0])
    with_domain_ref.observe([0, 1], [2.0, 1.0], 0.0, reference=[2.0, 0.0])
    np.testing.assert_allclose(with_domain_ref.metrics()["excess_loss"], [0.0, 1.0])
    without = DoReMi(2)
    with pytest.raises(ValueError, match="DoReMi needs reference losses"):
        without.observe([0, 1], [2.0, 1.0], 0.0)
    assert without.metrics()["updates"] == 0.0


def test_doremi_floor_prevents_collapse_to_one_hot() -> None:
    floored = DoReMi(4, reference=[0.0] * 4, eta=1.0, smoothing=0.0, min_prob=0.01)
    bare = DoReMi(4, reference=[0.0] * 4, eta=1.0, smoothing=0.0, min_prob=0.0)
    for step in range(300):
        for rule in (floored, bare):
            rule.observe([0, 1, 2, 3], [1e6, 0.0, 0.0, 0.0], step / 300)
    p = floored.probs(1.0)
    _assert_distribution(p, 4)
    assert (p >= 0.01 - 1e-15).all()
    np.testing.assert_allclose(p, [0.97, 0.01, 0.01, 0.01])
    # Without the floor (and without smoothing) the weights do collapse.
    assert bare.probs(1.0)[1:].max() < 1e-100


def test_doremi_default_floor_and_smoothing_keep_every_domain_alive() -> None:
    rule = DoReMi(5, reference=[0.0] * 5)
    for step in range(100):
        rule.observe([0, 1, 2, 3, 4], [50.0, 0, 0, 0, 0], step / 100)
    assert rule.min_prob == pytest.approx(0.01 / 5)
    assert rule.probs(1.0).min() >= 0.01 / 5 - 1e-15


def test_doremi_absent_domains_keep_their_excess_loss() -> None:
    rule = DoReMi(3, reference=[1.0, 1.0, 1.0])
    rule.observe([0, 1], [3.0, 4.0], 0.0)
    rule.observe([0, 0], [2.0, 2.0], 0.1)
    np.testing.assert_allclose(rule.metrics()["excess_loss"], [1.0, 3.0, 0.0])


def test_doremi_average_is_the_mean_of_the_updates() -> None:
    current = DoReMi(3, reference=[1.5, 1.5, 1.5])
    history = _drive(current, range(20))
    np.testing.assert_allclose(current.metrics()["average_weights"], np.mean(history, axis=0))
    np.testing.assert_array_equal(current.metrics()["weights"], history[-1])
    average = DoReMi(3, reference=[1.5, 1.5, 1.5], output="average")
    average.load_state_dict(current.state_dict())
    np.testing.assert_allclose(average.probs(0.5), np.mean(history, axis=0), rtol=1e-12)
    assert not np.allclose(average.probs(0.5), current.probs(0.5))


def test_doremi_ignores_non_finite_losses() -> None:
    clean = DoReMi(3, reference=[1.0, 1.0, 1.0])
    noisy = DoReMi(3, reference=[1.0, 1.0, 1.0])
    clean.observe([0, 2], [3.0, 2.0], 0.1)
    noisy.observe([0, 1, 2, 1], [3.0, math.nan, 2.0, math.inf], 0.1)
    np.testing.assert_array_equal(noisy.probs(0.1), clean.probs(0.1))
    np.testing.assert_array_equal(noisy.metrics()["excess_loss"], [2.0, 0.0, 1.0])
    before = noisy.state_dict()
    noisy.observe([1, 1], [math.nan, math.nan], 0.2)  # nothing valid: nothing changes
    assert noisy.metrics()["updates"] == 1.0
    np.testing.assert_array_equal(noisy.state_dict()["alpha"], before["alpha"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eta": -1.0}, "eta must be >= 0"),
        ({"smoothing": 1.5}, "smoothing c must lie in"),
        ({"min_prob": 0.5}, "min_prob must lie in"),
        ({"output": "mean"}, "output must be 'current' or 'average'"),
        ({"reference": [1.0]}, "reference must hold 3"),
        ({"reference": [1.0, math.nan, 1.0]}, "reference must hold 3 finite"),
        ({"initial": [1.0, 1.0]}, "initial has 2 entries for 3 domains"),
    ],
)
def test_doremi_rejects_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DoReMi(3, **kwargs)


# --------------------------------------------------------------------------- ODM


def test_odm_is_uniform_during_warm_up() -> None:
    rule = ODM(4, warmup_steps=10, eta=1.0)
    for step in range(10):
        rule.observe([0, 1, 2, 3], [1.0, 1.0, 1.0, 9.0], step / 100)
        assert rule.probs(step / 100).tolist() == [0.25] * 4
    rewards = np.asarray(rule.metrics()["rewards"])
    assert rewards[3] > rewards[0] > 0
    for step in range(10, 20):
        rule.observe([0, 1, 2, 3], [1.0, 1.0, 1.0, 9.0], step / 100)
    assert rule.probs(0.2)[3] > 0.25


def test_odm_update_matches_a_hand_computed_step() -> None:
    s = 0.9
    rule = ODM(2, eta=None, smoothing=s, warmup_steps=0, min_prob=0.0)
    batch = ([0, 1, 1], [1.0, 2.0, 4.0])
    seen = 1 - 0.5**3  # P(a domain with π = 1/2 appears in 3 draws)
    rewards = np.zeros(2)
    for t in (1, 2):  # π is still uniform for the first two batches (ε_1 = 1/K)
        rule.observe(*batch, progress=t / 10)
        rewards = s * rewards + (1 - s) * np.array([1.0, 3.0]) / seen
    np.testing.assert_allclose(rule.metrics()["rewards"], rewards, rtol=1e-13)
    # t = 1: ε_1 = min(1/2, sqrt(ln 2 / 2)) = 1/2 → uniform; t = 2: ε_2 = sqrt(ln 2 / 4); the
    # policy that produced the t = 3 batch is the t = 2 one, so replay it by hand:
    rule2 = ODM(2, eta=None, smoothing=s, warmup_steps=0, min_prob=0.0)
    r = np.zeros(2)
    pi = np.array([0.5, 0.5])
    eps_prev = 0.5
    for t in (1, 2, 3):
        rule2.observe(*batch, progress=t / 10)
        p_seen = 1 - (1 - pi) ** 3
        r = s * r + (1 - s) * np.array([1.0, 3.0]) / p_seen
        eps = min(0.5, math.sqrt(math.log(2) / (2 * t)))
        soft = np.exp(eps_prev * r) / np.exp(eps_prev * r).sum()
        pi = (1 - 2 * eps) * soft + eps
        eps_prev = eps
        np.testing.assert_allclose(rule2.probs(t / 10), pi, rtol=1e-12)
    assert rule2.metrics()["exploration"] == pytest.approx(math.sqrt(math.log(2) / 6))
    assert rule2.probs(0.3)[1] > rule2.probs(0.3)[0]


def test_odm_single_domain_batch_reward_is_loss_over_probability() -> None:
    rule = ODM(4, smoothing=0.0, warmup_steps=100)
    rule.observe([2], [3.0], 0.0)
    np.testing.assert_allclose(rule.metrics()["rewards"], [0.0, 0.0, 3.0 / 0.25, 0.0])


def test_odm_concentrates_on_the_highest_loss_domain() -> None:
    rule = ODM(4, eta=1.0, warmup_steps=20, seed=3)
    history = _drive(rule, range(600))
    final = history[-1]
    assert int(np.argmax(final)) == 3
    assert final[3] > 0.5
    assert (final >= rule.min_prob - 1e-15).all()
    # With the paper's learning rate η_t = ε_(t-1) the ordering is the same, though flatter.
    paper = ODM(4, warmup_steps=20)
    paper_final = _drive(paper, range(600))[-1]
    assert int(np.argmax(paper_final)) == 3
    assert paper_final[3] < final[3]


def test_odm_updates_the_policy_only_every_update_every_observes() -> None:
    rule = ODM(3, eta=1.0, warmup_steps=2, update_every=3, min_prob=0.0)
    seen = []
    for step in range(12):
        rule.observe([0, 1, 2], [1.0, 2.0, 8.0], step / 100)
        seen.append(rule.metrics()["updates"])
    # Policy updates at observes 5, 8, 11 (3, 6, 9 observes after the 2 warm-up ones).
    assert seen == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3]
    probs = []
    for step in range(12, 15):
        probs.append(rule.probs(step / 100))
        rule.observe([0, 1, 2], [1.0, 2.0, 8.0], step / 100)
    np.testing.assert_array_equal(probs[0], probs[1])
    assert not np.array_equal(rule.probs(0.2), probs[0])


def test_odm_absent_domains_keep_their_reward_and_nan_is_ignored() -> None:
    rule = ODM(3, warmup_steps=50)
    rule.observe([0, 1, 2], [1.0, 2.0, 3.0], 0.0)
    before = np.array(rule.metrics()["rewards"])
    rule.observe([0, 1, 2], [5.0, math.nan, math.nan], 0.1)
    after = np.asarray(rule.metrics()["rewards"])
    assert after[0] != before[0]
    assert after[1:].tolist() == before[1:].tolist()


def test_odm_draw_domain_is_deterministic_and_resumable() -> None:
    a, b = ODM(3, seed=7, warmup_steps=0), ODM(3, seed=7, warmup_steps=0)
    draws_a = []
    for step in range(30):
        d = a.draw_domain(step / 30)
        draws_a.append(d)
        a.observe([d], [1.0 + d], step / 30)
        if step == 14:
            b.load_state_dict(a.state_dict())
    draws_b = []
    for step in range(15, 30):
        d = b.draw_domain(step / 30)
        draws_b.append(d)
        b.observe([d], [1.0 + d], step / 30)
    assert draws_b == draws_a[15:]
    assert len(set(draws_a)) > 1
    assert a.draw_domain(1.0) == a.draw_domain(1.0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"eta": -1.0}, ValueError, "eta must be >= 0"),
        ({"smoothing": 1.0}, ValueError, r"smoothing must lie in \[0, 1\)"),
        ({"warmup_steps": -1}, ValueError, "warmup_steps must be >= 0"),
        ({"update_every": 0}, ValueError, "update_every must be >= 1"),
        ({"update_every": 1.5}, TypeError, "update_every must be an integer"),
        ({"min_prob": 0.4}, ValueError, "min_prob must lie in"),
        ({"seed": -3}, ValueError, "seed must be >= 0"),
    ],
)
def test_odm_rejects_bad_arguments(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        ODM(3, **kwargs)


def test_single_domain_rules_are_trivial() -> None:
    for rule in (ODM(1, warmup_steps=0), DoReMi(1, reference=[0.0])):
        rule.observe([0, 0], [1.0, 2.0], 0.5)
        assert rule.probs(0.5).tolist() == [1.0]


# --------------------------------------------------------------------------- batches


def test_parse_batch_accepts_tensors_and_validates() -> None:
    ids, losses, ref = parse_batch(
        torch.tensor([0, 2, 1]), torch.tensor([1.0, 2.0, float("nan")]), 3, torch.ones(3)
    )
    assert ids.tolist() == [0, 2] and losses.tolist() == [1.0, 2.0]
    assert ref is not None and ref.tolist() == [1.0, 1.0]
    # A sample with a non-finite reference is dropped too.
    ids, _, _ = parse_batch([0, 1], [1.0, 1.0], 2, [math.nan, 0.0])
    assert ids.tolist() == [1]
    with pytest.raises(ValueError, match="domains has 2 entries but losses has 3"):
        parse_batch([0, 1], [1.0, 2.0, 3.0], 2)
    with pytest.raises(ValueError, match=r"sample 1 has 5\.0"):
        parse_batch([0, 5], [1.0, 2.0], 2)
    with pytest.raises(ValueError, match=r"sample 0 has 0\.5"):
        parse_batch([0.5], [1.0], 2)
    with pytest.raises(ValueError, match="reference has 1 entries"):
        parse_batch([0, 1], [1.0, 2.0], 2, [1.0])


def test_online_rules_leave_state_alone_on_bad_batches() -> None:
    for rule in (DoReMi(3, reference=[1.0] * 3), ODM(3, warmup_steps=0)):
        _drive(rule, range(5))
        before = rule.state_dict()
        with pytest.raises(ValueError):
            rule.observe([0, 9], [1.0, 1.0], 0.5)
        with pytest.raises(ValueError):
            rule.observe([0, 1], [1.0, 1.0], 1.5)
        _assert_same_state(rule.state_dict(), before)


# --------------------------------------------------------------------------- state


def _assert_same_state(a: Any, b: Any) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same_state(a[key], b[key])
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        assert a == b


RULE_FACTORIES: dict[str, Callable[[], DomainRule]] = {
    "fixed": lambda: FixedMixture([0.5, 0.3, 0.2]),
    "temperature": lambda: TemperatureRule(SIZES, cooldown()),
    "end_upsample": lambda: EndUpsample(
        DoReMi(3, reference=[1.5] * 3), fraction=0.2, factors={0: 3.0}
    ),
    "doremi": lambda: DoReMi(3, output="average"),
    "odm": lambda: ODM(3, warmup_steps=5, update_every=2),
}


@pytest.mark.parametrize("name", sorted(RULE_FACTORIES))
def test_state_round_trip_continues_identically(name: str) -> None:
    uninterrupted = RULE_FACTORIES[name]()
    expected = _drive(uninterrupted, range(40))
    first = RULE_FACTORIES[name]()
    _drive(first, range(20))
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    resumed = RULE_FACTORIES[name]()
    resumed.load_state_dict(state)
    continued = _drive(resumed, range(20, 40))
    for a, b in zip(expected[20:], continued, strict=True):
        np.testing.assert_array_equal(a, b)
    assert str(resumed.metrics()) == str(uninterrupted.metrics())
    _assert_same_state(resumed.state_dict(), uninterrupted.state_dict())


@pytest.mark.parametrize("name", sorted(RULE_FACTORIES))
def test_reads_never_mutate_and_saved_state_is_a_copy(name: str) -> None:
    rule = RULE_FACTORIES[name]()
    _drive(rule, range(10))
    saved = rule.state_dict()
    reference = rule.state_dict()
    for progress in (0.0, 0.5, 1.0):
        rule.probs(progress)[:] = -1.0
        metrics = rule.metrics(progress)
        for value in metrics.values():
            if isinstance(value, np.ndarray):
                value[:] = -1.0
    _assert_same_state(rule.state_dict(), reference)
    _drive(rule, range(10, 20))
    _assert_same_state(saved, reference)


@pytest.mark.parametrize("name", sorted(RULE_FACTORIES))
def test_load_state_rejects_mismatches_without_corrupting(name: str) -> None:
    rule = RULE_FACTORIES[name]()
    _drive(rule, range(8))
    good = rule.state_dict()
    before = rule.state_dict()
    other_kind = "odm" if name != "odm" else "doremi"
    bad_states: list[tuple[Any, type[Exception], str]] = [
        ({**good, "version": STATE_VERSION + 1}, ValueError, "version"),
        ({**good, "num_domains": 4}, ValueError, "for 4 domains"),
        (RULE_FACTORIES[other_kind]().state_dict(), ValueError, "belongs to rule"),
        ({**good, "progress": 2.0}, ValueError, "progress"),
        ([1, 2, 3], TypeError, "mapping"),
    ]
    for state, error, match in bad_states:
        with pytest.raises(error, match=match):
            rule.load_state_dict(state)
        _assert_same_state(rule.state_dict(), before)


def test_load_state_validates_online_rule_contents() -> None:
    doremi = DoReMi(3, reference=[1.0] * 3)
    _drive(doremi, range(3))
    good = doremi.state_dict()
    before = doremi.state_dict()
    for key, value, match in [
        ("alpha", torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64), "not a probability"),
        ("alpha", torch.tensor([1.0, 0.0], dtype=torch.float64), "must hold 3"),
        ("excess", torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64), ">= 0"),
        ("average", torch.tensor([math.nan, 0.5, 0.5], dtype=torch.float64), "finite"),
        ("updates", -1, "updates"),
    ]:
        with pytest.raises(ValueError, match=match):
            doremi.load_state_dict({**good, key: value})
        _assert_same_state(doremi.state_dict(), before)
    with pytest.raises(ValueError, match="lacks key"):
        doremi.load_state_dict({k: v for k, v in good.items() if k != "excess"})

    odm = ODM(3, warmup_steps=0)
    _drive(odm, range(3))
    good = odm.state_dict()
    with pytest.raises(ValueError, match="policy updates but only"):
        odm.load_state_dict({**good, "updates": 10, "observes": 3})

    nested = EndUpsample(DoReMi(3, reference=[1.0] * 3), factors={0: 2.0})
    _drive(nested, range(3))
    before = nested.state_dict()
    broken = nested.state_dict()
    broken["base"] = {**broken["base"], "alpha": torch.zeros(3, dtype=torch.float64)}
    broken["progress"] = 0.99
    with pytest.raises(ValueError, match="not a probability"):
        nested.load_state_dict(broken)
    _assert_same_state(nested.state_dict(), before)


# --------------------------------------------------------------------------- make_rule


def test_make_rule_builds_every_kind() -> None:
    specs: dict[str, dict[str, Any]] = {
        "fixed": {"kind": "fixed", "probs": {"web": 1.0, "math": 1.0}},
        "natural": {"kind": "natural"},
        "uniform": {"kind": "uniform"},
        "temperature": {"kind": "temperature", "tau": {"kind": "cosine", "start": 5, "end": 1}},
        "cooldown": {"kind": "cooldown", "high": 3.0, "start": 0.0, "end": 0.5},
        "end_upsample": {
            "kind": "end_upsample",
            "base": {"kind": "temperature", "tau": 2.0},
            "fraction": 0.15,
            "factors": {"math": 3.0},
        },
        "doremi": {"kind": "doremi", "reference": {"web": 2.0, "code": 1.0, "math": 1.5}},
        "odm": {"kind": "odm", "warmup_steps": 10, "eta": 1.0},
    }
    assert set(specs) == set(RULES)
    rules = {kind: make_rule(spec, SIZES, NAMES) for kind, spec in specs.items()}
    assert rules["fixed"].probs(0.0).tolist() == [0.5, 0.0, 0.5]
    assert rules["natural"].probs(0.3).tolist() == [0.9, 0.09, 0.01]
    np.testing.assert_allclose(rules["uniform"].probs(0.3), np.full(3, 1 / 3))
    np.testing.assert_allclose(rules["temperature"].probs(0.0), temperature_probs(SIZES, 5.0))
    np.testing.assert_allclose(rules["cooldown"].probs(0.0), temperature_probs(SIZES, 3.0))
    assert rules["cooldown"].probs(0.5).tolist() == [0.9, 0.09, 0.01]
    upsampled = rules["end_upsample"].probs(0.85)
    base = temperature_probs(SIZES, 2.0) * [1.0, 1.0, 3.0]
    np.testing.assert_allclose(upsampled, base / base.sum())
    assert isinstance(rules["doremi"], DoReMi) and isinstance(rules["odm"], ODM)
    rules["doremi"].observe([0, 1, 2], [2.0, 3.0, 1.5], 0.1)
    np.testing.assert_allclose(rules["doremi"].metrics()["excess_loss"], [0.0, 2.0, 0.0])
    assert make_rule("natural", SIZES, NAMES).probs(0.0).tolist() == [0.9, 0.09, 0.01]
    assert make_rule({"kind": "fixed", "probs": [1, 1]}, [5, 5]).probs(0.0).tolist() == [0.5] * 2


def test_make_rule_accepts_hydra_configs() -> None:
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create(
        {
            "kind": "end_upsample",
            "base": {
                "kind": "temperature",
                "tau": {"kind": "phases", "parts": [[0.5, 5], [1.0, 1]]},
            },
            "fraction": 0.2,
            "mixture": {"code": 1.0, "math": 1.0},
        }
    )
    rule = make_rule(cfg, SIZES, NAMES)
    np.testing.assert_allclose(rule.probs(0.1), temperature_probs(SIZES, 5.0))
    assert rule.probs(0.6).tolist() == [0.9, 0.09, 0.01]
    assert rule.probs(0.9).tolist() == [0.0, 0.5, 0.5]


def test_make_rule_errors_list_the_valid_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown domain rule kind 'dro'; valid kinds: \["):
        make_rule({"kind": "dro"}, SIZES, NAMES)
    with pytest.raises(ValueError, match=r"unknown domain rule kind 'bandit'"):
        make_rule("bandit", SIZES, NAMES)
    with pytest.raises(ValueError, match=r"unknown domain 'python'; known domains: \['web'"):
        make_rule({"kind": "end_upsample", "factors": {"python": 3.0}}, SIZES, NAMES)
    with pytest.raises(ValueError, match="unknown domain 'wiki'"):
        make_rule({"kind": "fixed", "probs": {"wiki": 1.0}}, SIZES, NAMES)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['temperature'\]; valid keys"):
        make_rule({"kind": "temperature", "temperature": 2.0}, SIZES, NAMES)
    with pytest.raises(ValueError, match=r"needs key\(s\) \['tau'\]"):
        make_rule({"kind": "temperature"}, SIZES, NAMES)
    with pytest.raises(ValueError, match="2 names"):
        make_rule("natural", SIZES, ["a", "b"])
    with pytest.raises(ValueError, match="unique"):
        make_rule("natural", SIZES, ["a", "a", "b"])
    with pytest.raises(ValueError, match="2 entries for 3 domains"):
        make_rule({"kind": "doremi", "reference": [1.0, 2.0]}, SIZES, NAMES)
    with pytest.raises(ValueError, match="reference must hold 3 finite"):
        make_rule({"kind": "doremi", "reference": {"web": 1.0}}, SIZES, NAMES)
    with pytest.raises(ValueError, match="has 2 domains, the data has 3"):
        make_rule(FixedMixture([1, 1]), SIZES, NAMES)
    with pytest.raises(TypeError, match="rule spec"):
        make_rule(3, SIZES, NAMES)  # type: ignore[arg-type]


def test_make_rule_passes_rules_through_and_accepts_indices() -> None:
    rule = FixedMixture([1, 1, 1])
    assert make_rule(rule, SIZES, NAMES) is rule
    by_index = make_rule({"kind": "end_upsample", "factors": {2: 10.0}}, SIZES, NAMES)
    by_name = make_rule({"kind": "end_upsample", "factors": {"math": 10.0}}, SIZES, NAMES)
    np.testing.assert_array_equal(by_index.probs(0.95), by_name.probs(0.95))
    with pytest.raises(ValueError, match=r"outside 0\.\.2"):
        make_rule({"kind": "end_upsample", "factors": {3: 10.0}}, SIZES, NAMES)
