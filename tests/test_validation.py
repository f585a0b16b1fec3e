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

from reweight import (
    DomainMixing,
    InBatchWeights,
    LossPriority,
    ReducibleLoss,
    Reweighter,
    StaticImportance,
    make_source,
)
from reweight.mixing import DomainRule, Linear, Step
from reweight.sources import SOURCES
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


# Sources are given as specs ({"kind": ..., **fields}): a source validates its fields when it is
# built, so the bad ones below must be built inside the Reweighter (make_source), not at import.


def _inb(**fields: Any) -> dict[str, Any]:
    return {"sources": [{"kind": "in_batch", **fields}], "total_steps": 10}


def _prio(**fields: Any) -> dict[str, Any]:
    return {"sources": [{"kind": "loss_priority", **fields}], "total_steps": 10}


def _static(**fields: Any) -> dict[str, Any]:
    return {"sources": [{"kind": "static", "log_weights": LOGW, **fields}]}


def _mix(rule: Any, **fields: Any) -> dict[str, Any]:
    return {"sources": [{"kind": "mixing", "rule": rule, **fields}], "total_steps": 10}


def _fixed(probs: Any, **fields: Any) -> dict[str, Any]:
    return {"sources": [{"kind": "mixing", "rule": probs, **fields}]}


def _hybrid(rule: Any, sample_rule: Any) -> dict[str, Any]:
    """Draw from ``sample_rule``, correct the loss to ``rule`` (the old mode="hybrid")."""
    return {
        "sources": [
            {"kind": "mixing", "rule": rule, "mode": "weight"},
            {"kind": "mixing", "rule": sample_rule, "mode": "proposal"},
        ],
        "total_steps": 10,
    }


def _sources(*specs: Any) -> dict[str, Any]:
    return {"sources": list(specs), "total_steps": 10}


