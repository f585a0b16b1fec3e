"""Validate at construction, fail clean per step.

Every field of every weight source is checked when the Reweighter is built (ValueError, or
TypeError for a wrong type, naming the field); and a call to ``reduce``/``step`` (or any other
method) that raises leaves the Reweighter exactly as it was — checked against a twin that never
saw the bad calls.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reweight import DomainMixing, DomainWeights, DynamicWeights, Reweighter, StaticWeights
from reweight.mixing import DomainRule, Linear, Step
from reweight.table import LossTable

SIZES = (12, 6, 2)
DOMAINS = np.repeat(np.arange(3), SIZES)
NAMES = ["a", "b", "c"]
N = int(sum(SIZES))
LOGW = np.random.default_rng(0).normal(size=N)


class _Rule(DomainRule):
    """A user rule: π from a function of progress (may misbehave on purpose)."""

    kind = "test"

    def __init__(self, fn: Callable[[float], Any], num_domains: int = 3) -> None:
        super().__init__(num_domains)
        self.fn = fn

    def probs(self, progress: float) -> np.ndarray:
        return np.asarray(self.fn(progress), dtype=np.float64)


def _raise_late(progress: float) -> list[float]:
    if progress > 0.9:
        raise RuntimeError("boom")
    return [1.0, 1.0, 1.0]


def _build(**kwargs: Any) -> Reweighter:
    return Reweighter(domains=DOMAINS, domain_names=NAMES, **kwargs)


def _dyn(**fields: Any) -> dict[str, Any]:
    return {"dynamic": DynamicWeights(**fields), "total_steps": 10}


def _static(**fields: Any) -> dict[str, Any]:
    return {"static": StaticWeights(fields.pop("log_weights", LOGW), **fields)}


def _mix(*args: Any, **fields: Any) -> dict[str, Any]:
    return {"domain_weights": DomainMixing(*args, **fields), "total_steps": 10}


def _fixed(*args: Any, **fields: Any) -> dict[str, Any]:
    return {"domain_weights": DomainWeights(*args, **fields)}


# (id, Reweighter kwargs, expected error, text the message must contain)
BAD: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    # ---- DynamicWeights
    ("dyn-strategy-unknown", _dyn(strategy="nope"), ValueError, "DynamicWeights.strategy"),
    ("dyn-strategy-type", _dyn(strategy=3), TypeError, "DynamicWeights.strategy"),
    ("dyn-r-zero", _dyn(r=0.0), ValueError, "DynamicWeights.r"),
    ("dyn-r-negative", _dyn(r=-1.0), ValueError, "DynamicWeights.r"),
    ("dyn-r-nan", _dyn(r=math.nan), ValueError, "DynamicWeights.r"),
    ("dyn-r-inf", _dyn(r=math.inf), ValueError, "DynamicWeights.r"),
    ("dyn-r-type", _dyn(r="big"), TypeError, "DynamicWeights.r"),
    ("dyn-r-bool", _dyn(r=True), TypeError, "DynamicWeights.r"),
    ("dyn-r-linear-to-zero", _dyn(r=Linear(1.0, 0.0)), ValueError, "DynamicWeights.r"),
    (
        "dyn-r-spec-negative",
        _dyn(r={"kind": "linear", "start": 1.0, "end": -0.5, "begin": 0.5}),
        ValueError,
        "DynamicWeights.r",
    ),
    ("dyn-r-step-off-grid", _dyn(r=Step([1.0, -1.0], [0.97])), ValueError, "DynamicWeights.r"),
    ("dyn-r-spec-unknown", _dyn(r={"kind": "nope"}), ValueError, "DynamicWeights.r"),
    (
        "dyn-r-callable-nan",
        _dyn(r=lambda p: 1.0 if p < 0.5 else math.nan),
        ValueError,
        "DynamicWeights.r",
    ),
    (
        "dyn-r-callable-raises",
        _dyn(r=lambda p: 1.0 / (p - 0.5) ** 2),
        ValueError,
        "DynamicWeights.r",
    ),
    ("dyn-r-callable-type", _dyn(r=lambda p: "x"), TypeError, "DynamicWeights.r"),
    ("dyn-burn-in-negative", _dyn(burn_in_steps=-1), ValueError, "DynamicWeights.burn_in_steps"),
    ("dyn-burn-in-float", _dyn(burn_in_steps=2.5), TypeError, "DynamicWeights.burn_in_steps"),
    ("dyn-burn-in-bool", _dyn(burn_in_steps=True), TypeError, "DynamicWeights.burn_in_steps"),
    ("dyn-mode", _dyn(mode="nope"), ValueError, "DynamicWeights.mode"),
    ("dyn-mode-type", _dyn(mode=1), TypeError, "DynamicWeights.mode"),
    ("dyn-priority", _dyn(mode="sample", priority="nope"), ValueError, "DynamicWeights.priority"),
    ("dyn-priority-type", _dyn(priority=None), TypeError, "DynamicWeights.priority"),
    ("dyn-pressure-low", _dyn(pressure=0.5), ValueError, "DynamicWeights.pressure"),
    ("dyn-pressure-inf", _dyn(pressure=math.inf), ValueError, "DynamicWeights.pressure"),
    ("dyn-pressure-nan", _dyn(pressure=math.nan), ValueError, "DynamicWeights.pressure"),
    (
        "dyn-temperature-zero",
        _dyn(mode="sample", priority="softmax", temperature=0),
        ValueError,
        "DynamicWeights.temperature",
    ),
    ("dyn-temperature-neg", _dyn(temperature=-1.0), ValueError, "DynamicWeights.temperature"),
    ("dyn-temperature-nan", _dyn(temperature=math.nan), ValueError, "DynamicWeights.temperature"),
    ("dyn-temperature-type", _dyn(temperature="1"), TypeError, "DynamicWeights.temperature"),
    ("dyn-floor-zero", _dyn(floor=0.0), ValueError, "DynamicWeights.floor"),
    ("dyn-floor-negative", _dyn(floor=-0.1), ValueError, "DynamicWeights.floor"),
    ("dyn-floor-above-one", _dyn(floor=1.5), ValueError, "DynamicWeights.floor"),
    ("dyn-floor-subnormal", _dyn(floor=1e-40), ValueError, "DynamicWeights.floor"),
    ("dyn-decay-one", _dyn(decay=1.0), ValueError, "DynamicWeights.decay"),
    ("dyn-decay-negative", _dyn(decay=-0.1), ValueError, "DynamicWeights.decay"),
    ("dyn-decay-type", _dyn(decay="0.9"), TypeError, "DynamicWeights.decay"),
    ("dyn-prior-name", _dyn(prior="median"), ValueError, "DynamicWeights.prior"),
    ("dyn-prior-inf", _dyn(prior=math.inf), ValueError, "DynamicWeights.prior"),
    ("dyn-prior-type", _dyn(prior=None), TypeError, "DynamicWeights.prior"),
    ("dyn-relax-zero", _dyn(relax_steps=0), ValueError, "DynamicWeights.relax_steps"),
    ("dyn-relax-float", _dyn(relax_steps=1.5), TypeError, "DynamicWeights.relax_steps"),
    ("dyn-refresh-zero", _dyn(refresh_every=0), ValueError, "DynamicWeights.refresh_every"),
    ("dyn-refresh-float", _dyn(refresh_every=2.0), TypeError, "DynamicWeights.refresh_every"),
    ("dyn-cap-z-zero", _dyn(cap_z=0.0), ValueError, "DynamicWeights.cap_z"),
    ("dyn-cap-z-nan", _dyn(cap_z=math.nan), ValueError, "DynamicWeights.cap_z"),
    ("dyn-correction-type", _dyn(correction="yes"), TypeError, "DynamicWeights.correction"),
    # ---- StaticWeights
    ("static-beta-negative", _static(beta=-1.0), ValueError, "StaticWeights.beta"),
    ("static-beta-nan", _static(beta=math.nan), ValueError, "StaticWeights.beta"),
    ("static-beta-inf", _static(beta=math.inf), ValueError, "StaticWeights.beta"),
    ("static-beta-type", _static(beta="1"), TypeError, "StaticWeights.beta"),
    ("static-beta-overflow", _static(beta=1e308), ValueError, "beta"),
    ("static-clip-zero", _static(clip=0.0), ValueError, "StaticWeights.clip"),
    ("static-clip-negative", _static(clip=-1.0), ValueError, "StaticWeights.clip"),
    ("static-clip-nan", _static(clip=math.nan), ValueError, "StaticWeights.clip"),
    ("static-clip-unordered", _static(clip=(2.0, 1.0)), ValueError, "StaticWeights.clip"),
    ("static-clip-empty", _static(clip=(1.0, 1.0)), ValueError, "StaticWeights.clip"),
    ("static-clip-triple", _static(clip=(1.0, 2.0, 3.0)), ValueError, "StaticWeights.clip"),
    ("static-clip-type", _static(clip="3"), TypeError, "StaticWeights.clip"),
    ("static-floor-zero", _static(floor=0.0), ValueError, "StaticWeights.floor"),
    ("static-floor-above-one", _static(floor=1.5), ValueError, "StaticWeights.floor"),
    ("static-floor-negative", _static(floor=-1e-3), ValueError, "StaticWeights.floor"),
    (
        "static-floor-underflows-float32",
        _static(log_weights=np.r_[np.zeros(N - 1), 200.0], floor=1e-40),
        ValueError,
        "StaticWeights.floor",
    ),
    ("static-mode", _static(mode="hybrid"), ValueError, "StaticWeights.mode"),
    (
        "static-logw-nan",
        _static(log_weights=np.r_[LOGW[:-1], np.nan]),
        ValueError,
        "StaticWeights.log_weights",
    ),
    (
        "static-logw-inf",
        _static(log_weights=np.r_[LOGW[:-1], -np.inf]),
        ValueError,
        "StaticWeights.log_weights",
    ),
    (
        "static-logw-length",
        _static(log_weights=LOGW[:-1]),
        ValueError,
        "StaticWeights.log_weights",
    ),
    ("static-logw-type", _static(log_weights={"a": 1.0}), TypeError, "StaticWeights.log_weights"),
    # ---- DomainWeights
    ("dw-probs-nan", _fixed([1.0, math.nan, 1.0]), ValueError, "DomainWeights.probs"),
    ("dw-probs-inf", _fixed([1.0, math.inf, 1.0]), ValueError, "DomainWeights.probs"),
    ("dw-probs-negative", _fixed([1.0, -1.0, 1.0]), ValueError, "DomainWeights.probs"),
    ("dw-probs-zero", _fixed([0.0, 0.0, 0.0]), ValueError, "DomainWeights.probs"),
    ("dw-probs-empty", _fixed([]), ValueError, "DomainWeights.probs"),
    ("dw-probs-length", _fixed([1.0, 1.0]), ValueError, "DomainWeights.probs"),
    ("dw-probs-unknown-name", _fixed({"zzz": 1.0}), ValueError, "DomainWeights.probs"),
    ("dw-probs-value-type", _fixed({"a": "x"}), TypeError, "DomainWeights.probs"),
    ("dw-probs-key-type", _fixed({0: 1.0}), TypeError, "DomainWeights.probs"),
    ("dw-probs-type", _fixed("abc"), TypeError, "DomainWeights.probs"),
    ("dw-probs-map-zero", _fixed({"a": 0.0}), ValueError, "DomainWeights.probs"),
    ("dw-mode", _fixed([1.0, 1.0, 1.0], mode="hybrid"), ValueError, "DomainWeights.mode"),
    (
        "dw-weight-mode-starves-a-drawn-domain",
        _fixed([1.0, 0.0, 1.0], mode="weight"),
        ValueError,
        "DomainWeights.probs",
    ),
    # ---- DomainMixing
    ("dm-mode", _mix({"kind": "uniform"}, mode="nope"), ValueError, "DomainMixing.mode"),
    ("dm-rule-kind", _mix({"kind": "nope"}), ValueError, "DomainMixing.rule"),
    ("dm-rule-type", _mix(None), TypeError, "DomainMixing.rule"),
    ("dm-rule-tau", _mix({"kind": "temperature", "tau": -1.0}), ValueError, "DomainMixing.rule"),
    ("dm-rule-number", _mix(-2.0), ValueError, "DomainMixing.rule"),
    ("dm-rule-key", _mix({"kind": "cooldown", "hgh": 3.0}), ValueError, "DomainMixing.rule"),
    (
        "dm-rule-nan-mid-run",
        _mix(_Rule(lambda p: [1.0, math.nan if p > 0.5 else 1.0, 1.0])),
        ValueError,
        "DomainMixing.rule",
    ),
    ("dm-rule-negative", _mix(_Rule(lambda p: [1.0, -1.0, 1.0])), ValueError, "DomainMixing.rule"),
    ("dm-rule-all-zero", _mix(_Rule(lambda p: [0.0, 0.0, 0.0])), ValueError, "DomainMixing.rule"),
    ("dm-rule-length", _mix(_Rule(lambda p: [1.0, 1.0])), ValueError, "DomainMixing.rule"),
    ("dm-rule-raises", _mix(_Rule(_raise_late)), ValueError, "DomainMixing.rule"),
    ("dm-rule-domains", _mix(_Rule(lambda p: [1.0, 1.0], 2)), ValueError, "DomainMixing.rule"),
    (
        "dm-rule-weight-starves",
        _mix({"kind": "fixed", "probs": {"a": 1.0, "b": 1.0}}, mode="weight"),
        ValueError,
        "DomainMixing.rule",
    ),
    (
        "dm-rule-end-upsample-starves-at-switch",
        _mix(
            {"kind": "end_upsample", "fraction": 0.1, "factors": {"b": 0.0}},
            mode="weight",
        ),
        ValueError,
        "DomainMixing.rule",
    ),
    (
        "dm-sample-rule-without-hybrid",
        _mix({"kind": "uniform"}, sample_rule=2.0),
        ValueError,
        "DomainMixing.sample_rule",
    ),
    (
        "dm-hybrid-without-sample-rule",
        _mix({"kind": "uniform"}, mode="hybrid"),
        ValueError,
        "DomainMixing.sample_rule",
    ),
    (
        "dm-sample-rule-tau",
        _mix({"kind": "uniform"}, mode="hybrid", sample_rule=0.0),
        ValueError,
        "DomainMixing.sample_rule",
    ),
    (
        "dm-sample-rule-type",
        _mix({"kind": "uniform"}, mode="hybrid", sample_rule=[1, 2]),
        TypeError,
        "DomainMixing.sample_rule",
    ),
    (
        "dm-sample-rule-nan",
        _mix({"kind": "uniform"}, mode="hybrid", sample_rule=_Rule(lambda p: [math.nan] * 3)),
        ValueError,
        "DomainMixing.sample_rule",
    ),
    (
        "dm-hybrid-target-starves-sampled-domain",
        _mix({"kind": "fixed", "probs": {"a": 1.0}}, mode="hybrid", sample_rule=1.0),
        ValueError,
        "DomainMixing.rule",
    ),
    (
        "dm-reference-length",
        _mix({"kind": "doremi"}, reference=np.ones(N - 1)),
        ValueError,
        "DomainMixing.reference",
    ),
    (
        "dm-reference-nan",
        _mix({"kind": "doremi"}, reference=np.r_[np.ones(N - 1), np.nan]),
        ValueError,
        "DomainMixing.reference",
    ),
    (
        "dm-reference-type",
        _mix({"kind": "doremi"}, reference={"a": 1.0}),
        TypeError,
        "DomainMixing.reference",
    ),
    # ---- Reweighter arguments
    ("realised-decay-one", {"realised_decay": 1.0}, ValueError, "realised_decay"),
    ("realised-decay-negative", {"realised_decay": -0.1}, ValueError, "realised_decay"),
    ("realised-decay-nan", {"realised_decay": math.nan}, ValueError, "realised_decay"),
    ("realised-decay-type", {"realised_decay": "0.9"}, TypeError, "realised_decay"),
    ("nonfinite-unknown", {"nonfinite": "ignore"}, ValueError, "nonfinite"),
    ("nonfinite-type", {"nonfinite": None}, TypeError, "nonfinite"),
    ("total-steps-zero", {"total_steps": 0}, ValueError, "total_steps"),
    ("total-steps-negative", {"total_steps": -5}, ValueError, "total_steps"),
    ("total-steps-float", {"total_steps": 2.5}, TypeError, "total_steps"),
    ("total-steps-bool", {"total_steps": True}, TypeError, "total_steps"),
    ("static-type", {"static": object()}, TypeError, "static"),
    ("domain-weights-type", {"domain_weights": [1.0, 1.0, 1.0]}, TypeError, "domain_weights"),
    ("dynamic-type", {"dynamic": "linupper"}, TypeError, "dynamic"),
]


@pytest.mark.parametrize(
    ("kwargs", "error", "field"), [c[1:] for c in BAD], ids=[c[0] for c in BAD]
)
def test_bad_field_raises_at_construction(
    kwargs: dict[str, Any], error: type[Exception], field: str
) -> None:
    with pytest.raises(error, match=field.replace(".", r"\.")) as info:
        _build(**kwargs)
    assert type(info.value) is error  # not a subclass such as IndexError or KeyError


def test_bad_domain_names_raise() -> None:
    with pytest.raises(ValueError, match="domain_names"):
        Reweighter(domains=DOMAINS, domain_names=["a", "a", "b"])
    with pytest.raises(ValueError, match="num_domains=2"):  # the sampler checks the ids
        Reweighter(domains=DOMAINS, domain_names=["a", "b"])
    with pytest.raises(TypeError, match="domain_names"):
        Reweighter(domains=DOMAINS, domain_names="abc")


@pytest.mark.parametrize(
    ("kwargs", "valid"),
    [
        (_dyn(strategy="nope"), ["linupper", "quadratic", "extremes", "upper", "hard", "uniform"]),
        (_dyn(mode="nope"), ["weight", "sample", "both"]),
        (_dyn(priority="nope"), ["rank", "softmax"]),
        (_static(mode="nope"), ["sample", "weight"]),
        (_fixed([1.0, 1.0, 1.0], mode="nope"), ["sample", "weight"]),
        (_mix({"kind": "uniform"}, mode="nope"), ["sample", "weight", "hybrid"]),
        (_mix({"kind": "nope"}), ["cooldown", "doremi", "odm", "temperature"]),
        (_dyn(r={"kind": "nope"}), ["constant", "linear", "cosine", "phases"]),
        ({"nonfinite": "nope"}, ["mask", "raise"]),
    ],
)
def test_unknown_names_list_the_valid_names(kwargs: dict[str, Any], valid: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        _build(**kwargs)
    for name in valid:
        assert name in str(info.value)


def test_error_shows_the_value_and_the_fix() -> None:
    with pytest.raises(ValueError) as info:
        _build(**_dyn(mode="sample", priority="softmax", temperature=0))
    message = str(info.value)
    assert "DynamicWeights.temperature" in message and "0.0" in message and "> 0" in message
    with pytest.raises(ValueError) as info:
        _build(**_dyn(r=Linear(1.0, -1.0)))
    message = str(info.value)
    assert "progress 0.5" in message and "-0.0" not in message
    assert "r > 0" in message and "strategy='uniform'" in message


def test_valid_edge_values_are_accepted() -> None:
    _build(**_dyn(r=Step([2.0, 0.4], [0.5]), temperature=math.inf, cap_z=math.inf, floor=1.0))
    _build(**_dyn(mode="both", relax_steps=np.int64(5), burn_in_steps=np.int64(3)))
    _build(**_static(beta=0.0, clip=(-math.inf, 2.0), floor=1.0, mode="weight"))
    _build(**_fixed({"a": 1.0}))  # sample mode may leave domains out
    _build(**_fixed(np.array([1.0, 0.5, 0.25]), mode="weight"))
    _build(**_mix(math.inf, mode="hybrid", sample_rule={"kind": "cooldown"}))
    # A temperature near 0 gives the small domains shares below float32's range: not drawn.
    rw = _build(**_mix({"kind": "temperature", "tau": 0.01}))
    assert rw.sampler.domain_probs[2] == 0.0 and rw.sampler.domain_probs[0] > 0.99


def test_nothing_is_built_from_a_bad_configuration() -> None:
    """The configuration-only checks run before the sampler (and its data) is touched."""
    with pytest.raises(ValueError, match=r"DynamicWeights\.temperature"):
        Reweighter(
            domains=object(), dynamic=DynamicWeights(temperature=0.0)
        )  # the bad domains are never read


# ---------------------------------------------------------------- fail clean, unit


def _snapshot(rw: Reweighter) -> dict[str, Any]:
    return {
        "state": rw.state_dict(),
        "metrics": rw.metrics(),
        "q": rw.sampler.probabilities(np.arange(N)),
        "weights": rw.loss_weights(np.arange(N)),
    }


def _assert_same(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, where
        if a.is_floating_point():  # NaN (e.g. a domain loss not seen yet) equals NaN here
            assert torch.equal(a.isnan(), b.isnan()), where
            a, b = torch.where(a.isnan(), 0.0, a), torch.where(b.isnan(), 0.0, b)
        assert torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and np.array_equal(a, b, equal_nan=True), where
    elif isinstance(a, Mapping):
        assert isinstance(b, Mapping) and sorted(a) == sorted(b), (where, sorted(a), sorted(b))
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b, (where, a, b)


def test_step_that_fails_at_an_off_grid_progress_changes_nothing() -> None:
    """A user rule that passes the grid check but raises at progress 0.3 (step 3 of 10)."""

    def probs(progress: float) -> list[float]:
        if abs(progress - 0.3) < 1e-12:
            raise RuntimeError("this rule cannot handle 0.3")
        return [1.0, 1.0, 1.0]

    rw = _build(
        domain_weights=DomainMixing(_Rule(probs)),
        dynamic=DynamicWeights(mode="sample", refresh_every=1),
        total_steps=10,
    )
    rw.reduce(torch.ones(4), {"index": torch.tensor([0, 5, 13, 19])})
    rw.step()
    rw.step()
    before = _snapshot(rw)
    with pytest.raises(RuntimeError, match=r"0\.3"):
        rw.step()
    _assert_same(_snapshot(rw), before)
    assert rw.global_step == 2


def test_doremi_without_reference_fails_clean() -> None:
    """DoReMi needs reference losses (per item, or per batch): a batch without them raises
    before the loss table, the domain losses or the counters change."""
    rw = _build(
        domain_weights=DomainMixing({"kind": "doremi"}, mode="weight"),
        dynamic=DynamicWeights(mode="both"),
        total_steps=10,
    )
    batch = {"index": torch.tensor([0, 5, 13, 19])}
    rw.reduce(torch.ones(4), {**batch, "reference_loss": torch.full((4,), 0.5)})
    before = _snapshot(rw)
    with pytest.raises(ValueError, match="reference"):
        rw.reduce(torch.tensor([1.0, 2.0, 3.0, 4.0]), batch)
    _assert_same(_snapshot(rw), before)


def test_out_of_range_indices_are_value_errors() -> None:
    rw = _build(dynamic=DynamicWeights(mode="both"), **_fixed([1.0, 2.0, 3.0], mode="weight"))
    for bad in ([N], [-1]):
        with pytest.raises(ValueError, match="outside"):
            rw.reduce(torch.ones(1), {"index": torch.tensor(bad)})
        with pytest.raises(ValueError, match="outside"):
            rw.loss_weights(np.array(bad))
        with pytest.raises(ValueError, match="out of range"):
            LossTable(N).update(bad, [1.0], step=0)


def test_warning_as_error_changes_nothing() -> None:
    """Under an error filter the masked-loss warning raises; it comes before any change."""
    rw = _build(dynamic=DynamicWeights(mode="sample"))
    before = _snapshot(rw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeWarning, match="masked"):
            rw.reduce(torch.tensor([1.0, math.nan]), {"index": torch.tensor([0, 1])})
    _assert_same(_snapshot(rw), before)


# ---------------------------------------------------------------- fail clean, property


def _configs() -> dict[str, Callable[[], Reweighter]]:
    cooldown = {"kind": "cooldown", "high": 4.0, "start": 0.1, "end": 0.6}
    return {
        "dynamic-sample": lambda: _build(
            dynamic=DynamicWeights(mode="sample", refresh_every=3, pressure=20.0),
            total_steps=12,
            nonfinite="raise",
        ),
        "dynamic-weight": lambda: _build(
            dynamic=DynamicWeights(
                "quadratic", r={"kind": "linear", "start": 1.0, "end": 0.4}, burn_in_steps=2
            ),
            total_steps=12,
        ),
        "dynamic-both": lambda: _build(
            dynamic=DynamicWeights(
                mode="both", priority="softmax", temperature=0.5, refresh_every=2, relax_steps=3
            ),
            total_steps=12,
            nonfinite="raise",
        ),
        "static-weight": lambda: _build(
            static=StaticWeights(LOGW, beta=0.5, clip=2.0, mode="weight"), nonfinite="raise"
        ),
        "mixing-weight-odm": lambda: _build(
            domain_weights=DomainMixing({"kind": "odm", "warmup_steps": 1, "eta": 1.0}, "weight"),
            total_steps=12,
        ),
        "mixing-hybrid-cooldown": lambda: _build(
            domain_weights=DomainMixing(cooldown, mode="hybrid", sample_rule=3.0),
            dynamic=DynamicWeights(mode="both", refresh_every=2, cap_z=2.0),
            total_steps=12,
            nonfinite="raise",
        ),
        "mixing-weight-doremi": lambda: _build(
            domain_weights=DomainMixing({"kind": "doremi"}, mode="weight"),
            dynamic=DynamicWeights(mode="both", refresh_every=2),
            total_steps=12,
        ),
        "everything": lambda: _build(
            static=StaticWeights(LOGW, beta=0.3, clip=3.0),
            domain_weights=DomainMixing(
                {"kind": "doremi", "eta": 0.5}, mode="hybrid", sample_rule=cooldown
            ),
            dynamic=DynamicWeights(mode="both", correction=False, refresh_every=2),
            total_steps=12,
        ),
    }


CONFIGS = _configs()

VALID_OPS = ("reduce", "reduce", "reduce", "step", "step", "reduce_masked")
BAD_OPS = (
    "nan_loss",
    "all_nan_loss",
    "index_too_large",
    "index_negative",
    "length_mismatch",
    "losses_2d",
    "missing_index",
    "float_index",
    "losses_not_tensor",
    "reference_length",
    "sampler_negative",
    "sampler_index",
    "total_steps_zero",
    "total_steps_float",
    "total_steps_nan",
    "loss_weights_index",
    "load_garbage",
    # The one bad call that gets past reduce()'s input checks (into the updates) in the DoReMi
    # configuration, so it is drawn more often.
    "missing_reference",
    "missing_reference",
    "missing_reference",
)


def _batch(rw: Reweighter, rng: np.random.Generator, seed: int) -> tuple[torch.Tensor, Any]:
    size = int(rng.integers(1, 7))
    index = torch.from_numpy(rw.sampler.sample(size, seed=seed))
    losses = torch.from_numpy(rng.gamma(2.0, 1.0, size=size))
    return losses, index


def _needs_reference(rw: Reweighter) -> bool:
    mixing = rw.domain_weights
    return isinstance(mixing, DomainMixing) and mixing.rule.get("kind") == "doremi"


def _reference(index: torch.Tensor) -> torch.Tensor:
    return torch.linspace(0.5, 1.5, index.numel(), dtype=torch.float64)


def _bad_call(name: str, rw: Reweighter, rng: np.random.Generator, seed: int) -> None:
    losses, index = _batch(rw, rng, seed)
    batch = {"index": index}
    if name == "nan_loss":
        losses[0] = math.nan
        if rw.nonfinite == "mask":
            losses[:] = math.nan  # masking a few is valid: make them all bad
        rw.reduce(losses, batch)
    elif name == "all_nan_loss":
        rw.reduce(torch.full_like(losses, math.inf), batch)
    elif name == "index_too_large":
        index[-1] = N
        rw.reduce(losses, batch)
    elif name == "index_negative":
        index[0] = -1
        rw.reduce(losses, batch)
    elif name == "length_mismatch":
        rw.reduce(torch.cat([losses, losses[:1]]), batch)
    elif name == "losses_2d":
        rw.reduce(losses.reshape(-1, 1).repeat(1, 2), batch)
    elif name == "missing_index":
        rw.reduce(losses, {"idx": index})
    elif name == "float_index":
        rw.reduce(losses, {"index": index.to(torch.float32)})
    elif name == "losses_not_tensor":
        rw.reduce(losses.tolist(), batch)  # type: ignore[arg-type]
    elif name == "missing_reference":
        if _needs_reference(rw):  # DoReMi without reference losses: raises in the update
            rw.reduce(losses, batch)
        else:
            rw.reduce(losses, {**batch, "reference_loss": torch.ones(index.numel() + 1)})
    elif name == "reference_length":
        rw.reduce(losses, {**batch, "reference_loss": torch.ones(index.numel() + 1)})
    elif name == "sampler_negative":
        rw.sampler.update(index.numpy(), -np.ones(index.numel()))
    elif name == "sampler_index":
        rw.sampler.update([N], [1.0])
    elif name == "total_steps_zero":
        rw.set_total_steps(0)
    elif name == "total_steps_float":
        rw.set_total_steps(12.5)  # type: ignore[arg-type]
    elif name == "total_steps_nan":
        rw.set_total_steps(math.nan)  # type: ignore[arg-type]
    elif name == "loss_weights_index":
        rw.loss_weights(np.array([0, N + 3]))
    elif name == "load_garbage":
        rw.load_state_dict({"version": -1})
    else:  # pragma: no cover
        raise AssertionError(name)


def _valid_call(name: str, rw: Reweighter, twin: Reweighter, rng_seed: int, seed: int) -> None:
    if name == "step":
        rw.step()
        twin.step()
        return
    losses, index = _batch(rw, np.random.default_rng(rng_seed), seed)
    if name == "reduce_masked":
        if rw.nonfinite == "raise" or losses.numel() < 2:
            return
        losses[0] = math.nan
    batch = {"index": index, "reference_loss": _reference(index)}  # ignored unless DoReMi
    first = rw.reduce(losses.clone(), batch)
    second = twin.reduce(losses.clone(), batch)
    assert torch.equal(first, second)


@pytest.mark.filterwarnings("ignore:.*per-sample losses are NaN.*:RuntimeWarning")
@pytest.mark.parametrize("config", sorted(CONFIGS))
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    calls=st.lists(
        st.tuples(
            st.booleans(),
            st.sampled_from(VALID_OPS),
            st.sampled_from(BAD_OPS),
            st.integers(0, 2**16),
        ),
        min_size=4,
        max_size=30,
    ),
)
def test_bad_calls_change_nothing(config: str, calls: list[tuple[bool, str, str, int]]) -> None:
    rw, twin = CONFIGS[config](), CONFIGS[config]()
    for i, (bad, valid_op, bad_op, seed) in enumerate(calls):
        if bad:
            rng = np.random.default_rng(seed)
            with pytest.raises((ValueError, TypeError, IndexError)):
                _bad_call(bad_op, rw, rng, seed)
            _assert_same(_snapshot(rw), _snapshot(twin), f"after bad call {i} {bad_op}")
        else:
            _valid_call(valid_op, rw, twin, seed, seed + 1)
    _assert_same(_snapshot(rw), _snapshot(twin), "at the end")
