"""Static importance weights: per-item log weights → a tempered, clipped, floored factor."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from reweight._checks import CHUNK, chunks

__all__ = [
    "StaticFactor",
    "check_static_params",
    "pairwise_sum",
    "plan_static_factor",
    "static_factor",
]


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


def pairwise_sum(size: int, values: Callable[[int, int], np.ndarray]) -> float:
    """Σ of a float64 sequence read in pieces, bitwise equal to ``np.sum`` of it whole.

    ``values(lo, hi)`` returns entries ``lo .. hi − 1``. NumPy sums a contiguous float64 array
    pairwise, halving a range (rounded down to a multiple of 8) until it is short; splitting the
    same way down to pieces of :data:`~reweight._checks.CHUNK` and summing each with NumPy gives
    the same rounding, with a temporary of one piece only.

    Example:
        >>> x = np.random.default_rng(0).random(10_000)
        >>> bool(pairwise_sum(x.size, lambda lo, hi: x[lo:hi]) == np.sum(x))
        True
    """

    def add(lo: int, n: int) -> float:
        if n <= CHUNK:
            return float(np.add.reduce(values(lo, lo + n)))
        half = n // 2
        half -= half % 8
        return add(lo, half) + add(lo + half, n - half)

    return add(0, size)


@dataclass(frozen=True)
class StaticFactor:
    """a_i = max(exp(β · clip(log w_i) − max), floor · mean) of every item, in pieces.

    Built by :func:`plan_static_factor` (which reads the log weights twice, one chunk at a time,
    for the max and the mean); :meth:`part` then computes any range of items on demand, so the
    whole float64 factor never has to exist. ``log_weights`` is kept by reference (a memory map
    of a ``.npy`` file stays one).
    """

    log_weights: np.ndarray
    beta: float
    bounds: tuple[float, float] | None
    offset: float
    floor_value: float | None

    @property
    def size(self) -> int:
        """Number of items."""
        return int(self.log_weights.shape[0])

    def part(self, items: slice) -> np.ndarray:
        """The float64 factors of ``items`` (a slice); −inf log weights give exactly 0."""
        logw = np.array(self.log_weights[items], dtype=np.float64)
        excluded = logw == -np.inf
        if excluded.any():
            out = np.zeros(logw.size, dtype=np.float64)
            out[~excluded] = self._factor(logw[~excluded])
            return out
        return self._factor(logw)

    def _factor(self, logw: np.ndarray) -> np.ndarray:
        """The factors of finite log weights, computed in place in ``logw`` (a float64 copy)."""
        if self.bounds is not None:
            np.clip(logw, *self.bounds, out=logw)
        np.multiply(self.beta, logw, out=logw)
        np.subtract(logw, self.offset, out=logw)
        np.exp(logw, out=logw)
        if self.floor_value is not None:
            np.maximum(logw, self.floor_value, out=logw)
        return logw


def plan_static_factor(
    log_weights: Any,
    beta: float = 1.0,
    clip: float | tuple[float, float] | None = None,
    floor: float = 1e-6,
) -> StaticFactor:
    """Validates log weights and parameters and returns the :class:`StaticFactor` that
    computes :func:`static_factor` in pieces (same values, bit for bit). The log weights are
    read chunk by chunk and not copied when they are a 1-D float array (or a memory map)."""
    logw = np.asarray(log_weights)
    if logw.dtype.kind != "f" or logw.ndim != 1:
        logw = np.asarray(logw, dtype=np.float64).reshape(-1)
    if logw.size == 0:
        raise ValueError("log_weights is empty; give one log weight per item.")
    num_bad, first, num_excluded, kept_counts = 0, -1, 0, []
    for part in chunks(logw.size):
        piece = np.asarray(logw[part], dtype=np.float64)
        excluded = piece == -np.inf
        bad = ~np.isfinite(piece) & ~excluded
        if bad.any() and first < 0:
            first = part.start + int(np.flatnonzero(bad)[0])
        num_bad += int(np.count_nonzero(bad))
        num_excluded += int(np.count_nonzero(excluded))
        kept_counts.append(piece.size - int(np.count_nonzero(excluded)))
    if num_bad:
        raise ValueError(
            f"log_weights has {num_bad} NaN or +inf value(s) (first at item {first}: "
            f"{float(logw[first])!r}); replace them or use `clip` after masking them to finite "
            "values (−inf is allowed: it excludes the item)."
        )
    if num_excluded == logw.size:
        raise ValueError(
            f"every one of the {logw.size} log weights is -inf (every item excluded, e.g. by "
            "`--min-tokens`); lower the minimum or check the weights file."
        )
    beta, bounds, floor = check_static_params(beta, clip, floor)
    plan = StaticFactor(logw, beta, bounds, 0.0, None)

    def kept(lo: int, hi: int) -> np.ndarray:
        """Log weights of the kept items lo .. hi − 1 (counted among kept items only)."""
        if not num_excluded:
            return np.array(logw[lo:hi], dtype=np.float64)
        pieces, starts = [], np.concatenate([[0], np.cumsum(kept_counts)])
        for c in range(int(np.searchsorted(starts, lo, side="right")) - 1, len(kept_counts)):
            if starts[c] >= hi:
                break
            piece = np.asarray(logw[c * CHUNK : (c + 1) * CHUNK], dtype=np.float64)
            piece = piece[piece != -np.inf]
            pieces.append(piece[max(lo - starts[c], 0) : hi - starts[c]])
        return np.concatenate(pieces)

    num_kept = logw.size - num_excluded
    largest, top = 0.0, -np.inf
    with np.errstate(over="ignore"):
        for part in chunks(num_kept):
            piece = kept(part.start, part.stop)
            clipped = piece if bounds is None else np.clip(piece, *bounds)
            scaled = beta * clipped
            if not np.isfinite(scaled).all():
                largest = float(np.abs(clipped).max())
                raise ValueError(
                    f"beta · log_weights overflows (beta={beta!r}, largest |log weight| "
                    f"{largest!r}); lower beta or clip the log weights."
                )
            top = max(top, float(scaled.max()))
    plan = StaticFactor(logw, beta, bounds, top, None)
    if floor > 0:
        mean = pairwise_sum(num_kept, lambda lo, hi: plan._factor(kept(lo, hi))) / num_kept
        plan = StaticFactor(logw, beta, bounds, top, floor * mean)
    return plan


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
        float64 factors with maximum 1 (only ratios matter to the sampler); for a large data
        set, :func:`plan_static_factor` gives them in pieces instead.

    Example:
        >>> static_factor([0.0, 1.0, 2.0], beta=0.5).round(4).tolist()
        [0.3679, 0.6065, 1.0]
        >>> static_factor([0.0, -100.0], clip=5.0, floor=0.0).round(4).tolist()
        [1.0, 0.0067]
        >>> static_factor([0.0, float("-inf")], clip=5.0).tolist()   # excluded: exactly 0
        [1.0, 0.0]
    """
    plan = plan_static_factor(log_weights, beta, clip, floor)
    return plan.part(slice(0, plan.size))