# (id, Reweighter kwargs, expected error, text the message must contain)
BAD: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    # ---- InBatchWeights
    ("inb-strategy-unknown", _inb(strategy="nope"), ValueError, "InBatchWeights.strategy"),
    ("inb-strategy-type", _inb(strategy=3), TypeError, "InBatchWeights.strategy"),
    ("inb-r-zero", _inb(r=0.0), ValueError, "InBatchWeights.r"),
    ("inb-r-negative", _inb(r=-1.0), ValueError, "InBatchWeights.r"),
    ("inb-r-nan", _inb(r=math.nan), ValueError, "InBatchWeights.r"),
    ("inb-r-inf", _inb(r=math.inf), ValueError, "InBatchWeights.r"),
    ("inb-r-type", _inb(r="big"), TypeError, "InBatchWeights.r"),
    ("inb-r-bool", _inb(r=True), TypeError, "InBatchWeights.r"),
    ("inb-r-linear-to-zero", _inb(r=Linear(1.0, 0.0)), ValueError, "InBatchWeights.r"),
    (
        "inb-r-spec-negative",
        _inb(r={"kind": "linear", "start": 1.0, "end": -0.5, "begin": 0.5}),
        ValueError,
        "InBatchWeights.r",
    ),
    ("inb-r-step-off-grid", _inb(r=Step([1.0, -1.0], [0.97])), ValueError, "InBatchWeights.r"),
    ("inb-r-spec-unknown", _inb(r={"kind": "nope"}), ValueError, "InBatchWeights.r"),
    (
        "inb-r-callable-nan",
        _inb(r=lambda p: 1.0 if p < 0.5 else math.nan),
        ValueError,
        "InBatchWeights.r",
    ),
    (
        "inb-r-callable-raises",
        _inb(r=lambda p: 1.0 / (p - 0.5) ** 2),
        ValueError,
        "InBatchWeights.r",
    ),
    ("inb-r-callable-type", _inb(r=lambda p: "x"), TypeError, "InBatchWeights.r"),
    ("inb-burn-in-negative", _inb(burn_in_steps=-1), ValueError, "InBatchWeights.burn_in_steps"),
    ("inb-burn-in-float", _inb(burn_in_steps=2.5), TypeError, "InBatchWeights.burn_in_steps"),
    ("inb-burn-in-bool", _inb(burn_in_steps=True), TypeError, "InBatchWeights.burn_in_steps"),
    ("inb-cap-z-zero", _inb(cap_z=0.0), ValueError, "InBatchWeights.cap_z"),
    ("inb-cap-z-nan", _inb(cap_z=math.nan), ValueError, "InBatchWeights.cap_z"),
    ("inb-mode", _inb(mode="nope"), ValueError, "InBatchWeights.mode"),
    ("inb-mode-type", _inb(mode=1), TypeError, "InBatchWeights.mode"),
    # in-batch weights are loss weights by nature: the batch is drawn before its losses exist
    ("inb-mode-sample", _inb(mode="sample"), ValueError, "InBatchWeights.mode"),
    ("inb-mode-proposal", _inb(mode="proposal"), ValueError, "InBatchWeights.mode"),
    ("inb-priority-field", _inb(priority="rank"), TypeError, "priority"),
    # ---- LossPriority
    ("prio-mode", _prio(mode="nope"), ValueError, "LossPriority.mode"),
    ("prio-mode-type", _prio(mode=1), TypeError, "LossPriority.mode"),
    ("prio-mode-both", _prio(mode="both"), ValueError, "LossPriority.mode"),
    ("prio-priority", _prio(priority="nope"), ValueError, "LossPriority.priority"),
    ("prio-priority-type", _prio(priority=None), TypeError, "LossPriority.priority"),
    ("prio-pressure-low", _prio(pressure=0.5), ValueError, "LossPriority.pressure"),
    ("prio-pressure-inf", _prio(pressure=math.inf), ValueError, "LossPriority.pressure"),
    ("prio-pressure-nan", _prio(pressure=math.nan), ValueError, "LossPriority.pressure"),
    (
        "prio-temperature-zero",
        _prio(priority="softmax", temperature=0),
        ValueError,
        "LossPriority.temperature",
    ),
    (
        "prio-temperature-neg",
        _prio(priority="softmax", temperature=-1.0),
        ValueError,
        "LossPriority.temperature",
    ),
    (
        "prio-temperature-nan",
        _prio(priority="softmax", temperature=math.nan),
        ValueError,
        "LossPriority.temperature",
    ),
    (
        "prio-temperature-type",
        _prio(priority="softmax", temperature="1"),
        TypeError,
        "LossPriority.temperature",
    ),
    # a field the chosen priority would ignore is an error, not a silent no-op
    (
        "prio-pressure-with-softmax",
        _prio(priority="softmax", pressure=10.0),
        ValueError,
        "LossPriority.pressure",
    ),
    ("prio-temperature-with-rank", _prio(temperature=0.5), ValueError, "LossPriority.temperature"),
    (
        "prio-temperature-with-rank-explicit",
        _prio(priority="rank", temperature=1.0),
        ValueError,
        "LossPriority.temperature",
    ),
    ("prio-floor-zero", _prio(floor=0.0), ValueError, "LossPriority.floor"),
    ("prio-floor-negative", _prio(floor=-0.1), ValueError, "LossPriority.floor"),
    ("prio-floor-above-one", _prio(floor=1.5), ValueError, "LossPriority.floor"),
    ("prio-floor-subnormal", _prio(floor=1e-40), ValueError, "LossPriority.floor"),
    ("prio-decay-one", _prio(decay=1.0), ValueError, "LossPriority.decay"),
    ("prio-decay-negative", _prio(decay=-0.1), ValueError, "LossPriority.decay"),
    ("prio-decay-type", _prio(decay="0.9"), TypeError, "LossPriority.decay"),
    ("prio-prior-name", _prio(prior="median"), ValueError, "LossPriority.prior"),
    ("prio-prior-inf", _prio(prior=math.inf), ValueError, "LossPriority.prior"),
    ("prio-prior-type", _prio(prior=None), TypeError, "LossPriority.prior"),
    ("prio-relax-zero", _prio(relax_steps=0), ValueError, "LossPriority.relax_steps"),
    ("prio-relax-float", _prio(relax_steps=1.5), TypeError, "LossPriority.relax_steps"),
    ("prio-refresh-zero", _prio(refresh_every=0), ValueError, "LossPriority.refresh_every"),
    ("prio-refresh-float", _prio(refresh_every=2.0), TypeError, "LossPriority.refresh_every"),
    # the old DynamicWeights fields that no longer exist
    ("prio-correction-field", _prio(correction=False), TypeError, "correction"),
    ("prio-strategy-field", _prio(strategy="linupper"), TypeError, "strategy"),
    # ---- StaticImportance
    ("static-beta-negative", _static(beta=-1.0), ValueError, "StaticImportance.beta"),
    ("static-beta-nan", _static(beta=math.nan), ValueError, "StaticImportance.beta"),
    ("static-beta-inf", _static(beta=math.inf), ValueError, "StaticImportance.beta"),
    ("static-beta-type", _static(beta="1"), TypeError, "StaticImportance.beta"),
    ("static-beta-overflow", _static(beta=1e308), ValueError, "beta"),
    ("static-clip-zero", _static(clip=0.0), ValueError, "StaticImportance.clip"),
    ("static-clip-negative", _static(clip=-1.0), ValueError, "StaticImportance.clip"),
    ("static-clip-nan", _static(clip=math.nan), ValueError, "StaticImportance.clip"),
    ("static-clip-unordered", _static(clip=(2.0, 1.0)), ValueError, "StaticImportance.clip"),
    ("static-clip-empty", _static(clip=(1.0, 1.0)), ValueError, "StaticImportance.clip"),
    ("static-clip-triple", _static(clip=(1.0, 2.0, 3.0)), ValueError, "StaticImportance.clip"),
    ("static-clip-type", _static(clip="3"), TypeError, "StaticImportance.clip"),
    ("static-floor-zero", _static(floor=0.0), ValueError, "StaticImportance.floor"),
    ("static-floor-above-one", _static(floor=1.5), ValueError, "StaticImportance.floor"),
    ("static-floor-negative", _static(floor=-1e-3), ValueError, "StaticImportance.floor"),
    (
        "static-floor-underflows-float32",
        _static(log_weights=np.r_[np.zeros(N - 1), 200.0], floor=1e-40),
        ValueError,
        "StaticImportance.floor",
    ),
    ("static-mode", _static(mode="hybrid"), ValueError, "StaticImportance.mode"),
    ("static-mode-type", _static(mode=None), TypeError, "StaticImportance.mode"),
    (
        "static-logw-nan",
        _static(log_weights=np.r_[LOGW[:-1], np.nan]),
        ValueError,
        "StaticImportance.log_weights",
    ),
    (  # -inf marks an excluded item: only sampling can honour that
        "static-logw-minus-inf-weight-mode",
        _static(log_weights=np.r_[LOGW[:-1], -np.inf], mode="weight"),
        ValueError,
        "StaticImportance.log_weights",
    ),
    (
        "static-logw-minus-inf-proposal-mode",
        _static(log_weights=np.r_[LOGW[:-1], -np.inf], mode="proposal"),
        ValueError,
        "StaticImportance.log_weights",
    ),
    (
        "static-logw-plus-inf",
        _static(log_weights=np.r_[LOGW[:-1], np.inf]),
        ValueError,
        "StaticImportance.log_weights",
    ),
    (
        "static-logw-length",
        _static(log_weights=LOGW[:-1]),
        ValueError,
        "StaticImportance.log_weights",
    ),
    (
        "static-logw-type",
        _static(log_weights={"a": 1.0}),
        TypeError,
        "StaticImportance.log_weights",
    ),
    # ---- DomainMixing with fixed probabilities (the old DomainWeights)
    ("dw-probs-nan", _fixed([1.0, math.nan, 1.0]), ValueError, "DomainMixing.rule"),
    ("dw-probs-inf", _fixed([1.0, math.inf, 1.0]), ValueError, "DomainMixing.rule"),
    ("dw-probs-negative", _fixed([1.0, -1.0, 1.0]), ValueError, "DomainMixing.rule"),
    ("dw-probs-zero", _fixed([0.0, 0.0, 0.0]), ValueError, "DomainMixing.rule"),
    ("dw-probs-empty", _fixed([]), ValueError, "DomainMixing.rule"),
    ("dw-probs-length", _fixed([1.0, 1.0]), ValueError, "DomainMixing.rule"),
    ("dw-probs-unknown-name", _fixed({"zzz": 1.0}), ValueError, "DomainMixing.rule"),
    ("dw-probs-value-type", _fixed({"a": "x"}), TypeError, "DomainMixing.rule"),
    ("dw-probs-key-type", _fixed({0: 1.0}), TypeError, "DomainMixing.rule"),
    # A string is a rule kind name now (DomainMixing.rule takes fixed probabilities and rules):
    # an unknown one is a ValueError; a value of no accepted type is the TypeError.
    ("dw-probs-type", _fixed({1.0, 2.0, 3.0}), TypeError, "DomainMixing.rule"),
    ("dw-probs-bytes", _fixed(b"abc"), TypeError, "DomainMixing.rule"),
    ("dw-probs-string-kind", _fixed("abc"), ValueError, "DomainMixing.rule"),
    ("dw-probs-map-zero", _fixed({"a": 0.0}), ValueError, "DomainMixing.rule"),
    ("dw-mode", _fixed([1.0, 1.0, 1.0], mode="hybrid"), ValueError, "DomainMixing.mode"),
    (
        "dw-weight-mode-starves-a-drawn-domain",
        _fixed([1.0, 0.0, 1.0], mode="weight"),
        ValueError,
        "DomainMixing.rule",
    ),
    # ---- DomainMixing with a rule
    ("dm-mode", _mix({"kind": "uniform"}, mode="nope"), ValueError, "DomainMixing.mode"),
    ("dm-mode-hybrid", _mix({"kind": "uniform"}, mode="hybrid"), ValueError, "DomainMixing.mode"),
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
    # The old sample_rule of mode="hybrid" is a second DomainMixing in mode="proposal".
    (
        "dm-sample-rule-field",
        _mix({"kind": "uniform"}, sample_rule=2.0),
        TypeError,
        "sample_rule",
    ),
    (
        "dm-sample-rule-tau",
        _hybrid({"kind": "uniform"}, 0.0),
        ValueError,
        "DomainMixing.rule",
    ),
    (
        "dm-sample-rule-type",
        _hybrid({"kind": "uniform"}, None),
        TypeError,
        "DomainMixing.rule",
    ),
    (
        "dm-sample-rule-nan",
        _hybrid({"kind": "uniform"}, _Rule(lambda p: [math.nan] * 3)),
        ValueError,
        "DomainMixing.rule",
    ),
    (
        "dm-hybrid-target-starves-sampled-domain",
        _hybrid({"kind": "fixed", "probs": {"a": 1.0}}, 1.0),
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
    ("dm-name-type", _mix(1.0, name=3), TypeError, "DomainMixing.name"),
    ("dm-name-empty", _mix(1.0, name=""), TypeError, "DomainMixing.name"),
    # ---- the list of sources
    ("source-kind-unknown", _sources({"kind": "nope"}), ValueError, "source kind 'nope'"),
    ("source-kind-old-name", _sources({"kind": "dynamic"}), ValueError, "source kind 'dynamic'"),
    ("source-spec-without-kind", _sources({"rule": 1.0}), TypeError, "'kind'"),
    ("source-spec-type", _sources(object()), TypeError, "a source must be"),
    ("source-spec-string", _sources("mixing"), TypeError, "a source must be"),
    (
        "sources-same-name",
        _sources(
            {"kind": "mixing", "rule": 1.0, "name": "x"},
            {"kind": "static", "log_weights": LOGW, "name": "x"},
        ),
        ValueError,
        "named 'x'",
    ),
    (
        "sources-name-clashes-with-a-default",
        _sources(
            {"kind": "mixing", "rule": 1.0}, {"kind": "mixing", "rule": 2.0, "name": "mixing"}
        ),
        ValueError,
        "named 'mixing'",
    ),
    (
        "sources-two-change-item-factors",
        _sources({"kind": "loss_priority"}, {"kind": "reducible_loss", "reference": np.ones(N)}),
        ValueError,
        "change item factors",
    ),
    ("sources-type", {"sources": object()}, TypeError, "sources"),
    ("sources-one-spec", {"sources": {"kind": "mixing", "rule": 1.0}}, TypeError, "sources"),
    ("sources-string", {"sources": "mixing"}, TypeError, "sources"),
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
    # the old keyword arguments are gone (sources=[...] replaces them)
    ("old-static-keyword", {"static": LOGW}, TypeError, "static"),
    (
        "old-domain-weights-keyword",
        {"domain_weights": [1.0, 1.0, 1.0]},
        TypeError,
        "domain_weights",
    ),
    ("old-dynamic-keyword", {"dynamic": "linupper"}, TypeError, "dynamic"),
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


ALL_MODES = ["sample", "weight", "proposal"]


@pytest.mark.parametrize(
    ("kwargs", "valid"),
    [
        (_inb(strategy="nope"), ["linupper", "quadratic", "extremes", "upper", "hard", "uniform"]),
        (_inb(mode="nope"), ["weight"]),
        (_prio(mode="nope"), ALL_MODES),
        (_prio(priority="nope"), ["rank", "softmax"]),
        (_static(mode="nope"), ALL_MODES),
        (_fixed([1.0, 1.0, 1.0], mode="nope"), ALL_MODES),
        (_mix({"kind": "uniform"}, mode="nope"), ALL_MODES),
        (_mix({"kind": "nope"}), ["cooldown", "doremi", "odm", "temperature"]),
        (_inb(r={"kind": "nope"}), ["constant", "linear", "cosine", "phases"]),
        (_sources({"kind": "nope"}), list(SOURCES)),
        ({"nonfinite": "nope"}, ["mask", "raise"]),
    ],
)
def test_unknown_names_list_the_valid_names(kwargs: dict[str, Any], valid: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        _build(**kwargs)
    for name in valid:
        assert name in str(info.value)


def test_source_kinds() -> None:
    kinds = {
        "static": StaticImportance,
        "mixing": DomainMixing,
        "in_batch": InBatchWeights,
        "loss_priority": LossPriority,
        "reducible_loss": ReducibleLoss,
    }
    assert kinds == SOURCES
    with pytest.raises(ValueError, match="unknown source kind 'nope'") as info:
        make_source({"kind": "nope"})
    assert all(kind in str(info.value) for kind in SOURCES)


def test_sources_check_their_fields_when_built() -> None:
    """Every check that needs no data runs when the source is built, before any Reweighter."""
    with pytest.raises(ValueError, match=r"InBatchWeights\.r"):
        InBatchWeights(r=0.0)
    with pytest.raises(ValueError, match=r"InBatchWeights\.mode.*valid modes: weight"):
        InBatchWeights(mode="sample")
    with pytest.raises(ValueError, match=r"LossPriority\.pressure.*priority='rank'"):
        LossPriority(priority="softmax", pressure=10.0)
    with pytest.raises(ValueError, match=r"LossPriority\.temperature.*priority='softmax'"):
        LossPriority(temperature=2.0)
    with pytest.raises(ValueError, match=r"LossPriority\.mode.*sample, weight, proposal"):
        LossPriority(mode="both")
    with pytest.raises(ValueError, match=r"StaticImportance\.beta"):
        StaticImportance(LOGW, beta=-1.0)
    with pytest.raises(ValueError, match=r"DomainMixing\.mode.*sample, weight, proposal"):
        DomainMixing({"kind": "uniform"}, mode="hybrid")
    with pytest.raises(ValueError, match=r"DomainMixing\.rule"):
        DomainMixing(-2.0)
    with pytest.raises(TypeError, match="correction"):
        LossPriority(correction=True)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="sample_rule"):
        DomainMixing(1.0, sample_rule=2.0)  # type: ignore[call-arg]


def test_a_source_belongs_to_one_reweighter() -> None:
    source = DomainMixing([1.0, 2.0, 3.0])
    _build(sources=[source])
    with pytest.raises(ValueError, match="already belongs to a Reweighter"):
        _build(sources=[source])


def test_error_shows_the_value_and_the_fix() -> None:
    with pytest.raises(ValueError) as info:
        _build(**_prio(priority="softmax", temperature=0))
    message = str(info.value)
    assert "LossPriority.temperature" in message and "0.0" in message and "> 0" in message
    with pytest.raises(ValueError) as info:
        _build(**_inb(r=Linear(1.0, -1.0)))
    message = str(info.value)
    assert "progress 0.5" in message and "-0.0" not in message
    assert "r > 0" in message and "strategy='uniform'" in message
    with pytest.raises(ValueError) as info:
        _build(**_prio(priority="softmax", pressure=10.0))
    message = str(info.value)
    assert "LossPriority.pressure=10.0" in message and "drop it" in message


def test_valid_edge_values_are_accepted() -> None:
    _build(
        sources=[
            InBatchWeights(r=Step([2.0, 0.4], [0.5]), cap_z=math.inf),
            LossPriority(priority="softmax", temperature=math.inf, floor=1.0),
        ],
        total_steps=10,
    )
    _build(
        sources=[
            InBatchWeights(burn_in_steps=np.int64(3)),
            LossPriority(mode="proposal", relax_steps=np.int64(5)),
        ],
        total_steps=10,
    )
    _build(sources=[LossPriority(mode="weight", pressure=1.0)])
    _build(**_static(beta=0.0, clip=(-math.inf, 2.0), floor=1.0, mode="weight"))
    _build(**_static(mode="proposal"))
    _build(**_fixed({"a": 1.0}))  # sample mode may leave domains out
    _build(**_fixed(np.array([1.0, 0.5, 0.25]), mode="weight"))
    _build(**_hybrid(math.inf, {"kind": "cooldown"}))
    _build(**_mix("uniform"))  # a rule kind by name
    # A temperature near 0 gives the small domains shares below float32's range: not drawn.
    rw = _build(**_mix({"kind": "temperature", "tau": 0.01}))
    assert rw.sampler.domain_probs[2] == 0.0 and rw.sampler.domain_probs[0] > 0.99


def test_no_sources_is_a_plain_uniform_sampler() -> None:
    for rw in (_build(), _build(sources=[]), _build(sources=())):
        assert rw.sources == [] and not rw.needs_total_steps
        np.testing.assert_allclose(rw.sampler.probabilities(np.arange(N)), 1.0 / N)
        assert rw.importance_ratios(np.arange(N)).tolist() == [1.0] * N
        rw.reduce(torch.ones(3), {"index": torch.tensor([0, 13, 19])})
        rw.step()
        assert rw.state_dict()["sources"] == {}
    assert Reweighter(5).sampler.num_items == 5


def test_sources_are_named_by_kind_or_name() -> None:
    rw = _build(
        sources=[
            {"kind": "mixing", "rule": {"kind": "uniform"}, "mode": "weight"},
            DomainMixing(3.0, mode="proposal"),
            InBatchWeights(),
            LossPriority(name="priorities"),
        ],
        total_steps=10,
    )
    assert [s.name for s in rw.sources] == ["mixing", "mixing_2", "in_batch", "priorities"]
    assert set(rw.state_dict()["sources"]) == {"mixing", "mixing_2", "in_batch", "priorities"}


def test_nothing_is_built_from_a_bad_configuration() -> None:
    """The configuration-only checks run before the sampler (and its data) is touched."""
    with pytest.raises(ValueError, match=r"LossPriority\.temperature"):
        Reweighter(
            domains=object(),
            sources=[{"kind": "loss_priority", "priority": "softmax", "temperature": 0.0}],
        )  # the bad domains are never read
    with pytest.raises(ValueError, match="source kind"):
        Reweighter(domains=object(), sources=[{"kind": "nope"}])


# ---------------------------------------------------------------- fail clean, unit


def _snapshot(rw: Reweighter) -> dict[str, Any]:
    return {
        "state": rw.state_dict(),
        "metrics": rw.metrics(),
        "q": rw.sampler.probabilities(np.arange(N)),
        "weights": rw.importance_ratios(np.arange(N)),
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
        sources=[DomainMixing(_Rule(probs)), LossPriority(mode="sample", refresh_every=1)],
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
        sources=[
            DomainMixing({"kind": "doremi"}, mode="weight"),
            InBatchWeights(),
            LossPriority(mode="proposal"),
        ],
        total_steps=10,
    )
    batch = {"index": torch.tensor([0, 5, 13, 19])}
    rw.reduce(torch.ones(4), {**batch, "reference_loss": torch.full((4,), 0.5)})
    before = _snapshot(rw)
    with pytest.raises(ValueError, match="reference"):
        rw.reduce(torch.tensor([1.0, 2.0, 3.0, 4.0]), batch)
    _assert_same(_snapshot(rw), before)


def test_out_of_range_indices_are_value_errors() -> None:
    rw = _build(
        sources=[
            InBatchWeights(),
            LossPriority(mode="proposal"),
            DomainMixing([1.0, 2.0, 3.0], mode="weight"),
        ]
    )
    for bad in ([N], [-1]):
        with pytest.raises(ValueError, match="outside"):
            rw.reduce(torch.ones(1), {"index": torch.tensor(bad)})
        with pytest.raises(ValueError, match="outside"):
            rw.importance_ratios(np.array(bad))
        with pytest.raises(ValueError, match="out of range"):
            LossTable(N).update(bad, [1.0], step=0)


def test_warning_as_error_changes_nothing() -> None:
    """Under an error filter the masked-loss warning raises; it comes before any change."""
    rw = _build(sources=[LossPriority(mode="sample")])
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
            sources=[LossPriority(mode="sample", refresh_every=3, pressure=20.0)],
            total_steps=12,
            nonfinite="raise",
        ),
        "dynamic-weight": lambda: _build(
            sources=[
                InBatchWeights(
                    "quadratic", r={"kind": "linear", "start": 1.0, "end": 0.4}, burn_in_steps=2
                )
            ],
            total_steps=12,
        ),
        "dynamic-both": lambda: _build(
            sources=[
                InBatchWeights(),
                LossPriority(
                    priority="softmax",
                    temperature=0.5,
                    refresh_every=2,
                    relax_steps=3,
                    mode="proposal",
                ),
            ],
            total_steps=12,
            nonfinite="raise",
        ),
        "static-weight": lambda: _build(
            sources=[StaticImportance(LOGW, beta=0.5, clip=2.0, mode="weight")], nonfinite="raise"
        ),
        "mixing-weight-odm": lambda: _build(
            sources=[DomainMixing({"kind": "odm", "warmup_steps": 1, "eta": 1.0}, "weight")],
            total_steps=12,
        ),
        "mixing-hybrid-cooldown": lambda: _build(
            sources=[
                DomainMixing(cooldown, mode="weight"),
                DomainMixing(3.0, mode="proposal"),
                InBatchWeights(cap_z=2.0),
                LossPriority(refresh_every=2, mode="proposal"),
            ],
            total_steps=12,
            nonfinite="raise",
        ),
        "mixing-weight-doremi": lambda: _build(
            sources=[
                DomainMixing({"kind": "doremi"}, mode="weight"),
                InBatchWeights(),
                LossPriority(refresh_every=2, mode="proposal"),
            ],
            total_steps=12,
        ),
        "everything": lambda: _build(
            sources=[
                StaticImportance(LOGW, beta=0.3, clip=3.0),
                DomainMixing({"kind": "doremi", "eta": 0.5}, mode="weight"),
                DomainMixing(cooldown, mode="proposal"),
                InBatchWeights(),
                LossPriority(refresh_every=2, mode="sample"),  # the old correction=False
            ],
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
    "importance_ratios_index",
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
    return any(
        isinstance(s, DomainMixing) and isinstance(s.rule, Mapping) and s.rule["kind"] == "doremi"
        for s in rw.sources
    )


def _reads_reference(rw: Reweighter) -> bool:
    return any("reference_loss" in s.batch_keys for s in rw.sources)


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
    elif name == "missing_reference" and _needs_reference(rw):
        rw.reduce(losses, batch)  # DoReMi without reference losses: raises in the update
    elif name in ("missing_reference", "reference_length"):
        if _reads_reference(rw):
            rw.reduce(losses, {**batch, "reference_loss": torch.ones(index.numel() + 1)})
        else:
            # Only the batch keys a source reads are gathered and checked (Source.batch_keys):
            # with no source reading "reference_loss", make the losses the bad part instead.
            reference = torch.ones(index.numel() + 1)
            rw.reduce(torch.cat([losses, losses[:1]]), {**batch, "reference_loss": reference})
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
    elif name == "importance_ratios_index":
        rw.importance_ratios(np.array([0, N + 3]))
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
