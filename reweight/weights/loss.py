"""Loss → weight strategies over the global batch (Sow et al. 2025), and guards for bad losses.

Sow et al., "Dynamic Loss-Based Sample Reweighting for Improved Large Language Model
Pretraining" (ICLR 2025), weight every sample of the *global* batch (all ranks' losses
gathered) by its current loss:

1. min–max normalise the losses to ``h ∈ [−1, 1]``:
   ``h = (2·l − (l_max + l_min)) / max(l_max − l_min, min_range)`` (their reference code uses
   ``min_range = 1e-6``; all-equal losses give ``h = 0`` for every sample);
2. map ``h`` through a strategy ``f``: LinUpper ``min(h + 1, 1)``, Quadratic ``1 − h²``
   (their code calls it "mid"), Extremes ``|h|``, Upper ``0.5·h + 0.5``;
3. weights ``w = softmax(f / r)`` over the batch, rescaled to mean 1 so the learning rate keeps
   its meaning.

``softmax(f / r)`` is the maximiser of ``Σ_i w_i f_i − r · KL(w ‖ uniform)`` over the simplex:
``r`` is the strength of the KL regulariser. ``r → ∞`` gives uniform weights, small ``r``
concentrates the weight on the highest scores. The paper runs uniform weights for a burn-in
(1,000 steps, :func:`strategy_at`), recommends a high ``r`` early and a lower one later (feed
``r`` from a schedule in :mod:`reweight.mixing`), and uses ``r = 0.4`` in its large runs.

The "hard" strategy is the same construction on the raw losses, ``w ∝ exp(l / τ)`` with
``τ = r``: the worst case of a KL-regularised distributionally robust objective
(``max_w Σ w_i l_i − τ · KL(w ‖ uniform)``), which upweights hard examples.

A strategy is a function ``(losses, h) -> scores`` of the batch's losses (float64, finite) and
their normalised values, applied entry by entry: masked entries are passed as the middle of the
valid range (``h = 0``) and their scores ignored, so that nothing is read back from the device;
the weights are ``n · softmax(scores / r)`` over the valid entries. New ones are added with
:func:`register_strategy`.

Everything here is pure: no project imports, no state, no gradients (weights are computed from
detached losses).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import torch

__all__ = [
    "STRATEGIES",
    "StrategyFn",
    "cap_losses",
    "get_strategy",
    "loss_weights",
    "normalize_losses",
    "register_strategy",
    "strategy_at",
]

StrategyFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``fn(losses, h) -> scores``: float64 1-D tensors of the batch (masked entries at the middle of
the valid range, scores ignored); scores finite where valid."""

DEFAULT_MIN_RANGE = 1e-6


# ---------------------------------------------------------------- strategies


