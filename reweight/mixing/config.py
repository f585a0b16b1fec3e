"""Building domain rules from plain dicts (Hydra configs), with domains named in the config."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from reweight._checks import as_float_array, call_kind
from reweight.mixing.online import ODM, DoReMi
from reweight.mixing.rules import DomainRule, EndUpsample, FixedMixture, TemperatureRule
from reweight.mixing.schedules import cooldown

__all__ = ["RULES", "make_rule"]


def _index(key: Any, names: Sequence[str], what: str) -> int:
    """A domain index from a name (or an int index)."""
    if isinstance(key, numbers.Integral) and not isinstance(key, bool):
        if not 0 <= int(key) < len(names):
            raise ValueError(f"{what} names domain index {int(key)}, outside 0..{len(names) - 1}.")
        return int(key)
    if isinstance(key, str) and key in names:
        return list(names).index(key)
    raise ValueError(f"{what} names unknown domain {key!r}; known domains: {list(names)}.")


def _per_domain(value: Any, names: Sequence[str], what: str, fill: float) -> np.ndarray:
    """One number per domain from a mapping name → number (missing: ``fill``) or a sequence."""
    if isinstance(value, Mapping):
        out = np.full(len(names), fill, dtype=np.float64)
        for key, number in value.items():
            out[_index(key, names, what)] = float(number)
        return out
    out = as_float_array(what, value)
    if out.size != len(names):
        raise ValueError(
            f"{what} has {out.size} entries for {len(names)} domains {list(names)}; give one "
            "per domain, or a mapping from domain name to value."
        )
    return out


def _fixed(probs: Any, *, sizes: np.ndarray, names: Sequence[str]) -> DomainRule:
    return FixedMixture(_per_domain(probs, names, "fixed probs", 0.0))


def _natural(min_prob: float = 0.0, *, sizes: np.ndarray, names: Sequence[str]) -> DomainRule:
    return TemperatureRule(sizes, 1.0, min_prob)


def _uniform(*, sizes: np.ndarray, names: Sequence[str]) -> DomainRule:
    return TemperatureRule(sizes, math.inf)


def _temperature(
    tau: Any, min_prob: float = 0.0, *, sizes: np.ndarray, names: Sequence[str]
) -> DomainRule:
    return TemperatureRule(sizes, tau, min_prob)


def _cooldown(
    high: float = 5.0,
    low: float = 1.0,
    start: float = 0.2,
    end: float = 0.8,
    shape: str = "cosine",
    min_prob: float = 0.0,
    *,
    sizes: np.ndarray,
    names: Sequence[str],
) -> DomainRule:
    return TemperatureRule(sizes, cooldown(high, low, start, end, shape), min_prob)


def _end_upsample(
    base: Any = "natural",
    fraction: float = 0.15,
    factors: Any = None,
    mixture: Any = None,
    *,
    sizes: np.ndarray,
    names: Sequence[str],
) -> DomainRule:
    index_factors = None
    if factors is not None:
        index_factors = (
            {_index(k, names, "factors"): float(v) for k, v in factors.items()}
            if isinstance(factors, Mapping)
            else _per_domain(factors, names, "factors", 1.0)
        )
    weights = None if mixture is None else _per_domain(mixture, names, "mixture", 0.0)
    return EndUpsample(make_rule(base, sizes, names), fraction, index_factors, weights)


def _doremi(
    reference: Any = None,
    eta: float = 1.0,
    smoothing: float = 1e-3,
    min_prob: float | None = None,
    output: str = "current",
    initial: Any = None,
    *,
    sizes: np.ndarray,
    names: Sequence[str],
) -> DomainRule:
    return DoReMi(
        len(names),
        reference=None
        if reference is None
        else _per_domain(reference, names, "reference", math.nan),
        eta=eta,
        smoothing=smoothing,
        min_prob=min_prob,
        output=output,
        initial=None if initial is None else _per_domain(initial, names, "initial", 0.0),
    )


def _odm(
    eta: float | None = None,
    smoothing: float = 0.9,
    warmup_steps: int = 100,
    update_every: int = 1,
    min_prob: float | None = None,
    seed: int = 0,
    *,
    sizes: np.ndarray,
    names: Sequence[str],
) -> DomainRule:
    return ODM(
        len(names),
        eta=eta,
        smoothing=smoothing,
        warmup_steps=warmup_steps,
        update_every=update_every,
        min_prob=min_prob,
        seed=seed,
    )


RULES: dict[str, Callable[..., DomainRule]] = {
    "fixed": _fixed,
    "natural": _natural,
    "uniform": _uniform,
    "temperature": _temperature,
    "cooldown": _cooldown,
    "end_upsample": _end_upsample,
    "doremi": _doremi,
    "odm": _odm,
}
"""Rule kinds for :func:`make_rule` and the builders behind them."""


def make_rule(
    spec: Mapping[str, Any] | str | DomainRule,
    sizes: Any,
    names: Sequence[str] | None = None,
) -> DomainRule:
    """Builds a domain rule from a plain dict (e.g. a Hydra config) or a kind name.

    Domains are referred to by name (or index) in the config; ``names`` maps them to indices.
    Kinds (:data:`RULES`) and their keys:

    - ``fixed``: ``probs`` (mapping name → weight, missing names 0, or a list).
    - ``natural``, ``uniform``: temperature 1 / inf (optional ``min_prob`` for ``natural``).
    - ``temperature``: ``tau`` (number or schedule spec), ``min_prob``.
    - ``cooldown``: ``high``, ``low``, ``start``, ``end``, ``shape``, ``min_prob`` — a
      temperature rule with :func:`cooldown`.
    - ``end_upsample``: ``base`` (a rule spec, default ``"natural"``), ``fraction``, and
      ``factors`` (name → factor) or ``mixture`` (name → weight).
    - ``doremi``: ``reference`` (name → loss, or a list), ``eta``, ``smoothing``, ``min_prob``,
      ``output``, ``initial``.
    - ``odm``: ``eta``, ``smoothing``, ``warmup_steps``, ``update_every``, ``min_prob``, ``seed``.

    Args:
        spec: a mapping with ``"kind"``, a kind name, or a ready :class:`DomainRule`.
        sizes: domain sizes n_d (items or tokens), one per domain.
        names: domain names (default "0", "1", ...).

    Raises:
        ValueError: unknown kind or key (the error lists the valid ones), unknown domain name
            (the error lists the known names), or invalid values.

    Example:
        >>> rule = make_rule({"kind": "end_upsample", "base": {"kind": "temperature", "tau": 2},
        ...                   "fraction": 0.15, "factors": {"math": 3.0}},
        ...                  sizes=[900, 90, 10], names=["web", "code", "math"])
        >>> rule.probs(0.9).round(3).tolist()
        [0.613, 0.194, 0.194]
        >>> make_rule("uniform", sizes=[5, 1]).probs(0.0).tolist()
        [0.5, 0.5]
    """
    size_array = as_float_array("sizes", sizes)
    domain_names = [str(i) for i in range(size_array.size)] if names is None else list(names)
    if len(domain_names) != size_array.size:
        raise ValueError(
            f"{len(domain_names)} names {domain_names} for {size_array.size} domain sizes; give "
            "one name per domain."
        )
    if len(set(domain_names)) != len(domain_names):
        raise ValueError(f"domain names must be unique, got {domain_names}.")
    if isinstance(spec, DomainRule):
        if spec.num_domains != size_array.size:
            raise ValueError(
                f"{spec!r} has {spec.num_domains} domains, the data has {size_array.size}."
            )
        return spec
    if isinstance(spec, str):
        spec = {"kind": spec}
    if not isinstance(spec, Mapping):
        raise TypeError(
            f"a rule spec must be a mapping with 'kind', a kind name or a DomainRule, got {spec!r}."
        )
    rule = call_kind("domain rule", RULES, spec, sizes=size_array, names=domain_names)
    if not isinstance(rule, DomainRule):  # pragma: no cover - every builder returns a rule
        raise TypeError(f"builder for {spec.get('kind')!r} returned {type(rule).__name__}.")
    return rule
