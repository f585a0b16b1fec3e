"""Tests for the loss → weight strategies in reweight.weights (Sow et al. 2025)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reweight.weights import (
    STRATEGIES,
    cap_losses,
    get_strategy,
    loss_weights,
    normalize_losses,
    register_strategy,
    strategy_at,
)
from reweight.weights import loss as loss_module

SOW = ["linupper", "quadratic", "extremes", "upper"]
ALL = ["uniform", *SOW, "hard"]


def softmax_mean_one(scores: list[float], r: float) -> list[float]:
    """n · softmax(scores / r), written out by hand in plain Python."""
    e = [math.exp(s / r) for s in scores]
    total = sum(e)
    return [len(scores) * x / total for x in e]


finite_losses = st.lists(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False),
    min_size=1,
    max_size=64,
)


# ---------------------------------------------------------------- hand-computed values


def test_normalisation_matches_sow_et_al() -> None:
    # h = (2l − (l_max + l_min)) / (l_max − l_min): 2 → −1, 3 → −0.5, 6 → 1
    h = normalize_losses(torch.tensor([2.0, 3.0, 6.0]))
    assert h.dtype == torch.float64
    assert h.tolist() == pytest.approx([-1.0, -0.5, 1.0])


def test_small_spread_is_not_stretched_below_min_range() -> None:
    x = torch.tensor([1.0, 1.0 + 1e-8], dtype=torch.float64)
    h = normalize_losses(x)
    # (2l − (lmax + lmin)) / 1e-6 = ±1e-8 / 1e-6 = ±0.01
    assert h.tolist() == pytest.approx([-0.01, 0.01])
    assert normalize_losses(x, min_range=0.0).tolist() == [
        -1.0,
        1.0,
    ]


@pytest.mark.parametrize(
    ("strategy", "f"),
    [
        ("uniform", [0.0, 0.0, 0.0]),
        ("linupper", [0.5, 1.0, 1.0]),  # min(h + 1, 1) at h = −0.5, 0.5, 1
        ("quadratic", [0.75, 0.75, 0.0]),  # 1 − h²
        ("extremes", [0.5, 0.5, 1.0]),  # |h|
        ("upper", [0.25, 0.75, 1.0]),  # 0.5h + 0.5
    ],
)
@pytest.mark.parametrize("r", [0.4, 1.0, 3.0])
def test_sow_strategies_against_hand_computed_values(
    strategy: str, f: list[float], r: float
) -> None:
    # losses 1, 3, 4 and 0 (range [0, 4]): h = l/2 − 1 = −0.5, 0.5, 1 and −1.
    losses = torch.tensor([1.0, 3.0, 4.0, 0.0], dtype=torch.float64)
    f_all = [*f, _f_at_minus_one(strategy)]
    expected = softmax_mean_one(f_all, r)
    got = loss_weights(losses, strategy, r=r)
    assert got.tolist() == pytest.approx(expected, rel=1e-12)


def _f_at_minus_one(strategy: str) -> float:
    return {"uniform": 0.0, "linupper": 0.0, "quadratic": 0.0, "extremes": 1.0, "upper": 0.0}[
        strategy
    ]


def test_hard_is_softmax_of_raw_losses() -> None:
    losses = [0.5, 1.0, 4.0]
    got = loss_weights(torch.tensor(losses, dtype=torch.float64), "hard", r=2.0)
    assert got.tolist() == pytest.approx(softmax_mean_one(losses, 2.0), rel=1e-12)
    # shift invariance: only differences of raw losses matter
    shifted = loss_weights(torch.tensor(losses, dtype=torch.float64) + 100.0, "hard", r=2.0)
    assert torch.allclose(shifted, got, rtol=1e-12)


def test_documented_linupper_example() -> None:
    got = loss_weights(torch.tensor([1.0, 2.0, 3.0]), "linupper", r=1.0)
    e = math.e
    assert got.tolist() == pytest.approx(
        [3 / (1 + 2 * e), 3 * e / (1 + 2 * e), 3 * e / (1 + 2 * e)]
    )


# ---------------------------------------------------------------- invariants


@pytest.mark.parametrize("strategy", ALL)
@settings(max_examples=60, deadline=None)
@given(values=finite_losses, r=st.floats(min_value=1e-3, max_value=1e3))
def test_mean_one_and_finite(strategy: str, values: list[float], r: float) -> None:
    w = loss_weights(torch.tensor(values, dtype=torch.float64), strategy, r=r)
    assert bool(torch.isfinite(w).all())
    assert bool((w >= 0).all())
    assert float(w.mean()) == pytest.approx(1.0, rel=1e-9)


@settings(max_examples=60, deadline=None)
@given(values=finite_losses, r=st.floats(min_value=1e-2, max_value=1e2))
def test_permutation_equivariance(values: list[float], r: float) -> None:
    x = torch.tensor(values, dtype=torch.float64)
    perm = torch.randperm(x.numel(), generator=torch.Generator().manual_seed(0))
    for strategy in ALL:
        assert torch.allclose(
            loss_weights(x[perm], strategy, r=r), loss_weights(x, strategy, r=r)[perm]
        )


@settings(max_examples=60, deadline=None)
@given(values=finite_losses, r=st.floats(min_value=1e-2, max_value=1e2))
def test_linupper_and_upper_non_decreasing_in_loss(values: list[float], r: float) -> None:
    x = torch.tensor(sorted(values), dtype=torch.float64)
    for strategy in ("linupper", "upper", "hard"):
        w = loss_weights(x, strategy, r=r)
        assert bool((w[1:] >= w[:-1] * (1 - 1e-12)).all()), strategy


def test_linupper_is_flat_above_the_middle_of_the_range() -> None:
    w = loss_weights(torch.linspace(0, 1, 11, dtype=torch.float64), "linupper", r=0.5)
    assert torch.allclose(w[5:], w[5].expand(6))
    assert bool((w[1:6] > w[:5]).all())


@settings(max_examples=60, deadline=None)
@given(values=finite_losses, r=st.floats(min_value=1e-2, max_value=1e2))
def test_quadratic_peaks_mid_range_and_extremes_is_u_shaped(values: list[float], r: float) -> None:
    x = torch.tensor(values, dtype=torch.float64)
    h = normalize_losses(x)
    distance = h.abs()
    for strategy, sign in (("quadratic", -1.0), ("extremes", 1.0)):
        w = loss_weights(x, strategy, r=r)
        # weight is a monotone function of |h|: decreasing (quadratic) or increasing (extremes)
        order = torch.argsort(distance)
        ws, ds = w[order], distance[order]
        steps = (ws[1:] - ws[:-1]) * sign
        assert bool((steps[ds[1:] > ds[:-1]] >= -1e-12).all()), strategy


def test_quadratic_and_extremes_on_a_grid() -> None:
    x = torch.linspace(-3, 5, 9, dtype=torch.float64)  # h = −1, −0.75, ..., 1
    q = loss_weights(x, "quadratic", r=0.5)
    e = loss_weights(x, "extremes", r=0.5)
    assert int(torch.argmax(q)) == 4 and torch.allclose(q, q.flip(0))
    assert int(torch.argmin(e)) == 4 and torch.allclose(e, e.flip(0))
    assert float(e[0]) == pytest.approx(float(e.max()))


@pytest.mark.parametrize("strategy", ALL)
def test_r_to_infinity_gives_uniform(strategy: str) -> None:
    x = torch.tensor([0.1, 2.0, 5.0, 0.7], dtype=torch.float64)
    assert torch.equal(loss_weights(x, strategy, r=math.inf), torch.ones(4, dtype=torch.float64))
    assert torch.allclose(loss_weights(x, strategy, r=1e9), torch.ones(4, dtype=torch.float64))


def test_small_r_concentrates_on_the_top_score() -> None:
    x = torch.tensor([0.1, 2.0, 5.0, 0.7], dtype=torch.float64)
    w = loss_weights(x, "upper", r=1e-3)
    assert w.tolist() == pytest.approx([0.0, 0.0, 4.0, 0.0], abs=1e-12)
    w = loss_weights(x, "hard", r=1e-4)
    assert float(w[2]) == pytest.approx(4.0)
    # ESS shrinks as r decreases
    ess = [
        float(w.sum() ** 2 / (w**2).sum())
        for w in (loss_weights(x, "upper", r=r) for r in (10.0, 1.0, 0.1))
    ]
    assert ess[0] > ess[1] > ess[2]


@pytest.mark.parametrize("strategy", ALL)
@pytest.mark.parametrize("value", [0.0, 2.5, -1e300, 1e300])
def test_degenerate_range_gives_exact_ones(strategy: str, value: float) -> None:
    x = torch.full((5,), value, dtype=torch.float64)
    assert torch.equal(loss_weights(x, strategy, r=0.3), torch.ones(5, dtype=torch.float64))


def test_huge_losses_do_not_overflow() -> None:
    x = torch.tensor([-1.7e308, 0.0, 1.7e308], dtype=torch.float64)
    assert normalize_losses(x).tolist() == pytest.approx([-1.0, 0.0, 1.0])
    for strategy in ALL:
        w = loss_weights(x, strategy, r=0.01)
        assert bool(torch.isfinite(w).all()) and float(w.sum()) == pytest.approx(3.0)


# ---------------------------------------------------------------- masking


@pytest.mark.parametrize("strategy", ALL)
def test_nan_and_inf_are_masked(strategy: str) -> None:
    x = torch.tensor([1.0, math.nan, 3.0, math.inf, 2.0, -math.inf])
    w = loss_weights(x, strategy, r=0.7)
    assert w.dtype == torch.float32
    assert w[[1, 3, 5]].tolist() == [0.0, 0.0, 0.0]
    assert bool(torch.isfinite(w).all())
    clean = loss_weights(torch.tensor([1.0, 3.0, 2.0]), strategy, r=0.7)
    assert torch.allclose(w[[0, 2, 4]], clean)
    assert float(w[[0, 2, 4]].mean()) == pytest.approx(1.0, rel=1e-6)


def test_valid_mask_excludes_entries_from_range_and_mean() -> None:
    x = torch.tensor([1.0, 100.0, 3.0, 2.0])
    valid = torch.tensor([True, False, True, True])
    w = loss_weights(x, "upper", r=0.5, valid=valid)
    assert float(w[1]) == 0.0
    assert torch.allclose(w[[0, 2, 3]], loss_weights(torch.tensor([1.0, 3.0, 2.0]), "upper", r=0.5))
    # numpy masks work too
    w_np = loss_weights(x, "upper", r=0.5, valid=np.array([True, False, True, True]))
    assert torch.equal(w, w_np)


def test_all_invalid_raises() -> None:
    with pytest.raises(ValueError, match="no valid loss among 2"):
        loss_weights(torch.tensor([math.nan, math.inf]))
    with pytest.raises(ValueError, match="no valid loss"):
        loss_weights(torch.tensor([1.0, 2.0]), valid=torch.tensor([False, False]))
    with pytest.raises(ValueError, match="no valid loss among 0"):
        loss_weights(torch.tensor([]))


# ---------------------------------------------------------------- dtype, device, gradients


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtype_is_kept_and_computation_is_float64(dtype: torch.dtype) -> None:
    x = torch.tensor([0.5, 1.0, 4.0], dtype=dtype)
    w = loss_weights(x, "hard", r=2.0)
    assert w.dtype == dtype and w.device == x.device
    exact = loss_weights(x.to(torch.float64), "hard", r=2.0)
    assert torch.allclose(w.to(torch.float64), exact, rtol=1e-2)


def test_integer_and_list_inputs_give_float64() -> None:
    assert loss_weights([1, 2, 3], "uniform").dtype == torch.float64
    assert loss_weights(torch.tensor([1, 2, 3]), "upper").dtype == torch.float64


def test_weights_carry_no_gradient() -> None:
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    w = loss_weights(x, "linupper", r=0.4)
    assert not w.requires_grad
    (w * x).sum().backward()
    assert torch.equal(x.grad, w)  # type: ignore[arg-type]


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("r", [0.0, -1.0, math.nan])
def test_bad_r_raises(r: float) -> None:
    with pytest.raises(ValueError, match="r must be > 0"):
        loss_weights(torch.tensor([1.0, 2.0]), "linupper", r=r)


def test_not_one_dimensional_raises() -> None:
    with pytest.raises(ValueError, match=r"1-D .* shape \(2, 2\)"):
        loss_weights(torch.ones(2, 2))
    with pytest.raises(TypeError, match="real numbers"):
        loss_weights(torch.tensor([True, False]))


def test_bad_valid_mask_raises() -> None:
    with pytest.raises(ValueError, match="valid has shape"):
        loss_weights(torch.ones(3), valid=torch.tensor([True, False]))
    with pytest.raises(TypeError, match="boolean mask"):
        loss_weights(torch.ones(3), valid=torch.ones(3))


def test_bad_min_range_raises() -> None:
    with pytest.raises(ValueError, match="min_range"):
        loss_weights(torch.ones(3), min_range=-1.0)


# ---------------------------------------------------------------- registry


def test_registry_lists_the_built_ins() -> None:
    assert set(ALL) <= set(STRATEGIES)
    for name in ALL:
        assert get_strategy(name) is STRATEGIES[name]
    with pytest.raises(TypeError):
        STRATEGIES["x"] = STRATEGIES["uniform"]  # type: ignore[index]


def test_unknown_strategy_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown loss-weight strategy 'nope'") as info:
        loss_weights(torch.ones(2), "nope")
    for name in ALL:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="valid names"):
        get_strategy(3)  # type: ignore[arg-type]


def test_register_strategy_and_callables() -> None:
    name = "test_inverse_h"
    try:
        fn = register_strategy(name, lambda losses, h: -h)
        w = loss_weights(torch.tensor([0.0, 2.0]), "Test_Inverse_H", r=1.0)
        assert w.tolist() == pytest.approx(softmax_mean_one([1.0, -1.0], 1.0))
        assert get_strategy(name) is fn
        with pytest.raises(ValueError, match="already registered"):
            register_strategy(name, fn)
        register_strategy(name, lambda losses, h: h, overwrite=True)
        assert loss_weights(torch.tensor([0.0, 2.0]), name).tolist() == pytest.approx(
            softmax_mean_one([-1.0, 1.0], 1.0)
        )
    finally:
        loss_module._REGISTRY.pop(name, None)
    # a callable is used directly, without registering
    w = loss_weights(torch.tensor([0.0, 2.0]), lambda losses, h: -h, r=1.0)
    assert w.tolist() == pytest.approx(softmax_mean_one([1.0, -1.0], 1.0))


def test_register_strategy_validates() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        register_strategy("  ", lambda losses, h: h)
    with pytest.raises(TypeError, match="callable"):
        register_strategy("x_not_callable", 3)  # type: ignore[arg-type]
    assert "x_not_callable" not in STRATEGIES


def test_bad_strategy_outputs_raise() -> None:
    with pytest.raises(ValueError, match="must return a tensor of shape"):
        loss_weights(torch.ones(3), lambda losses, h: h[:2])
    with pytest.raises(ValueError, match="non-finite scores"):
        loss_weights(torch.tensor([1.0, 2.0]), lambda losses, h: h / 0.0)


# ---------------------------------------------------------------- burn-in


def test_strategy_at_burn_in() -> None:
    assert strategy_at("linupper", 0, burn_in_steps=1000) == "uniform"
    assert strategy_at("linupper", 999, burn_in_steps=1000) == "uniform"
    assert strategy_at("linupper", 1000, burn_in_steps=1000) == "linupper"
    assert strategy_at("hard", 0) == "hard"
    with pytest.raises(ValueError, match="burn_in_steps"):
        strategy_at("hard", 0, burn_in_steps=-1)
    with pytest.raises(TypeError, match="step must be an integer"):
        strategy_at("hard", 1.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------- z-score cap


def test_cap_losses_hand_computed() -> None:
    x = torch.tensor([1.0, 1.0, 1.0, 9.0])
    cap = 3.0 + 2.0 * math.sqrt(12.0)  # mean 3, population std √12, z = 2 → 9.93: no cap
    assert torch.equal(cap_losses(x, 2.0), x)
    capped = cap_losses(x, 1.0)
    assert capped.tolist() == pytest.approx([1.0, 1.0, 1.0, 3.0 + math.sqrt(12.0)])
    assert cap > 9.0


def test_cap_losses_keeps_non_finite_and_ignores_them_in_statistics() -> None:
    x = torch.tensor([1.0, math.nan, 1.0, math.inf, 1.0, 9.0])
    capped = cap_losses(x, 1.0)
    assert math.isnan(float(capped[1])) and math.isinf(float(capped[3]))
    assert capped[[0, 2, 4, 5]].tolist() == pytest.approx([1.0, 1.0, 1.0, 3.0 + math.sqrt(12.0)])


def test_cap_losses_valid_mask_inf_z_and_few_entries() -> None:
    x = torch.tensor([1.0, 1.0, 1.0, 9.0, 100.0])
    valid = torch.tensor([True, True, True, True, False])
    capped = cap_losses(x, 1.0, valid=valid)
    assert capped.tolist() == pytest.approx([1.0, 1.0, 1.0, 3 + math.sqrt(12), 3 + math.sqrt(12)])
    assert cap_losses(x, math.inf) is x
    assert torch.equal(cap_losses(torch.tensor([5.0]), 0.0), torch.tensor([5.0]))
    with pytest.raises(ValueError, match="z must be >= 0"):
        cap_losses(x, -1.0)


def test_cap_losses_is_differentiable_with_zero_gradient_on_capped() -> None:
    x = torch.tensor([1.0, 1.0, 1.0, 9.0], requires_grad=True)
    cap_losses(x, 1.0).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0, 0.0]  # type: ignore[union-attr]


def test_cap_then_weights_keeps_outlier_from_compressing_the_range() -> None:
    x = torch.tensor([1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 500.0])
    plain = normalize_losses(x)
    capped = normalize_losses(cap_losses(x, 1.0))
    # one outlier squeezes everyone else's h together; the cap gives them back some spread
    assert float(capped[8] - capped[0]) > 2 * float(plain[8] - plain[0])
