"""Static importance weights: per-item log weights → a tempered, clipped, floored factor."""

from __future__ import annotations

from typing import Any

import numpy as np


def static_factor(
    log_weights: Any,
    beta: float = 1.0,
    clip: float | tuple[float, float] | None = None,
    floor: float = 1e-6,
) -> np.ndarray:
    """a_i = max(exp(β · clip(log w_i) − max), floor · mean), computed in float64.

    Args:
        log_weights: per-item log importance weights (finite).
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
    """
    logw = np.asarray(log_weights, dtype=np.float64).reshape(-1)
    if logw.size == 0:
        raise ValueError("log_weights is empty; give one log weight per item.")
    bad = ~np.isfinite(logw)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"log_weights has {int(bad.sum())} non-finite value(s) (first at item {first}: "
            f"{logw[first]!r}); replace them or use `clip` after masking them to finite values."
        )
    if not np.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}.")
    if not 0 <= floor <= 1:
        raise ValueError(f"floor must lie in [0, 1] (relative to the mean factor), got {floor!r}.")
    if clip is not None:
        low, high = (-float(clip), float(clip)) if np.isscalar(clip) else map(float, clip)  # type: ignore[arg-type]
        if not low <= high:
            raise ValueError(f"clip range {clip!r} is empty; give (low, high) with low <= high.")
        logw = np.clip(logw, low, high)
    scaled = beta * logw
    factor = np.exp(scaled - scaled.max())
    if floor > 0:
        factor = np.maximum(factor, floor * factor.mean())
    return factor
