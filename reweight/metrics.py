"""Pure diagnostics of weight vectors (no project imports)."""

from __future__ import annotations

import numpy as np

__all__ = ["effective_sample_size", "weight_summary"]


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's ESS, (Σw)² / Σw², of non-negative weights (0 for an empty or all-zero vector).

    Example:
        >>> effective_sample_size(np.array([1.0, 1.0, 0.0, 0.0]))
        2.0
    """
    w = np.asarray(weights, dtype=np.float64)
    square = float(np.dot(w, w))
    return float(w.sum()) ** 2 / square if square > 0 else 0.0


def weight_summary(weights: np.ndarray) -> dict[str, float]:
    """ESS fraction, max, min and max/min ratio of a batch's loss weights.

    Example:
        >>> weight_summary(np.array([0.5, 1.5]))["max_min_ratio"]
        3.0
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.size == 0:
        return {}
    low, high = float(w.min()), float(w.max())
    return {
        "ess_fraction": effective_sample_size(w) / w.size,
        "max": high,
        "min": low,
        "max_min_ratio": high / low if low > 0 else float("inf"),
    }