def _uniform(losses: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Equal scores: weights all 1."""
    return torch.zeros_like(h)


def _linupper(losses: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """LinUpper ``min(h + 1, 1)``: low losses (h < 0) down-weighted linearly, the rest equal."""
    return torch.clamp(h + 1.0, max=1.0)


def _quadratic(losses: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Quadratic ``1 − h²``: mid-range losses up-weighted, both extremes down-weighted."""
    return 1.0 - h * h


def _extremes(losses: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Extremes ``|h|``: both the lowest and the highest losses up-weighted."""
    return h.abs()


def _upper(losses: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Upper ``0.5·h + 0.5``: weight increases linearly with the loss over the whole range."""
    return 0.5 * h + 0.5


def _hard(losses: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Hard examples: the raw loss, so the weights are ``softmax(loss / τ)`` with ``τ = r``."""
    return losses


_REGISTRY: dict[str, StrategyFn] = {
    "uniform": _uniform,
    "linupper": _linupper,
    "quadratic": _quadratic,
    "extremes": _extremes,
    "upper": _upper,
    "hard": _hard,
}

STRATEGIES: MappingProxyType[str, StrategyFn] = MappingProxyType(_REGISTRY)
"""Read-only view of the registered strategies by name (grows with :func:`register_strategy`)."""


def register_strategy(name: str, fn: StrategyFn, *, overwrite: bool = False) -> StrategyFn:
    """Registers a strategy under ``name`` (case-insensitive) for :func:`loss_weights`.

    Args:
        name: the strategy's name; stored in lower case.
        fn: ``fn(losses, h) -> scores``: receives the losses and their min–max normalised
            values ``h ∈ [−1, 1]`` (float64 1-D tensors of the same length; masked entries at
            the middle of the valid range, their scores ignored) and returns one finite score
            per valid entry, entry by entry; weights are ``n · softmax(scores / r)``.
        overwrite: allow replacing an existing strategy (built-ins included).

    Returns:
        ``fn``, unchanged.

    Raises:
        ValueError: the name is empty or taken (and ``overwrite`` is False).
        TypeError: ``fn`` is not callable.

    Example:
        >>> _ = register_strategy("lower_doc", lambda losses, h: -h, overwrite=True)
        >>> loss_weights(torch.tensor([1.0, 3.0]), "lower_doc", r=1.0).round(decimals=4)
        tensor([1.7616, 0.2384])
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"strategy name must be a non-empty string, got {name!r}.")
    if not callable(fn):
        raise TypeError(
            f"strategy {name!r} must be callable as fn(losses, h) -> scores, got {type(fn)!r}."
        )
    key = name.strip().lower()
    if key in _REGISTRY and not overwrite:
        raise ValueError(
            f"strategy {key!r} is already registered; pick another name or pass overwrite=True."
        )
    _REGISTRY[key] = fn
    return fn


def get_strategy(name: str | StrategyFn) -> StrategyFn:
    """The strategy registered under ``name`` (case-insensitive); a callable passes through.

    Raises:
        ValueError: unknown name; the message lists the valid names.

    Example:
        >>> get_strategy("LinUpper") is STRATEGIES["linupper"]
        True
    """
    if callable(name):
        return name
    key = name.strip().lower() if isinstance(name, str) else name
    try:
        return _REGISTRY[key]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown loss-weight strategy {name!r}; valid names: {', '.join(sorted(_REGISTRY))} "
            "(or register one with reweight.weights.register_strategy)."
        ) from None


def strategy_at(
    strategy: str | StrategyFn, step: int, *, burn_in_steps: int = 0
) -> str | StrategyFn:
    """The strategy to use at ``step``: ``"uniform"`` during the burn-in, ``strategy`` after.

    Sow et al. train with uniform weights for the first ``burn_in_steps`` optimizer steps
    (0-based ``step < burn_in_steps``; their code: ``global_step < burnout_steps``).

    Example:
        >>> [strategy_at("linupper", step, burn_in_steps=1000) for step in (0, 999, 1000)]
        ['uniform', 'uniform', 'linupper']
    """
    if isinstance(burn_in_steps, bool) or not isinstance(burn_in_steps, int) or burn_in_steps < 0:
        raise ValueError(f"burn_in_steps must be an integer >= 0, got {burn_in_steps!r}.")
    if isinstance(step, bool) or not isinstance(step, int):
        raise TypeError(f"step must be an integer (the global step), got {step!r}.")
    return "uniform" if step < burn_in_steps else strategy


# ---------------------------------------------------------------- helpers


def _as_losses(losses: Any) -> torch.Tensor:
    """A detached 1-D tensor view of ``losses`` (array-likes are converted to float64)."""
    t = losses.detach() if isinstance(losses, torch.Tensor) else torch.as_tensor(losses)
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"losses must be real numbers, got dtype {t.dtype}.")
    if not t.is_floating_point():
        t = t.to(torch.float64)
    if t.dim() != 1:
        raise ValueError(
            f"losses must be a 1-D tensor of per-sample losses, got shape {tuple(t.shape)}; "
            "reduce token or element losses per sample first (e.g. .mean(dim=1))."
        )
    return t


def _compute_device(t: torch.Tensor) -> torch.device:
    """float64 is unavailable on MPS: compute there on the CPU."""
    return torch.device("cpu") if t.device.type == "mps" else t.device


def _valid_mask(t: torch.Tensor, work: torch.Tensor, valid: Any) -> torch.Tensor:
    """Finite entries, and'ed with the optional user mask (same length, bool)."""
    mask = torch.isfinite(work)
    if valid is not None:
        v = valid.detach() if isinstance(valid, torch.Tensor) else torch.as_tensor(valid)
        if v.dtype != torch.bool:
            raise TypeError(f"valid must be a boolean mask, got dtype {v.dtype}.")
        if tuple(v.shape) != tuple(t.shape):
            raise ValueError(
                f"valid has shape {tuple(v.shape)} but losses have shape {tuple(t.shape)}; "
                "give one flag per loss."
            )
        mask = mask & v.to(work.device)
    return mask


