"""Temperature sampling over domain sizes, p_d ∝ n_d^(1/τ), and an exact probability floor."""

from __future__ import annotations

from typing import Any

import numpy as np

from reweight._checks import as_float_array, check_real

__all__ = ["floor_probs", "temperature_probs"]


def floor_probs(probs: Any, min_prob: float, mask: Any = None) -> np.ndarray:
    """Raises every eligible probability to at least ``min_prob``, keeping the others' ratios.

    Water-filling: entries that would fall below the floor are set to exactly ``min_prob`` and the
    remaining mass is shared among the other eligible entries in proportion to their input
    probabilities (so their ratios are unchanged). Entries outside ``mask`` must be 0 and stay 0.
    This is exact, unlike "clip then renormalise", which can push clipped entries back under the
    floor.

    Args:
        probs: non-negative weights (normalised first).
        min_prob: the floor, in [0, 1 / number of eligible entries].
        mask: boolean array of eligible entries (default: all).

    Returns:
        float64 probabilities summing to 1 with every eligible entry >= ``min_prob``.

    Example:
        >>> floor_probs([0.98, 0.01, 0.01], 0.05).round(6).tolist()
        [0.9, 0.05, 0.05]
        >>> floor_probs([0.7, 0.2, 0.1, 0.0], 0.15, mask=[1, 1, 1, 0]).round(6).tolist()
        [0.661111, 0.188889, 0.15, 0.0]
    """
    p = as_float_array("probs", probs)
    if p.size == 0 or not np.isfinite(p).all() or (p < 0).any() or not p.sum() > 0:
        raise ValueError(
            f"probs must be finite, >= 0 and not all zero, got {p.tolist()!r}; pass a "
            "probability vector."
        )
    p = p / p.sum()
    eligible = (
        np.ones(p.size, dtype=bool) if mask is None else np.asarray(mask, dtype=bool).reshape(-1)
    )
    if eligible.size != p.size:
        raise ValueError(f"mask has {eligible.size} entries for {p.size} probabilities.")
    if (p[~eligible] > 0).any():
        raise ValueError("probs has mass outside mask; masked-out entries must be 0.")
    floor = check_real("min_prob", min_prob)
    count = int(eligible.sum())
    if floor < 0 or floor * count > 1.0 + 1e-12:
        raise ValueError(
            f"min_prob must lie in [0, 1/{count}] for {count} eligible entries, got {floor!r}; "
            "lower it (at most 1 / number of domains)."
        )
    if floor == 0.0 or count == 0:
        return p
    if floor * count >= 1.0 - 1e-12:
        return np.where(eligible, 1.0 / count, 0.0)
    floored = np.zeros(p.size, dtype=bool)
    out = np.zeros(p.size)
    while True:
        free = eligible & ~floored
        mass = 1.0 - floor * int(floored.sum())
        total = float(p[free].sum())
        if total > 0:
            out[free] = p[free] * (mass / total)
        else:  # every free entry has zero input mass: share the rest equally
            out[free] = mass / int(free.sum())
        below = free & (out < floor)
        if not below.any():
            break
        floored |= below
    out[floored] = floor
    return out


def temperature_probs(sizes: Any, tau: float, min_prob: float = 0.0) -> np.ndarray:
    """Temperature sampling probabilities p_d ∝ n_d^(1/τ) over domain sizes n_d.

    Computed in float64 in log space with the maximum subtracted, so huge sizes and tiny or
    infinite τ are exact: τ = 1 gives the natural proportions n_d / Σn, τ = inf the uniform
    distribution over the non-empty domains, τ → 0 all mass on the largest domain(s). Empty domains
    (n_d = 0) always get 0.

    Args:
        sizes: domain sizes n_d (finite, >= 0, at least one positive); items, tokens or any
            other measure of size.
        tau: temperature τ > 0 (``math.inf`` allowed).
        min_prob: optional floor for every non-empty domain, applied by :func:`floor_probs`:
            domains below it are raised to exactly ``min_prob`` and the remaining mass is
            shared among the other non-empty domains in proportion to n_d^(1/τ). Must be at most
            1 / (number of non-empty domains).

    Returns:
        float64 probabilities, one per domain, summing to 1.

    Raises:
        ValueError: τ <= 0 or NaN, sizes negative/NaN/infinite/all zero, or a too-large floor.

    Example:
        >>> temperature_probs([900, 90, 10], 1.0).tolist()
        [0.9, 0.09, 0.01]
        >>> temperature_probs([900, 90, 10], float("inf")).round(4).tolist()
        [0.3333, 0.3333, 0.3333]
        >>> temperature_probs([900, 90, 10], 2.0).round(4).tolist()
        [0.7034, 0.2224, 0.0741]
        >>> temperature_probs([900, 0, 10], 1.0, min_prob=0.05).round(4).tolist()
        [0.95, 0.0, 0.05]
    """
    n = as_float_array("sizes", sizes)
    if n.size == 0:
        raise ValueError("sizes is empty; give one size per domain.")
    bad = ~np.isfinite(n) | (n < 0)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"sizes must be finite and >= 0; domain {first} has size {float(n[first])!r}. Give the "
            "number of items (or tokens) per domain."
        )
    nonempty = n > 0
    if not nonempty.any():
        raise ValueError("every domain is empty (all sizes are 0); give at least one size > 0.")
    t = check_real("tau", tau, finite=False)
    if not t > 0:
        raise ValueError(f"tau must be > 0 (1 = natural proportions, inf = uniform), got {t!r}.")
    if t == 1.0:  # natural proportions, exactly
        weights = n[nonempty]
    else:
        log_n = np.log(n[nonempty])
        with np.errstate(over="ignore"):
            shifted = (log_n - log_n.max()) / t  # <= 0; 0 / inf = 0, negative / tiny = -inf
        weights = np.exp(shifted)
    p = np.zeros(n.size)
    p[nonempty] = weights / weights.sum()
    if min_prob:
        p = floor_probs(p, min_prob, mask=nonempty)
    return p
