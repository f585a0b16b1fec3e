"""The weight model's formula, pure: domain mixtures, per-domain item mass, p(i), q(i), p/q.

    p(i) = π_p(d) · t_i / T_d,   T_d = Σ_{j ∈ d} t_j        (target: every source)
    q(i) = π_q(d) · s_i / S_d,   S_d = Σ_{j ∈ d} s_j        (proposal: the sampled sources)

Everything in float64; no project imports.

Example:
    >>> import numpy as np
    >>> domains = np.array([0, 0, 1])
    >>> t = np.array([1.0, 3.0, 1.0])
    >>> mass = domain_mass(t, domains, 2)
    >>> p = item_probabilities(np.array([0.5, 0.5]), domains, t, mass)
    >>> p.tolist(), importance_ratios(p, np.full(3, 1 / 3)).round(3).tolist()
    ([0.125, 0.375, 0.5], [0.375, 1.125, 1.5])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "FLOAT32_TINY",
    "domain_mass",
    "drawable_probs",
    "importance_ratios",
    "item_probabilities",
    "mass_change",
    "mixture",
]

FLOAT32_TINY = float(np.finfo(np.float32).tiny)


def mixture(parts: Sequence[np.ndarray], default: np.ndarray) -> np.ndarray:
    """The normalised product of domain probability vectors (``default`` when there are none).

    Example:
        >>> mixture([np.array([1.0, 1.0]), np.array([3.0, 1.0])], np.array([0.5, 0.5])).tolist()
        [0.75, 0.25]
    """
    out = np.asarray(default, dtype=np.float64)
    for i, part in enumerate(parts):
        out = np.asarray(part, dtype=np.float64) * (out if i else 1.0)
    total = float(out.sum())
    if not total > 0:
        raise ValueError(
            f"the domain probabilities multiply to zero on every domain "
            f"({[np.asarray(p).tolist() for p in parts]}); give the sources that set domain "
            "probabilities a domain in common."
        )
    return out / total


def drawable_probs(probs: np.ndarray) -> np.ndarray:
    """π normalised, with shares below float32's smallest normal number set to 0 (the sampler
    stores π as float32; a share that small is never drawn anyway).

    Example:
        >>> drawable_probs(np.array([1.0, 1e-300])).tolist()
        [1.0, 0.0]
    """
    out = np.asarray(probs, dtype=np.float64) / float(np.sum(probs))
    return np.where(out < FLOAT32_TINY, 0.0, out)


def domain_mass(factors: np.ndarray | None, domains: np.ndarray, num_domains: int) -> np.ndarray:
    """T_d = Σ_{j∈d} t_j (float64); ``factors=None`` means t = 1 (T_d = the domain's size).

    Example:
        >>> domain_mass(np.array([0.5, 1.0, 2.0]), np.array([0, 0, 1]), 2).tolist()
        [1.5, 2.0]
    """
    weights = None if factors is None else np.asarray(factors, dtype=np.float64)
    return np.bincount(domains, weights=weights, minlength=num_domains).astype(np.float64)


def mass_change(
    domains: np.ndarray, old: np.ndarray, new: np.ndarray, num_domains: int
) -> np.ndarray:
    """ΔT_d when items of ``domains`` change their factor from ``old`` to ``new``.

    Example:
        >>> mass_change(np.array([1]), np.array([1.0]), np.array([0.25]), 2).tolist()
        [0.0, -0.75]
    """
    delta = np.asarray(new, dtype=np.float64) - np.asarray(old, dtype=np.float64)
    return np.bincount(domains, weights=delta, minlength=num_domains)


def item_probabilities(
    domain_probs: np.ndarray,
    domains: np.ndarray,
    factors: np.ndarray | None,
    mass: np.ndarray,
) -> np.ndarray:
    """p(i) = π(d) · t_i / T_d for items of ``domains`` with factors ``factors`` (None: 1).

    A domain without mass gives 0.

    Example:
        >>> item_probabilities(np.array([1.0]), np.array([0, 0]), None, np.array([2.0])).tolist()
        [0.5, 0.5]
    """
    t = 1.0 if factors is None else np.asarray(factors, dtype=np.float64)
    m = mass[domains]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(m > 0, domain_probs[domains] * t / m, 0.0)


def importance_ratios(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """p/q, and 0 where q = 0 (an item that cannot be drawn carries no weight).

    Example:
        >>> importance_ratios(np.array([0.2, 0.1]), np.array([0.1, 0.0])).tolist()
        [2.0, 0.0]
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(q > 0, np.asarray(p, dtype=np.float64) / q, 0.0)