def _check_min_range(min_range: float) -> float:
    value = float(min_range)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"min_range must be a finite number >= 0, got {min_range!r}.")
    return value


def _normalize(
    x: torch.Tensor, mask: torch.Tensor, min_range: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """h of the float64 values where ``mask`` holds (0 elsewhere), overflow-safe (halves before
    differences), and the middle of their range; reads nothing back to the host."""
    low = torch.where(mask, x, math.inf).min()
    high = torch.where(mask, x, -math.inf).max()
    middle = low / 2 + high / 2
    half = torch.clamp(high / 2 - low / 2, min=min_range / 2)
    h = torch.clamp((x - middle) / half, -1.0, 1.0)
    return torch.where(mask & (half != 0), h, 0.0), middle


def normalize_losses(
    losses: Any, *, valid: Any = None, min_range: float = DEFAULT_MIN_RANGE
) -> torch.Tensor:
    """Sow et al.'s min–max normalisation of the valid losses to ``h ∈ [−1, 1]`` (float64).

    ``h = (2·l − (l_max + l_min)) / max(l_max − l_min, min_range)`` over the valid (finite and
    ``valid``) entries; invalid entries get ``h = 0``. All-equal losses give ``h = 0``
    everywhere. A spread below ``min_range`` is not stretched to the full range (their code
    uses 1e-6; pass 0 to always stretch).

    Example:
        >>> normalize_losses(torch.tensor([1.0, 2.0, 3.0, float("nan")])).tolist()
        [-1.0, 0.0, 1.0, 0.0]
    """
    t = _as_losses(losses)
    work = t.to(device=_compute_device(t), dtype=torch.float64)
    mask = _valid_mask(t, work, valid)
    return _normalize(work, mask, _check_min_range(min_range))[0]


# ---------------------------------------------------------------- weights


def loss_weights(
    losses: Any,
    strategy: str | StrategyFn = "linupper",
    r: float = 1.0,
    *,
    valid: Any = None,
    min_range: float = DEFAULT_MIN_RANGE,
    check: bool = True,
) -> torch.Tensor:
    """Per-sample loss weights over a (global) batch: ``n · softmax(f(h) / r)``, mean 1.

    Computed in float64 from detached losses; returned with the input's dtype (float64 for
    non-float input) on the input's device. Entries that are non-finite or where ``valid`` is
    False get weight 0 and take no part in the min–max range or the mean: the valid weights
    sum to the number of valid entries. Weights are never non-finite (max-subtracted softmax).

    Args:
        losses: 1-D per-sample losses of the global batch (a tensor or array-like).
        strategy: a name in :data:`STRATEGIES` — ``"uniform"``, ``"linupper"`` (Sow et al.'s
            best: low losses down-weighted), ``"quadratic"``, ``"extremes"``, ``"upper"``,
            ``"hard"`` (``softmax(loss / r)`` on the raw losses: the KL-regularised worst case,
            i.e. DRO weighting) — or a callable ``fn(losses, h) -> scores``.
        r: softmax temperature (Sow et al.'s KL coefficient; the paper uses 0.4 in large runs);
            ``> 0``; ``math.inf`` gives uniform weights.
        valid: optional boolean mask, False for entries to ignore (padding, duplicates).
        min_range: smallest loss spread stretched to ``[−1, 1]``, see :func:`normalize_losses`.
        check: raise on no valid entry and on non-finite scores (both read the device);
            ``False`` reads nothing back to the host (a CUDA step is not synchronised) and
            gives non-finite weights instead, for the caller to check later.

    Returns:
        weights of the same shape as ``losses``: 0 for invalid entries, mean 1 over the rest.
        All-equal valid losses give all valid weights exactly 1.

    Raises:
        ValueError: no valid entry, bad ``r``, unknown strategy (the message lists the names),
            a strategy returning non-finite scores or the wrong shape.

    Example:
        >>> loss_weights(torch.tensor([1.0, 2.0, 3.0]), "linupper", r=1.0).round(decimals=4)
        tensor([0.4661, 1.2670, 1.2670])
        >>> loss_weights(torch.tensor([1.0, float("nan"), 3.0]), "upper", r=0.5).round(decimals=4)
        tensor([0.2384, 0.0000, 1.7616])
    """
    t = _as_losses(losses)
    fn = get_strategy(strategy)
    rate = float(r)
    if math.isnan(rate) or rate <= 0:
        raise ValueError(
            f"r must be > 0 (a softmax temperature; math.inf for uniform weights), got {r!r}."
        )
    min_range = _check_min_range(min_range)
    work = t.to(device=_compute_device(t), dtype=torch.float64)
    mask = _valid_mask(t, work, valid)
    if check and not bool(mask.any()):
        raise ValueError(
            f"no valid loss among {t.numel()} entries (all non-finite or masked out); "
            "check the model's losses or the `valid` mask."
        )
    h, middle = _normalize(work, mask, min_range)
    scores = fn(torch.where(mask, work, middle), h)
    if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != tuple(work.shape):
        raise ValueError(
            f"strategy {strategy!r} must return a tensor of shape {tuple(work.shape)}, got "
            f"{type(scores).__name__} of shape {tuple(getattr(scores, 'shape', ()))}."
        )
    scores = scores.to(torch.float64)
    if check and not bool(torch.isfinite(torch.where(mask, scores, 0.0)).all()):
        raise ValueError(
            f"strategy {strategy!r} returned non-finite scores; scores must be finite."
        )
    if math.isinf(rate):
        w = torch.ones_like(scores)
    else:
        masked = torch.where(mask, scores, -math.inf)
        e = torch.exp((masked - masked.max()) / rate)  # max entry is exp(0) = 1: sum >= 1
        w = e * (e.sum().reciprocal() * mask.sum())
    weights = torch.where(mask, w, 0.0)
    if t.dtype != torch.float64:
        weights = weights.clamp(max=torch.finfo(t.dtype).max)
    return weights.to(device=t.device, dtype=t.dtype)


def cap_losses(losses: Any, z: float, *, valid: Any = None) -> torch.Tensor:
    """Caps extreme losses at ``mean + z · std`` of the valid entries (noisy-label guard).

    Mislabelled samples keep a high loss forever; without a cap they dominate loss-increasing
    strategies ("hard", "upper") and compress everyone else's ``h`` in the min–max range. The
    mean and (population) standard deviation are taken over the finite, ``valid`` entries;
    non-finite entries are returned unchanged so that :func:`loss_weights` and the loss table
    still mask and count them. Fewer than two valid entries: returned unchanged.

    The cap is a ``torch.where``, so it is differentiable: capped entries get zero gradient
    (loss truncation). Every finite entry above the cap is capped, masked-out ones included.
    To cap only the weighting signal, pass ``losses.detach()``.

    Args:
        losses: 1-D per-sample losses.
        z: number of standard deviations above the mean (``>= 0``; ``math.inf``: no cap).
        valid: optional boolean mask of the entries that define the statistics.

    Returns:
        the capped losses, same dtype and device.

    Example:
        >>> cap_losses(torch.tensor([1.0, 1.0, 1.0, 9.0]), z=1.0)  # mean 3 + 1 · std √12
        tensor([1.0000, 1.0000, 1.0000, 6.4641])
    """
    t = losses if isinstance(losses, torch.Tensor) else torch.as_tensor(losses, dtype=torch.float64)
    base = _as_losses(t)
    value = float(z)
    if math.isnan(value) or value < 0:
        raise ValueError(f"z must be >= 0 standard deviations (math.inf: no cap), got {z!r}.")
    if math.isinf(value):
        return t
    work = base.to(device=_compute_device(base), dtype=torch.float64)
    mask = _valid_mask(base, work, valid)
    count = mask.sum()
    half = torch.where(mask, work / 2, 0.0)  # halves keep mean and spread finite for huge losses
    mean = half.sum() / count
    std = torch.sqrt(torch.where(mask, (half - mean) ** 2, 0.0).sum() / count)
    cap = 2 * (mean + value * std)
    limit = cap.to(device=t.device, dtype=t.dtype)
    apply = (count >= 2) & torch.isfinite(cap).to(t.device)
    over = apply.to(t.device) & torch.isfinite(t) & (t > limit)
    return torch.where(over, limit, t)
