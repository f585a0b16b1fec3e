"""Static importance weights: per-item log weights → a tempered, clipped, floored factor."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["check_static_params", "static_factor"]


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__}).")
    return float(value)


def check_static_params(
    beta: Any, clip: Any, floor: Any, *, prefix: str = "", positive_floor: bool = False
) -> tuple[float, tuple[float, float] | None, float]:
    """Validates the parameters of :func:`static_factor`; returns ``(beta, (low, high), floor)``.

    Args:
        beta: a finite number >= 0.
        clip: None, a number c > 0 (clip to [−c, c]) or a pair (low, high) with low < high
            (either may be infinite, neither NaN).
        floor: a number in [0, 1] (in (0, 1] with ``positive_floor``).
        prefix: put in front of each parameter's name in errors (e.g. ``"StaticImportance."``).
        positive_floor: reject ``floor = 0`` (no item may become unreachable).

    Raises:
        TypeError: a parameter that is not a number (or, for ``clip``, a pair of numbers).
        ValueError: a value outside its range; the message names it and says how to fix it.

    Example:
        >>> check_static_params(0.5, 3.0, 1e-6)
        (0.5, (-3.0, 3.0), 1e-06)
    """
    b = _real(f"{prefix}beta", beta)
    if not (math.isfinite(b) and b >= 0):
        raise ValueError(
            f"{prefix}beta must be a finite number >= 0 (0 ignores the weights, 1 uses them as "
            f"they are), got {beta!r}."
        )
    bounds: tuple[float, float] | None = None
    if clip is not None:
        if isinstance(clip, (str, bytes)) or not isinstance(
            clip, (numbers.Real, Sequence, np.ndarray)
        ):
            raise TypeError(
                f"{prefix}clip must be None, a number c > 0 or a pair (low, high), got {clip!r}."
            )
        if isinstance(clip, numbers.Real):
            c = _real(f"{prefix}clip", clip)
            if not c > 0:
                raise ValueError(
                    f"{prefix}clip must be > 0 (the log weights are clipped to [-clip, clip]), "
                    f"got {clip!r}; give None for no clipping."
                )
            bounds = (-c, c)
        else:
            if len(clip) != 2:
                raise ValueError(
                    f"{prefix}clip must be a pair (low, high) or a number, got {clip!r}."
                )
            low = _real(f"{prefix}clip low", clip[0])
            high = _real(f"{prefix}clip high", clip[1])
            if not low < high:  # also rejects NaN
                raise ValueError(
                    f"{prefix}clip {tuple(clip)!r} is not an ordered pair; give (low, high) with "
                    "low < high."
                )
            bounds = (low, high)
    f = _real(f"{prefix}floor", floor)
    low_ok = f > 0.0 if positive_floor else f >= 0.0
    if not (low_ok and f <= 1.0):
        interval = "(0, 1]" if positive_floor else "[0, 1]"
        raise ValueError(
            f"{prefix}floor must lie in {interval} (the smallest factor relative to the mean "
            f"factor, which keeps every item reachable), got {floor!r}."
        )
    return b, bounds, f


def static_factor(
    log_weights: Any,
    beta: float = 1.0,
    clip: float | tuple[float, float] | None = None,
    floor: float = 1e-6,
) -> np.ndarray:
    """a_i = max(exp(β · clip(log w_i) − max), floor · mean), computed in float64.

    Args:
        log_weights: per-item log importance weights: finite, or −inf for an item that is
            excluded (factor exactly 0, never floored; what ``python -m reweight.static
            weights --min-tokens`` writes for documents that are too short).
        beta: temper; 0 ignores the weights (all factors 1), 1 uses them as they are.
        clip: bound for the log weights: ``c`` clips to [−c, c], ``(lo, hi)`` to [lo, hi].
        floor: smallest factor relative to the mean factor, so no item becomes unreachable
            (0 allows exact zeros from underflow).

    Returns:
        float64 factors with maximum 1 (only ratios matter to the sampler).

    Example:
        >>> static_factor([0.0, 1.0, 2.0], beta=0.5).round(4).tolist()
        [0.3679, 0.6065, 1.0]
        >>> static_factor([0.0, -100.0], clip=5.0, floor=0.0).round(4).tolist()
        [1.0, 0.0067]
        >>> static_factor([0.0, float("-inf")], clip=5.0).tolist()   # excluded: exactly 0
        [1.0, 0.0]
    """
    logw = np.asarray(log_weights, dtype=np.float64).reshape(-1)
    if logw.size == 0:
        raise ValueError("log_weights is empty; give one log weight per item.")
    excluded = logw == -np.inf
    bad = ~np.isfinite(logw) & ~excluded
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"log_weights has {int(bad.sum())} NaN or +inf value(s) (first at item {first}: "
            f"{float(logw[first])!r}); replace them or use `clip` after masking them to finite "
            "values (−inf is allowed: it excludes the item)."
        )
    if excluded.all():
        raise ValueError(
            f"every one of the {logw.size} log weights is -inf (every item excluded, e.g. by "
            "`--min-tokens`); lower the minimum or check the weights file."
        )
    beta, bounds, floor = check_static_params(beta, clip, floor)
    if excluded.any():
        factor = np.zeros(logw.size, dtype=np.float64)
        factor[~excluded] = static_factor(logw[~excluded], beta, clip, floor)
        return factor
    if bounds is not None:
        logw = np.clip(logw, *bounds)
    with np.errstate(over="ignore"):
        scaled = beta * logw
    if not np.isfinite(scaled).all():
        raise ValueError(
            f"beta · log_weights overflows (beta={beta!r}, largest |log weight| "
            f"{float(np.abs(logw).max())!r}); lower beta or clip the log weights."
        )
    factor = np.exp(scaled - scaled.max())
    if floor > 0:
        factor = np.maximum(factor, floor * factor.mean())
    return factor
