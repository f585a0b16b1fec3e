"""Reweighter: owns the weight sources and the sampler; turns per-sample losses into one loss.

No Lightning import: a plain PyTorch loop uses it directly (see README).
"""

from __future__ import annotations

import json
import numbers
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from reweight import distributed
from reweight._checks import (
    FLOAT32_TINY,
    as_float_array,
    check_choice,
    check_int,
    check_range,
    check_weights,
    named,
)
from reweight.data import require_index
from reweight.metrics import weight_summary
from reweight.mixing import (
    DomainRule,
    FixedMixture,
    check_rule,
    check_schedule,
    make_rule,
    make_schedule,
)
from reweight.sampler import ReweightSampler
from reweight.table import PRIORITY_METHODS, LossTable, check_priority_params, check_table_params
from reweight.weights import (
    cap_losses,
    check_static_params,
    get_strategy,
    loss_weights,
    static_factor,
    strategy_at,
)

__all__ = ["DomainMixing", "DomainWeights", "DynamicWeights", "Reweighter", "StaticWeights"]

Mode = Literal["sample", "weight"]
MixingMode = Literal["sample", "weight", "hybrid"]
DynamicMode = Literal["weight", "sample", "both"]
_MODES = ("sample", "weight")
_MIXING_MODES = ("sample", "weight", "hybrid")
_DYNAMIC_MODES = ("weight", "sample", "both")
_NONFINITE = ("mask", "raise")
_STATE_VERSION = 3  # 3: run length, target mass, the draw stream's records
_MAX_STEP = 2**31 - 1  # the loss table stores steps as int32
_STATE_KEYS = (
    "fingerprint",
    "global_step",
    "total_steps",
    "realised",
    "domain_loss",
    "masked_total",
    "target_mass",
    "rules",
    "table",
    "sampler",
)


def _check_mode(source: str, mode: Any, valid: Sequence[str] = _MODES) -> None:
    check_choice(f"{source}.mode", mode, valid, "modes")


def _check_path_or_array(name: str, value: Any) -> None:
    """A ``.npy`` path or an array-like of numbers (read later, when the data's length is known)."""
    if isinstance(value, (str, Path, torch.Tensor, np.ndarray)):
        return
    if isinstance(value, (Mapping, bytes)) or not isinstance(value, (Sequence, numbers.Real)):
        raise TypeError(
            f"{name} must be a .npy path or an array of numbers (one per item), got "
            f"{type(value).__name__}."
        )


def _check_rule_spec(name: str, spec: Any, *, temperature: bool) -> None:
    """A domain rule, a :func:`reweight.mixing.make_rule` spec, or (``temperature``) a τ."""
    if isinstance(spec, (DomainRule, Mapping, str)):
        return
    if isinstance(spec, numbers.Real) and not isinstance(spec, bool):
        check_range(
            name,
            spec,
            low=0.0,
            low_open=True,
            finite=False,
            hint="a number is a sampling temperature τ > 0 (1 = natural, inf = uniform).",
        )
        return
    raise TypeError(
        f"{name} must be a DomainRule, a make_rule spec such as {{'kind': 'cooldown'}}, a kind "
        f"name{', or a temperature τ' if temperature else ''}; got {spec!r}."
    )


@dataclass(frozen=True)
class StaticWeights:
    """Static importance weights of every item, as log weights (an array or a ``.npy`` path).

    Args:
        log_weights: per-item log importance weights, or the path of a ``.npy`` file of them.
        beta: temper (0 ignores the weights, 1 uses them as they are).
        clip: clip the log weights to [−c, c] (a number) or [lo, hi] (a pair).
        floor: smallest factor relative to the mean factor (keeps every item reachable).
        mode: ``"sample"`` draws items in proportion to the weights; ``"weight"`` draws as if
            unweighted and multiplies each loss by the importance ratio instead.

    Example:
        >>> StaticWeights([0.0, 1.0], beta=0.5).factor().round(3).tolist()
        [0.607, 1.0]
    """

    log_weights: Any
    beta: float = 1.0
    clip: float | tuple[float, float] | None = None
    floor: float = 1e-6
    mode: Mode = "sample"

    def validate(self) -> None:
        """Checks every field that can be checked without the data (the log weights are read,
        and checked against the number of items, by the Reweighter); raises ValueError (TypeError
        for a wrong type) naming the field, showing the value and saying how to fix it."""
        _check_mode("StaticWeights", self.mode)
        check_static_params(
            self.beta, self.clip, self.floor, prefix="StaticWeights.", positive_floor=True
        )
        _check_path_or_array("StaticWeights.log_weights", self.log_weights)

    def load(self) -> np.ndarray:
        """The log weights as a float64 array (reading the ``.npy`` file if a path was given)."""
        source = self.log_weights
        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.exists():
                raise FileNotFoundError(f"static log weights file {str(path)!r} does not exist.")
            return np.load(path, allow_pickle=False).astype(np.float64).reshape(-1)
        if isinstance(source, torch.Tensor):
            source = source.detach().cpu().numpy()
        return np.asarray(source, dtype=np.float64).reshape(-1)

    def factor(self) -> np.ndarray:
        """a_i = exp(β · clip(log w_i)), max 1, floored (see ``reweight.weights.static_factor``)."""
        self.validate()
        with named("StaticWeights.log_weights"):
            factor = static_factor(self.load(), self.beta, self.clip, self.floor)
        if factor.min() < FLOAT32_TINY:
            raise ValueError(
                f"StaticWeights.floor={self.floor!r} lets factors fall to {float(factor.min())!r}, "
                f"below float32's smallest normal number {FLOAT32_TINY:.3g} (the sampler stores "
                "factors as float32); raise the floor or lower beta."
            )
        return factor


@dataclass(frozen=True)
class DomainWeights:
    """Fixed domain probabilities π (relative weights, by domain id order or by name).

    Args:
        probs: a sequence (one per domain) or a mapping from domain name to weight (missing
            names get 0).
        mode: ``"sample"`` draws domain d with probability π(d); ``"weight"`` draws domains in
            their natural proportions and multiplies losses by π(d) / (n_d / N).
    """

    probs: Sequence[float] | Mapping[str, float] | np.ndarray
    mode: Mode = "sample"

    def validate(self) -> None:
        """Checks the fields without the data: ``mode`` and that ``probs`` are finite, >= 0 and
        not all zero (names and length are checked by :meth:`resolve`)."""
        _check_mode("DomainWeights", self.mode)
        if isinstance(self.probs, Mapping):
            keys = [key for key in self.probs if not isinstance(key, str)]
            if keys:
                raise TypeError(
                    f"DomainWeights.probs keys must be domain names (strings), got {keys[0]!r}; "
                    "give a sequence to address domains by id."
                )
            values = [self.probs[key] for key in self.probs]
            for key, value in zip(self.probs, values, strict=True):
                if isinstance(value, bool) or not isinstance(value, numbers.Real):
                    raise TypeError(
                        f"DomainWeights.probs[{key!r}] must be a number, got {value!r}."
                    )
            check_weights("DomainWeights.probs", values)
        elif isinstance(self.probs, (str, bytes)) or not isinstance(
            self.probs, (Sequence, np.ndarray, torch.Tensor)
        ):
            raise TypeError(
                "DomainWeights.probs must be a sequence (one weight per domain) or a mapping "
                f"from domain name to weight, got {self.probs!r}."
            )
        else:
            check_weights("DomainWeights.probs", self.probs)

    def resolve(self, names: Sequence[str]) -> np.ndarray:
        """π as an array ordered like ``names`` (not normalised)."""
        self.validate()
        if isinstance(self.probs, Mapping):
            unknown = sorted(set(self.probs) - set(names))
            if unknown:
                raise ValueError(
                    f"DomainWeights.probs name unknown domain(s) {unknown}; known domains: "
                    f"{list(names)}."
                )
            array = np.array([float(self.probs.get(n, 0.0)) for n in names])
        else:
            array = as_float_array("DomainWeights.probs", self.probs)
            if array.size != len(names):
                raise ValueError(
                    f"DomainWeights.probs has {array.size} entries for {len(names)} domains "
                    f"{list(names)}; give one per domain, or a mapping from name to probability."
                )
        return check_weights("DomainWeights.probs", array, len(names))


@dataclass(frozen=True)
class DomainMixing:
    """A domain rule — a temperature schedule, end-of-training upsampling, DoReMi, ODM — applied
    by sampling, by loss weighting, or by both.

    Args:
        rule: the target domain probabilities: a :class:`reweight.mixing.DomainRule`, or a plain
            spec for :func:`reweight.mixing.make_rule` such as ``{"kind": "cooldown"}`` (domain
            names in the spec refer to the Reweighter's ``domain_names``).
        mode: ``"sample"`` draws domains from the rule's π (upsampling); ``"weight"`` draws
            domains in their natural proportions and multiplies each loss by π(d) / (n_d / N)
            (scalarization, Li et al. 2025); ``"hybrid"`` draws from ``sample_rule`` and
            corrects the loss to ``rule``.
        sample_rule: what ``"hybrid"`` draws from: a rule, a spec, or a number τ meaning
            temperature sampling at τ.
        reference: per-item reference losses for DoReMi (an array or a ``.npy`` path, one per
            item); a batch key ``"reference_loss"`` takes precedence when present.

    Example:
        >>> import torch
        >>> mixing = DomainMixing({"kind": "uniform"}, mode="weight")
        >>> rw = Reweighter(domains=[0, 0, 0, 1], domain_weights=mixing)
        >>> rw.loss_weights(torch.tensor([0, 3])).tolist()  # π = (½, ½) over natural (¾, ¼)
        [0.6666666666666666, 2.0]
    """

    rule: Any
    mode: MixingMode = "sample"
    sample_rule: Any = None
    reference: Any = None

    def validate(self) -> None:
        """Checks the fields without the data: ``mode``, the kinds of ``rule`` and
        ``sample_rule`` (only and always with ``mode="hybrid"``) and of ``reference``. The rules'
        probabilities over training progress are checked by the Reweighter, which knows the
        domains."""
        _check_mode("DomainMixing", self.mode, _MIXING_MODES)
        _check_rule_spec("DomainMixing.rule", self.rule, temperature=True)
        if self.mode == "hybrid":
            if self.sample_rule is None:
                raise ValueError(
                    "DomainMixing.sample_rule is missing: hybrid domain mixing needs sample_rule "
                    "(what to draw from, e.g. a temperature τ such as 3.0) besides rule (what to "
                    "correct the loss to)."
                )
            _check_rule_spec("DomainMixing.sample_rule", self.sample_rule, temperature=True)
        elif self.sample_rule is not None:
            raise ValueError(
                f"DomainMixing.sample_rule is only used by mode='hybrid' (mode is "
                f"{self.mode!r}); drop it or switch the mode."
            )
        if self.reference is not None:
            _check_path_or_array("DomainMixing.reference", self.reference)


@dataclass(frozen=True)
class DynamicWeights:
    """Per-sample weights from current losses (Sow et al. 2025) and loss-driven sampling
    priorities from a per-item loss table (Loshchilov & Hutter 2015).

    Args:
        strategy: in-batch strategy of :func:`reweight.weights.loss_weights` ("linupper",
            "quadratic", "extremes", "upper", "hard", "uniform", or a registered name).
        r: the strategy's temperature, finite and > 0 at every progress: a number, a schedule
            (a callable of training progress), or a spec for
            :func:`reweight.mixing.make_schedule`. Sow et al. use r = 0.4 late.
        burn_in_steps: optimizer steps of uniform weights first (Sow et al. use 1,000).
        mode: ``"weight"`` multiplies losses by the in-batch weights; ``"sample"`` draws items
            by their loss-table priority (the priorities define the target, as in online batch
            selection); ``"both"`` does both — the priorities then only decide which items are
            drawn and the importance correction divides them out of the loss weights
            (``correction=False`` keeps both preferences).
        priority: ``"rank"`` (selection pressure ``pressure``, the ratio of the most to the least
            likely item) or ``"softmax"`` (of the loss estimate over ``temperature``).
        floor: smallest priority relative to the largest; keeps every item reachable.
        decay: EMA decay of each item's loss in the table.
        prior: loss estimate of unseen items: ``"mean"`` (of the seen items) or a number.
        relax_steps: stale entries relax toward the prior with this time constant (steps).
        refresh_every: steps between full refreshes of every item's priority (O(N)), plus
            refreshes at steps 1, 2, 4, 8, ... before the first one; between refreshes only the
            items of each batch are updated (O(batch · log N)), ranked against the last
            refresh's snapshot of all estimates.
        cap_z: clamp losses above mean + cap_z · std of the batch before weighting (noisy
            labels); None disables.
        correction: see ``mode="both"``.

    Example:
        >>> import torch
        >>> rw = Reweighter(4, dynamic=DynamicWeights("linupper", r=1.0))
        >>> loss = rw.reduce(torch.tensor([0.0, 1.0, 2.0, 3.0]), {"index": torch.arange(4)})
        >>> [round(w, 3) for w in rw.last_loss_weights.tolist()]
        [0.477, 0.929, 1.297, 1.297]
    """

    strategy: str = "linupper"
    r: Any = 1.0
    burn_in_steps: int = 0
    mode: DynamicMode = "weight"
    priority: str = "rank"
    pressure: float = 100.0
    temperature: float = 1.0
    floor: float = 1e-3
    decay: float = 0.9
    prior: float | str = "mean"
    relax_steps: int | None = None
    refresh_every: int = 1000
    cap_z: float | None = None
    correction: bool = True

    def validate(self) -> None:
        """Checks every field; raises ValueError (TypeError for a wrong type) naming the field,
        showing the bad value and saying how to fix it. A schedule ``r`` is checked on a grid of
        training progress in [0, 1]."""
        _check_mode("DynamicWeights", self.mode, _DYNAMIC_MODES)
        if not (isinstance(self.strategy, str) or callable(self.strategy)):
            raise TypeError(
                f"DynamicWeights.strategy must be a strategy name or a callable, got "
                f"{self.strategy!r}."
            )
        with named("DynamicWeights.strategy"):
            get_strategy(self.strategy)
        with named("DynamicWeights.r"):
            schedule = _as_schedule(self.r)
        check_schedule(
            "DynamicWeights.r",
            schedule,
            low=0.0,
            low_open=True,
            hint="r is the softmax temperature of the loss weights: give a finite r > 0 at "
            "every progress (strategy='uniform' gives uniform weights).",
        )
        check_int(
            "DynamicWeights.burn_in_steps",
            self.burn_in_steps,
            minimum=0,
            hint="the optimizer steps of uniform weights first (0: none).",
        )
        check_choice("DynamicWeights.priority", self.priority, PRIORITY_METHODS, "priorities")
        check_range(
            "DynamicWeights.floor",
            self.floor,
            low=FLOAT32_TINY,
            high=1.0,
            hint="the smallest priority relative to the largest must be positive (0 would make "
            "items unreachable) and a normal float32 (the sampler stores priorities as float32).",
        )
        check_priority_params(
            self.priority, self.pressure, self.temperature, self.floor, prefix="DynamicWeights."
        )
        check_table_params(self.decay, self.prior, None, prefix="DynamicWeights.")
        if self.relax_steps is not None:
            check_int(
                "DynamicWeights.relax_steps",
                self.relax_steps,
                minimum=1,
                hint="the relaxation time constant in steps, or None for no relaxation.",
            )
        check_int(
            "DynamicWeights.refresh_every",
            self.refresh_every,
            minimum=1,
            hint="the steps between full refreshes of every item's priority.",
        )
        if self.cap_z is not None:
            check_range(
                "DynamicWeights.cap_z",
                self.cap_z,
                low=0.0,
                low_open=True,
                finite=False,
                hint="give the number of standard deviations above the mean, or None.",
            )
        if not isinstance(self.correction, (bool, np.bool_)):
            raise TypeError(f"DynamicWeights.correction must be a bool, got {self.correction!r}.")


def _describe(value: Any) -> Any:
    """A JSON-able description of a source's configuration, for checkpoint fingerprints."""
    if isinstance(value, Mapping):
        return json.loads(json.dumps(value, sort_keys=True, default=str))
    if isinstance(value, (int, float, str)) or value is None:
        return value
    return type(value).__name__


def _draw_steps(sampler_state: Any) -> np.ndarray | None:
    """The draw steps of a sampler state's draws in flight (None when absent: the sampler's own
    validation names the problem)."""
    try:
        return np.asarray(torch.as_tensor(sampler_state["stream"]["clock"]).cpu().numpy())
    except (KeyError, TypeError, ValueError, RuntimeError):
        return None


def _as_schedule(value: Any) -> Callable[[float], float]:
    if callable(value):
        return value
    return make_schedule(value)


def _check_total_steps(value: Any) -> int:
    return check_int(
        "total_steps", value, minimum=1, hint="give the run's length in optimizer steps."
    )


def _sampler_probs(probs: np.ndarray) -> np.ndarray:
    """π normalised, with shares below float32's smallest normal number set to 0: the sampler
    stores π as float32 and rejects such values (a temperature near 0 or an online rule without
    a floor can produce them); a share that small is never drawn anyway."""
    out = np.asarray(probs, dtype=np.float64) / float(np.sum(probs))
    return np.where(out < FLOAT32_TINY, 0.0, out)


class Reweighter:
    """Combines weight sources into a sampling distribution q and per-sample loss weights.

    The target distribution p applies every source; the sampler draws from q, which applies only
    the sources in a sampling mode. ``reduce`` gathers the global batch's losses, computes the
    in-batch loss weights, multiplies them by p/q and self-normalises them to mean 1 over the
    global batch, so "upsample or upweight" is a per-source setting.

    Args:
        num_items: number of items (or give ``domains``).
        domains: per-item domain ids 0..K-1.
        domain_names: names of the K domains (default "0", "1", ...).
        static: static importance weights (:class:`StaticWeights`).
        domain_weights: fixed domain probabilities (:class:`DomainWeights`) or a domain rule
            (:class:`DomainMixing`: schedules, end-of-training upsampling, DoReMi, ODM).
        dynamic: loss-based per-sample weights and priorities (:class:`DynamicWeights`).
        total_steps: optimizer steps of the whole run, for schedules (training progress is
            ``global_step / total_steps``); :class:`~reweight.ReweightCallback` reads it from the
            Trainer when not given.
        nonfinite: ``"mask"`` drops NaN/inf per-sample losses from the loss, weights, table and
            domain rules (counted in metrics, warned once); ``"raise"`` makes them an error.
        self_normalize: rescale each global batch's loss weights to mean 1 (default: lower
            variance, the learning rate keeps its meaning, but a small bias when a rarely drawn,
            heavily upweighted item is missing from a batch); ``False`` applies p/q as is —
            mean 1 in expectation and unbiased (the in-batch strategy weights stay mean 1).
        seed, num_samples, infinite, block_size: passed to :class:`ReweightSampler`.
        realised_decay: decay of the moving averages of realised domain shares and domain losses.

    Raises:
        ValueError: any invalid field of any source (TypeError for a wrong type), at
            construction: the message names the field, shows the value and says how to fix it.
            Schedules and domain rules are evaluated on a grid of training progress in [0, 1]
            (0, 1/64, ..., 1 and their breakpoints), so no later ``reduce``/``step`` fails
            because of the configuration; and a ``reduce``/``step`` that raises changes nothing.

    Example:
        >>> import torch
        >>> rw = Reweighter(domains=[0, 0, 0, 1], domain_names=["big", "small"],
        ...                 domain_weights=DomainWeights([0.5, 0.5], mode="weight"))
        >>> batch = {"index": torch.tensor([0, 3])}
        >>> loss = rw.reduce(torch.tensor([1.0, 1.0]), batch)  # weights 0.5 and 1.5 (mean 1)
        >>> round(float(loss), 4)
        1.0
        >>> rw.loss_weights(torch.tensor([0, 3])).tolist()
        [0.6666666666666666, 2.0]
    """

    def __init__(
        self,
        num_items: int | None = None,
        *,
        domains: Any = None,
        domain_names: Sequence[str] | None = None,
        static: StaticWeights | None = None,
        domain_weights: DomainWeights | DomainMixing | None = None,
        dynamic: DynamicWeights | None = None,
        total_steps: int | None = None,
        nonfinite: Literal["mask", "raise"] = "mask",
        self_normalize: bool = True,
        seed: int = 0,
        num_samples: int | None = None,
        infinite: bool = False,
        block_size: int = 16,
        realised_decay: float = 0.98,
    ) -> None:
        # ---- 1. every check that needs only the configuration, before anything is built
        check_range(
            "realised_decay",
            realised_decay,
            low=0.0,
            high=1.0,
            high_open=True,
            hint="it is the decay of the moving averages of realised domain shares and losses.",
        )
        check_choice("nonfinite", nonfinite, _NONFINITE)
        if total_steps is not None:
            _check_total_steps(total_steps)
        if domain_names is not None:
            if isinstance(domain_names, (str, bytes)) or not isinstance(domain_names, Sequence):
                raise TypeError(
                    f"domain_names must be a sequence of names, one per domain, got "
                    f"{domain_names!r}."
                )
            duplicates = sorted({str(x) for x in domain_names if list(domain_names).count(x) > 1})
            if duplicates:
                raise ValueError(
                    f"domain_names must be unique, {duplicates} appear more than once."
                )
        for label, source, kinds in (
            ("static", static, (StaticWeights,)),
            ("domain_weights", domain_weights, (DomainWeights, DomainMixing)),
            ("dynamic", dynamic, (DynamicWeights,)),
        ):
            if source is not None and not isinstance(source, kinds):
                raise TypeError(
                    f"{label} must be {' or '.join(kind.__name__ for kind in kinds)} (or None), "
                    f"got {type(source).__name__}."
                )
        for source in (static, domain_weights, dynamic):
            if source is not None:
                source.validate()

        # ---- 2. the data's layout: the sampler parses and checks it
        sampler = ReweightSampler(
            num_items,
            domains=domains,
            num_domains=None if domain_names is None else len(domain_names),
            seed=seed,
            num_samples=num_samples,
            infinite=infinite,
            block_size=block_size,
        )
        k = sampler.num_domains
        n = sampler.num_items
        sizes = sampler.domain_sizes
        names = [str(i) for i in range(k)] if domain_names is None else list(domain_names)
        if len(names) != k:
            raise ValueError(
                f"domain_names has {len(names)} names for {k} domains; give one per domain."
            )

        # ---- 3. every check that needs the layout, before any weight is set
        target_factor = np.ones(n)
        if static is not None:
            target_factor = static.factor()
            if target_factor.size != n:
                raise ValueError(
                    f"StaticWeights.log_weights has {target_factor.size} entries for {n} items; "
                    "give one per item, in dataset order."
                )
        mode, target_rule, sample_rule, reference = self._domain_rules(domain_weights, sizes, names)
        r_schedule = None if dynamic is None else _as_schedule(dynamic.r)

        # ---- 4. build
        self.sampler = sampler
        self.domain_names = names
        self.static = static
        self.domain_weights = domain_weights
        self.dynamic = dynamic
        self.nonfinite = nonfinite
        self.self_normalize = bool(self_normalize)
        self.realised_decay = float(realised_decay)
        self.total_steps = None if total_steps is None else _check_total_steps(total_steps)
        self.global_step = 0
        self._natural = sampler.natural_probs()

        # ---- domain rules: what p targets and what q samples
        self._target_rule: DomainRule | None = target_rule
        self._sample_rule: DomainRule | None = sample_rule
        self._reference: np.ndarray | None = reference
        self._mixing_mode = mode
        self._needs_progress = any(
            rule is not None and not isinstance(rule, FixedMixture)
            for rule in (self._target_rule, self._sample_rule)
        ) or (dynamic is not None and not isinstance(dynamic.r, (int, float)))
        self._r_schedule = r_schedule
        self._target_probs = self._natural.copy()
        self._sampled_request: np.ndarray | None = None
        self._apply_domain_probs()

        # ---- item factors: a (static) and b (dynamic priorities)
        self._target_static: np.ndarray | None = None  # a_t when it differs from the sampler's
        if static is not None:
            if static.mode == "sample":
                sampler.set_static(target_factor)
            else:
                self._target_static = target_factor.astype(np.float32)
        self._table: LossTable | None = None
        self._b_in_sample = dynamic is not None and dynamic.mode in ("sample", "both")
        self._b_in_target = dynamic is not None and (
            dynamic.mode == "sample" or (dynamic.mode == "both" and not dynamic.correction)
        )
        if self._b_in_sample and dynamic is not None:
            self._table = LossTable(
                n, decay=dynamic.decay, prior=dynamic.prior, relax_steps=dynamic.relax_steps
            )
        self._in_batch = dynamic is not None and dynamic.mode in ("weight", "both")
        self._weighting = (
            self._target_static is not None
            or mode in ("weight", "hybrid")
            or (self._b_in_sample and not self._b_in_target)
        )
        # T_d = Σ_{j∈d} t_j, the target's per-domain item mass (only needed when p/q does not
        # reduce to π_p/π_q): constant unless b is part of the target.
        self._item_domain_cache: np.ndarray | None = None
        self._target_mass: np.ndarray | None = None
        if self._target_static is not None or (self._b_in_sample and not self._b_in_target):
            self._target_mass = self._compute_target_mass()
        self._fingerprint = self._make_fingerprint(target_factor)

        self._realised = np.zeros(k)
        self._domain_loss = np.full(k, np.nan)
        self._masked_total = 0
        self._masked_last = 0
        self._warned_nonfinite = False
        self._last_weights: dict[str, float] = {}
        self._last_draw_age: float = float("nan")
        self._warned_unmatched = False
        self._last_weight_values = np.empty(0)

    # ------------------------------------------------------------------ construction helpers

    @staticmethod
    def _resolve_rule(name: str, spec: Any, sizes: np.ndarray, names: list[str]) -> DomainRule:
        if isinstance(spec, DomainRule):
            if spec.num_domains != len(names):
                raise ValueError(
                    f"{name} has {spec.num_domains} domains but the data has "
                    f"{len(names)} ({names}); build the rule for these domains."
                )
            return spec
        if isinstance(spec, numbers.Real) and not isinstance(spec, bool):
            spec = {"kind": "temperature", "tau": float(spec)}
        with named(name):
            return make_rule(spec, sizes, names)

    @classmethod
    def _domain_rules(
        cls, mixing: DomainWeights | DomainMixing | None, sizes: np.ndarray, names: list[str]
    ) -> tuple[str, DomainRule | None, DomainRule | None, np.ndarray | None]:
        """Builds and checks the domain rules: (mode, target rule, sample rule, reference).

        π_p and π_q are checked on a grid of training progress in [0, 1]: finite, >= 0, not all
        zero, one per domain; π_q must put mass on a domain that has items; and in the modes that
        draw from another distribution than the target (weight, hybrid) every domain that can be
        drawn must have a positive target probability, or a batch of its items would have no
        loss weight at all.
        """
        if mixing is None:
            return "sample", None, None, None
        k = len(names)
        mode = mixing.mode
        reference: np.ndarray | None = None
        sample: DomainRule | None = None
        if isinstance(mixing, DomainWeights):
            target_name = sample_name = "DomainWeights.probs"
            with named(target_name):
                target: DomainRule = FixedMixture(mixing.resolve(names))
        else:
            target_name, sample_name = "DomainMixing.rule", "DomainMixing.sample_rule"
            target = cls._resolve_rule(target_name, mixing.rule, sizes, names)
            if mode == "hybrid":
                sample = cls._resolve_rule(sample_name, mixing.sample_rule, sizes, names)
            if mixing.reference is not None:
                with named("DomainMixing.reference"):
                    reference = StaticWeights(mixing.reference).load()
                n = int(sizes.sum())
                bad = ~np.isfinite(reference)
                if reference.size != n or bad.any():
                    example = f"; e.g. {float(reference[bad][0])!r}" if bad.any() else ""
                    raise ValueError(
                        f"DomainMixing.reference must hold {n} finite losses, one per item in "
                        f"dataset order (got {reference.size} values{example})."
                    )
        if mode == "sample":
            sample, sample_name = target, target_name
        extra = () if sample is None else sample.breakpoints()
        targets = check_rule(target_name, target, k, extra)
        if sample is None:  # weight mode draws the natural mixture
            samples = [(at, sizes / float(sizes.sum())) for at, _ in targets]
            sample_name = "the natural mixture"
        elif sample is target:
            samples = targets
        else:
            samples = check_rule(sample_name, sample, k, target.breakpoints())
        for (at, pi_p), (_, pi_q) in zip(targets, samples, strict=True):
            drawn = _sampler_probs(pi_q) > 0
            if not (drawn & (sizes > 0)).any():
                raise ValueError(
                    f"{sample_name} puts all its probability on domains without items at "
                    f"progress {at:g} ({pi_q.tolist()}; domain sizes {sizes.tolist()}); give a "
                    "domain that has items a positive probability."
                )
            starved = drawn & (sizes > 0) & ~(pi_p > 0)
            if mode != "sample" and starved.any():
                d = int(np.flatnonzero(starved)[0])
                raise ValueError(
                    f"{target_name} gives domain {names[d]!r} probability 0 at progress {at:g}, "
                    f"but mode={mode!r} still draws it (from {sample_name}), so a batch of its "
                    "items would have no loss weight; give every drawn domain a positive "
                    "probability, or use mode='sample' to leave domains out."
                )
        return mode, target, sample, reference

    @classmethod
    def from_dataset(cls, dataset: Any, **kwargs: Any) -> Reweighter:
        """Builds a Reweighter for an :class:`~reweight.IndexedDataset` (its domains and names).

        Example:
            >>> from reweight import IndexedDataset
            >>> ds = IndexedDataset.concat({"a": [1, 2, 3], "b": [4]})
            >>> Reweighter.from_dataset(ds).domain_names
            ['a', 'b']
        """
        domains = getattr(dataset, "domains", None)
        if domains is None:
            return cls(len(dataset), **kwargs)
        return cls(domains=domains, domain_names=list(dataset.domain_names), **kwargs)

    def _make_fingerprint(self, target_factor: np.ndarray) -> dict[str, Any]:
        static, mix, dyn = self.static, self.domain_weights, self.dynamic
        mixing: dict[str, Any] | None = None
        if isinstance(mix, DomainWeights):
            mixing = {"mode": mix.mode, "probs": [round(float(p), 12) for p in self._target_probs]}
        elif isinstance(mix, DomainMixing):
            mixing = {
                "mode": mix.mode,
                "rule": _describe(mix.rule),
                "sample_rule": _describe(mix.sample_rule),
                "initial": [round(float(p), 12) for p in self._target_probs],
            }
        return {
            "sampler": self.sampler.fingerprint(),
            "domain_names": list(self.domain_names),
            "static": None
            if static is None
            else {
                "mode": static.mode,
                "crc": zlib.crc32(target_factor.astype(np.float32).tobytes()),
            },
            "domain_weights": mixing,
            "dynamic": None
            if dyn is None
            else {
                "mode": dyn.mode,
                "strategy": dyn.strategy,
                "priority": dyn.priority,
                "correction": dyn.correction,
            },
        }

    def set_total_steps(self, total_steps: int) -> None:
        """Sets the run's length in optimizer steps (training progress = step / total_steps).

        The length is part of :meth:`state_dict`. Changing a known length (a run resumed with a
        longer ``max_steps``) warns with both values: schedules then read progress against the
        new length from the current step on.
        """
        total = _check_total_steps(total_steps)
        old = self.total_steps
        self.total_steps = total
        try:
            probs = self._domain_probs(self.progress)  # raises before anything changes
        finally:
            self.total_steps = old
        if old is not None and total != old:
            warnings.warn(
                f"the run's length changes from {old} to {total} optimizer steps at "
                f"step {self.global_step}; schedules now read progress as step / {total} "
                "(a resumed run with another max_steps: the schedule is not the one an "
                "uninterrupted run of either length would follow).",
                RuntimeWarning,
                stacklevel=2,
            )
        self.total_steps = total
        self._apply_domain_probs(probs)

    @property
    def needs_total_steps(self) -> bool:
        """Whether a schedule or an online rule reads training progress (then ``total_steps``
        must be known before the first :meth:`step`)."""
        return self._needs_progress

    @property
    def progress(self) -> float:
        """Training progress in [0, 1]: ``global_step / total_steps`` (0 until it is known)."""
        return self._progress_at(self.global_step)

    def _progress_at(self, step: int) -> float:
        if self.total_steps is None:
            return 0.0
        return min(1.0, step / self.total_steps)

    # ------------------------------------------------------------------ item factors

    def _item_domains(self, idx: np.ndarray) -> np.ndarray:
        return self.sampler.item_domains(idx)

    def _compute_target_mass(self) -> np.ndarray:
        """Σ_{j∈d} t_j for every domain, in float64 (O(N))."""
        n, k = self.sampler.num_items, self.sampler.num_domains
        items = np.arange(n)
        static, dynamic = self.sampler.factors(items)
        t = self._target_static.astype(np.float64) if self._target_static is not None else static
        if self._b_in_target:
            t = t * dynamic
        return np.bincount(self._item_domains(items), weights=t, minlength=k)

    def _domain_probs(self, progress: float) -> tuple[np.ndarray, np.ndarray] | None:
        """(π_p, π_q) at ``progress``, both checked and normalised (None without domain rules);
        changes nothing."""
        if self._target_rule is None:
            return None
        k = self.sampler.num_domains
        where = f"at progress {progress:g}"
        target = check_weights(
            f"the domain rule's probabilities {where}", self._target_rule.probs(progress), k
        )
        if self._mixing_mode == "weight":
            sample = self._natural
        elif self._sample_rule is self._target_rule:
            sample = target
        else:
            assert self._sample_rule is not None
            sample = check_weights(
                f"the sample rule's probabilities {where}", self._sample_rule.probs(progress), k
            )
        sample = _sampler_probs(sample)
        if not (sample[self.sampler.domain_sizes > 0] > 0).any():
            raise ValueError(
                f"the domain probabilities {where} put no mass on a domain that has items "
                f"({sample.tolist()}); nothing could be drawn (nothing was changed)."
            )
        return target / target.sum(), sample

    def _apply_domain_probs(self, probs: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Sets π_p and π_q (``probs`` from :meth:`_domain_probs`, default: at the current
        progress); π_q goes to the sampler when it changes."""
        if probs is None:
            probs = self._domain_probs(self.progress)
        if probs is None:
            return
        target, sample = probs
        if self._sampled_request is None or not np.array_equal(sample, self._sampled_request):
            self.sampler.set_domain_probs(sample)
            self._sampled_request = sample
        self._target_probs = target

    # ------------------------------------------------------------------ per step

    def loss_weights(self, index: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The unnormalised importance ratio p(i)/q(i) of each item (float64 tensor; 1 if unused).

        p applies every source; q is what the sampler draws from now (:meth:`reduce` divides
        by the q each item was drawn with instead).
        """
        idx = self._check_index(
            index.detach().cpu().numpy() if isinstance(index, torch.Tensor) else index
        )
        if not self._weighting:
            return torch.ones(idx.size, dtype=torch.float64)
        q = self.sampler.probabilities(idx)
        return torch.from_numpy(self._ratios(idx, self._item_domains(idx), q))

    def _check_index(self, index: Any) -> np.ndarray:
        """Item indices as a 1-D int64 array; ValueError (not IndexError) when out of range."""
        idx = np.asarray(index).reshape(-1)
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"item indices must be integers, got dtype {idx.dtype}.")
        idx = idx.astype(np.int64)
        n = self.sampler.num_items
        bad = (idx < 0) | (idx >= n)
        if bad.any():
            raise ValueError(
                f"batch index {int(idx[bad][0])} is outside 0..{n - 1}; the batch must come from "
                "the dataset the Reweighter was built for."
            )
        return idx

        q = self.sampler.probabilities(idx)
        return torch.from_numpy(self._ratios(idx, self._item_domains(idx), q))

    def _target_probabilities(self, idx: np.ndarray, dom: np.ndarray) -> np.ndarray:
        """p(i) of each item under the current target."""
        if self._target_mass is None:
            # The item factors of p are the sampler's: p(i) = π_p(d) · w_i / Σ_{j∈d} w_j.
            return self._target_probs[dom] * self.sampler.item_shares(idx)
        static, dynamic = self.sampler.factors(idx)
        t = (
            self._target_static[idx].astype(np.float64)
            if self._target_static is not None
            else static
        )
        if self._b_in_target:
            t = t * dynamic
        mass = self._target_mass[dom]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(mass > 0, self._target_probs[dom] * t / mass, 0.0)

    def _ratios(self, idx: np.ndarray, dom: np.ndarray, q: np.ndarray) -> np.ndarray:
        """p(i) / q(i) for items drawn with probabilities ``q``."""
        p = self._target_probabilities(idx, dom)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(q > 0, p / q, 0.0)

    def reduce(self, per_sample_loss: torch.Tensor, batch: Any) -> torch.Tensor:
        """Weighted mean of per-sample losses, with weights of mean 1 over the global batch.

        Per-sample losses and indices are all-gathered (a no-op on one process), so every rank
        computes the same weights over the global batch and applies its own slice; the domain
        rules and the loss table are updated from the global batch too.

        Args:
            per_sample_loss: shape (batch,), e.g. ``F.cross_entropy(..., reduction="none")``.
            batch: the batch dict; must carry ``"index"`` (use :class:`~reweight.IndexedDataset`);
                an optional ``"reference_loss"`` (per sample) feeds DoReMi.

        Returns:
            A scalar loss to backpropagate; the weights carry no gradient.
        """
        index = require_index(batch)
        if not isinstance(per_sample_loss, torch.Tensor):
            raise TypeError(f"per_sample_loss must be a tensor, got {type(per_sample_loss)}.")
        if per_sample_loss.dim() != 1 or per_sample_loss.numel() != index.numel():
            raise ValueError(
                f"per_sample_loss has shape {tuple(per_sample_loss.shape)} but the batch has "
                f"{index.numel()} indices; compute the loss with reduction='none' (one value per "
                "sample) and average any extra dimensions per sample first."
            )
        local_idx = index.detach().cpu().to(torch.int64)
        self._check_index(local_idx.numpy())
        loss64 = per_sample_loss.detach().to(device="cpu", dtype=torch.float64)
        columns = [loss64, local_idx.to(torch.float64)]
        columns.append(torch.full_like(loss64, float(distributed.rank())))
        reference = batch.get("reference_loss") if isinstance(batch, Mapping) else None
        if reference is not None:
            columns.append(torch.as_tensor(reference).detach().cpu().to(torch.float64).reshape(-1))
            if columns[-1].numel() != loss64.numel():
                raise ValueError(
                    f"batch['reference_loss'] has {columns[-1].numel()} values for "
                    f"{loss64.numel()} samples; give one reference loss per sample."
                )
        local = torch.stack(columns, dim=1).to(distributed.collective_device())
        gathered = distributed.all_gather_cat(local).cpu().numpy()
        g_loss = gathered[:, 0]
        g_idx = gathered[:, 1].astype(np.int64)
        mine = gathered[:, 2] == distributed.rank()
        g_ref = gathered[:, 3] if reference is not None else None
        valid = np.isfinite(g_loss)
        masked = int((~valid).sum())
        if masked:
            example = float(g_loss[~valid][0])
            if self.nonfinite == "raise" or not valid.any():
                raise ValueError(
                    f"{masked} of {g_loss.size} per-sample losses are NaN or inf (e.g. "
                    f"{example!r}); fix the loss or lower the learning rate — nothing was "
                    "updated." + ("" if valid.any() else " (Every loss of the batch was bad.)")
                )
        g_dom = self._item_domains(g_idx)
        # The draw records of the global batch: the q each item was drawn with.
        draws = self.sampler.match_draws(g_idx, gathered[:, 2].astype(np.int64))

        # ---- weights over the global batch (no state changes above this line)
        weights = valid.astype(np.float64)
        dyn = self.dynamic
        strategy: Any = "uniform"
        if self._in_batch and dyn is not None:
            strategy = strategy_at(
                dyn.strategy, self.global_step, burn_in_steps=int(dyn.burn_in_steps)
            )
        if dyn is not None and strategy != "uniform":
            values = g_loss
            if dyn.cap_z is not None:
                values = cap_losses(torch.from_numpy(g_loss), dyn.cap_z).numpy()
            r = float(self._r_schedule(self.progress)) if self._r_schedule else 1.0
            weights = (
                loss_weights(
                    torch.from_numpy(values),
                    strategy,
                    r,
                    valid=torch.from_numpy(valid),
                )
                .numpy()
                .astype(np.float64)
            )
        if self._weighting:
            if draws is not None:
                q = draws.q
            else:
                q = self.sampler.probabilities(g_idx)
                self._warn_unmatched()
            weights = weights * self._ratios(g_idx, g_dom, q)
        weights = np.where(valid, weights, 0.0)
        total = float(weights.sum())
        num_valid = int(valid.sum())
        if not total > 0 or not np.isfinite(total):
            raise ValueError(
                "the batch's loss weights sum to 0: its items have zero target probability; "
                "draw batches from reweighter.sampler (nothing was updated)."
            )
        if self.self_normalize:
            weights *= num_valid / total

        # ---- state updates (the warning, which an error filter can raise, and _observe's checks
        # come before any change)
        if masked and not self._warned_nonfinite:
            warnings.warn(
                f"{masked} of {g_loss.size} per-sample losses are NaN or inf (e.g. "
                f"{example!r}); they are masked out of the loss, the weights, the loss table "
                "and the domain rules (counted in metrics as guard/masked_losses). Fix the "
                "loss, or pass nonfinite='raise' to stop instead. Warned once.",
                RuntimeWarning,
                stacklevel=2,
            )
        self._observe(
            g_idx[valid], g_dom[valid], g_loss[valid], None if g_ref is None else g_ref[valid]
        )
        if masked:
            self._masked_total += masked
            self._warned_nonfinite = True
        self._masked_last = masked
        if draws is not None:
            self.sampler.commit_draws(draws)
            self._last_draw_age = float(self.global_step - int(draws.clock.min()))
        self._record(g_dom)
        self._last_weights = weight_summary(weights[valid])
        self._last_weight_values = weights[valid]

        local_w = torch.from_numpy(weights[mine]).to(
            device=per_sample_loss.device, dtype=per_sample_loss.dtype
        )
        local_finite = torch.from_numpy(valid[mine]).to(per_sample_loss.device)
        safe = torch.where(local_finite, per_sample_loss, torch.zeros_like(per_sample_loss))
        scale = distributed.world_size() / num_valid
        return (local_w * safe).sum() * scale

    def _observe(
        self, idx: np.ndarray, dom: np.ndarray, loss: np.ndarray, reference: np.ndarray | None
    ) -> None:
        """Feeds the global batch's finite losses to the domain metrics, rules and loss table.

        Checks everything it feeds first: when it raises, nothing has changed."""
        k = self.sampler.num_domains
        if idx.size == 0:
            return
        progress = self.progress
        if reference is None and self._reference is not None:
            reference = self._reference[idx]
        rules = [
            rule
            for rule in {id(r): r for r in (self._target_rule, self._sample_rule) if r}.values()
            if rule.online
        ]
        for rule in rules:
            rule.check_observe(dom, loss, progress, reference=reference)
        if self._table is not None:
            self._table.check_update(idx, loss, step=self.global_step)

        counts = np.bincount(dom, minlength=k)
        sums = np.bincount(dom, weights=loss, minlength=k)
        seen = counts > 0
        means = np.divide(sums, counts, out=np.zeros(k), where=seen)
        first = seen & np.isnan(self._domain_loss)
        decay = self.realised_decay
        update = seen & ~first
        self._domain_loss[first] = means[first]
        self._domain_loss[update] = decay * self._domain_loss[update] + (1 - decay) * means[update]

        for rule in rules:
            rule.observe(dom, loss, progress, reference=reference)

        if self._table is not None and self.dynamic is not None:
            self._table.update(idx, loss, step=self.global_step)
            items = np.unique(idx)
            priority = self._table.priorities(
                items,
                self.global_step,
                method=self.dynamic.priority,
                pressure=self.dynamic.pressure,
                temperature=self.dynamic.temperature,
                floor=self.dynamic.floor,
            )
            delta = None
            if self._target_mass is not None and self._b_in_target:
                _, old = self.sampler.factors(items)
                a = self._target_static[items].astype(np.float64)  # type: ignore[index]
                delta = np.bincount(
                    self._item_domains(items), weights=a * (priority - old), minlength=k
                )
            self.sampler.update(items, priority)
            if delta is not None:
                self._target_mass += delta  # type: ignore[operator]

    def _warn_unmatched(self) -> None:
        if self._warned_unmatched or self.sampler.draws_yielded == 0:
            return
        self._warned_unmatched = True
        warnings.warn(
            "reduce(): the batch's indices are not the next draws of reweighter.sampler (a batch "
            "from another loader or sampler, or batches passed out of order), so its importance "
            "correction divides by the sampler's current q instead of the q each item was drawn "
            "with. Draw training batches from reweighter.sampler and pass each to reduce() in "
            "order. Warned once.",
            RuntimeWarning,
            stacklevel=3,
        )

    def _record(self, domains: np.ndarray) -> None:
        """Realised domain shares, over the global batch (the domain of each of its items)."""
        counts = np.bincount(domains, minlength=self.sampler.num_domains)
        shares = counts / max(1, domains.size)
        if not self._realised.any():
            self._realised = shares.astype(np.float64)
        else:
            self._realised = (
                self.realised_decay * self._realised + (1 - self.realised_decay) * shares
            )

    def step(self) -> None:
        """Advances one optimizer step (call after ``optimizer.step()``): moves schedules to the
        new training progress and, every ``refresh_every`` steps, refreshes every priority."""
        if self._needs_progress and self.total_steps is None:
            raise ValueError(
                "this Reweighter has schedules or online rules that need the run's length; pass "
                "Reweighter(total_steps=...) or call set_total_steps() (ReweightCallback reads it "
                "from the Trainer)."
            )
        dyn = self.dynamic
        step = self.global_step + 1
        # Checks first (a rule that fails at the new progress, a step the table cannot store):
        # when they raise, nothing has changed.
        probs = self._domain_probs(self._progress_at(step))
        if self._table is not None:
            self._table.check_update((), (), step=step)
        self.global_step = step
        self.sampler.clock = step
        if (
            self._table is not None
            and dyn is not None
            and (
                step % dyn.refresh_every == 0
                or (step < dyn.refresh_every and not step & (step - 1))
            )
        ):
            # Every refresh_every steps, and at steps 1, 2, 4, 8, ... before that, so the rank
            # snapshot reflects the losses seen early on.
            self._refresh_priorities()
        self._apply_domain_probs(probs)

    def _refresh_priorities(self) -> None:
        """Recomputes every item's priority from the loss table (O(N))."""
        assert self._table is not None and self.dynamic is not None
        self._table.refresh(self.global_step)
        self.sampler.set_dynamic(
            self._table.all_priorities(
                self.global_step,
                method=self.dynamic.priority,
                pressure=self.dynamic.pressure,
                temperature=self.dynamic.temperature,
                floor=self.dynamic.floor,
            )
        )
        if self._target_mass is not None:
            self._target_mass = self._compute_target_mass()

    # ------------------------------------------------------------------ diagnostics

    @property
    def last_loss_weights(self) -> np.ndarray:
        """The loss weights of the last global batch (finite entries only; a copy)."""
        return self._last_weight_values.copy()

    def metrics(self) -> dict[str, float]:
        """Flat diagnostics for a logger (reads only): progress; the sampler's ESS, entropy,
        max/min ratio and lag; target / sampled / realised share and loss per domain name; the
        domain rule's internal state; loss-weight ESS and max/min; loss-table coverage and
        staleness; the count of masked non-finite losses."""
        stats = self.sampler.stats()
        out: dict[str, float] = {
            "progress": float(self.progress),
            "sampler/ess_fraction": float(stats["ess_fraction"]),
            "sampler/entropy": float(stats["entropy"]),
            "sampler/entropy_fraction": float(stats["entropy_fraction"]),
            "sampler/max_min_ratio": float(stats["max_min_ratio"]),
            "sampler/max_prob": float(stats["max_prob"]),
            "lag/prefetched_draws": float(self.sampler.draws_in_flight),
            "lag/draw_age_steps": self._last_draw_age,
            "guard/masked_losses": float(self._masked_total),
            "guard/masked_last": float(self._masked_last),
        }
        sampled = stats["domain_probs"]
        for d, name in enumerate(self.domain_names):
            out[f"domain/{name}/target"] = float(self._target_probs[d])
            out[f"domain/{name}/sampled"] = float(sampled[d])
            out[f"domain/{name}/realised"] = float(self._realised[d])
            if np.isfinite(self._domain_loss[d]):
                out[f"domain/{name}/loss"] = float(self._domain_loss[d])
        for label, rule in (("mixing", self._target_rule), ("mixing_sample", self._sample_rule)):
            if rule is None or (label == "mixing_sample" and rule is self._target_rule):
                continue
            for key, value in rule.metrics(self.progress).items():
                array = np.asarray(value, dtype=np.float64)
                if array.ndim == 0:
                    out[f"{label}/{key}"] = float(array)
                elif array.size == len(self.domain_names):
                    for name, v in zip(self.domain_names, array.tolist(), strict=True):
                        out[f"{label}/{key}/{name}"] = float(v)
        if self.dynamic is not None and self._r_schedule is not None:
            out["dynamic/r"] = float(self._r_schedule(self.progress))
            out["dynamic/burn_in"] = float(self.global_step < self.dynamic.burn_in_steps)
        if self._table is not None:
            out["table/coverage"] = float(self._table.coverage())
            stale = self._table.staleness(self.global_step)
            out["table/staleness_mean"] = float(stale["mean"])
            out["table/staleness_max"] = float(stale["max"])
        for key, value in self._last_weights.items():
            out[f"loss_weight/{key}"] = float(value)
        return {k: v for k, v in out.items() if np.isfinite(v)}

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Small, versioned state: step, run length, domain rules, loss table and the sampler
        (its draws in flight are handed out again after a restore, so a resumed run sees the
        same items, with the same loss weights, as an uninterrupted one). Any rank's state is
        the whole state: every rank holds identical weights and every rank's position."""
        rules = {}
        for label, rule in (("target", self._target_rule), ("sample", self._sample_rule)):
            if rule is not None and rule.online:
                rules[label] = rule.state_dict()
        return {
            "version": _STATE_VERSION,
            "fingerprint": self._fingerprint,
            "global_step": self.global_step,
            "total_steps": self.total_steps,
            "realised": torch.from_numpy(self._realised.copy()),
            "domain_loss": torch.from_numpy(self._domain_loss.copy()),
            "masked_total": self._masked_total,
            "target_mass": None
            if self._target_mass is None
            else torch.from_numpy(self._target_mass.copy()),
            "rules": rules,
            "table": None if self._table is None else self._table.state_dict(),
            "sampler": self.sampler.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict`: every field is validated before any is applied; a state
        from another configuration, or a corrupt or truncated one, raises ValueError naming the
        field and changes nothing.

        Restore before the DataLoader's iterator is created (or at least before it draws): the
        draws in flight at the checkpoint are handed out first. A run length saved in the state
        is adopted when none is set; a different one set already is kept, with a warning.
        """
        if not isinstance(state, Mapping) or state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"not a Reweighter state of version {_STATE_VERSION} "
                f"(got version {state.get('version') if isinstance(state, Mapping) else None!r})."
            )
        missing = [key for key in _STATE_KEYS if key not in state]
        if missing:
            raise ValueError(
                f"Reweighter state: missing field(s) {missing}; the checkpoint is truncated or "
                "was written by another version."
            )
        saved_fingerprint = state["fingerprint"]
        if not isinstance(saved_fingerprint, Mapping) or saved_fingerprint != self._fingerprint:
            diff = [
                key
                for key in self._fingerprint
                if not isinstance(saved_fingerprint, Mapping)
                or saved_fingerprint.get(key) != self._fingerprint[key]
            ]
            raise ValueError(
                f"this checkpoint's reweighting state comes from another configuration (differs "
                f"in: {', '.join(diff)}); resume with the same data and reweighting settings, "
                "or start without restoring the reweighter."
            )
        own = self._parse_own_state(state)
        # Parts validate themselves; if one fails after another was applied, roll back.
        snapshot = self.state_dict()
        try:
            self._load_parts(state, own)
        except Exception:
            self._load_parts(snapshot, self._parse_own_state(snapshot))
            raise
        saved_total = own["total_steps"]
        if saved_total is not None and self.total_steps not in (None, saved_total):
            warnings.warn(
                f"the checkpoint's run length is {saved_total} optimizer steps but this "
                f"Reweighter was built with total_steps={self.total_steps}; keeping "
                f"{self.total_steps} (schedules read progress as step / {self.total_steps}).",
                RuntimeWarning,
                stacklevel=2,
            )

    def _parse_own_state(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """The engine's own fields of a state, validated (the parts validate theirs)."""
        k = self.sampler.num_domains

        def integer(key: str, low: int, optional: bool = False) -> int | None:
            value = state[key]
            if value is None and optional:
                return None
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(
                    f"Reweighter state: {key!r} must be an integer >= {low}"
                    f"{' or None' if optional else ''}, got {value!r}; the state is corrupt."
                )
            return int(value)

        def vector(key: str, allow_nan: bool, optional: bool = False) -> np.ndarray | None:
            value = state[key]
            if value is None and optional:
                return None
            if not isinstance(value, (torch.Tensor, np.ndarray)):
                raise ValueError(
                    f"Reweighter state: {key!r} must be a tensor, got {type(value).__name__}."
                )
            array = np.asarray(torch.as_tensor(value).cpu().numpy(), dtype=np.float64)
            finite = np.isfinite(array) | (np.isnan(array) if allow_nan else False)
            if array.shape != (k,) or not finite.all() or np.any(array < 0):
                raise ValueError(
                    f"Reweighter state: {key!r} must hold {k} finite values >= 0 (one per domain)"
                    f", got shape {array.shape} {array.tolist()!r:.80}; the state is corrupt."
                )
            return array.copy()

        if not isinstance(state["rules"], Mapping):
            raise ValueError("Reweighter state: 'rules' must be a mapping.")
        for label, rule in (("target", self._target_rule), ("sample", self._sample_rule)):
            if rule is not None and rule.online and label not in state["rules"]:
                raise ValueError(f"Reweighter state: 'rules' has no {label!r} rule state.")
        if (state["table"] is None) != (self._table is None):
            raise ValueError(
                "Reweighter state: 'table' is "
                f"{'missing' if state['table'] is None else 'present'} but this Reweighter "
                f"{'has' if self._table is not None else 'has no'} loss table."
            )
        target_mass = vector("target_mass", allow_nan=False, optional=True)
        if (target_mass is None) != (self._target_mass is None):
            raise ValueError(
                "Reweighter state: 'target_mass' does not fit this configuration; the state is "
                "corrupt."
            )
        realised = vector("realised", allow_nan=False)
        assert realised is not None
        if np.any(realised > 1 + 1e-9):
            raise ValueError(
                f"Reweighter state: 'realised' shares {realised.tolist()} must lie in [0, 1]."
            )
        global_step = integer("global_step", 0)
        assert global_step is not None
        if global_step > _MAX_STEP:
            raise ValueError(
                f"Reweighter state: 'global_step' {global_step} is beyond {_MAX_STEP} (steps are "
                "stored as int32); the state is corrupt."
            )
        clock = _draw_steps(state["sampler"])
        if clock is not None and clock.size and int(clock.max()) > global_step:
            raise ValueError(
                f"Reweighter state: draws in flight were made at step {int(clock.max())}, after "
                f"'global_step' {global_step}; the state is corrupt."
            )
        table = state["table"]
        table_step = table.get("step") if isinstance(table, Mapping) else None
        if isinstance(table_step, (int, np.integer)) and table_step > global_step:
            raise ValueError(
                f"Reweighter state: the loss table was updated at step {int(table_step)}, after "
                f"'global_step' {global_step}; the state is corrupt."
            )
        return {
            "global_step": global_step,
            "total_steps": integer("total_steps", 1, optional=True),
            "masked_total": integer("masked_total", 0),
            "realised": realised,
            "domain_loss": vector("domain_loss", allow_nan=True),
            "target_mass": target_mass,
        }

    def _load_parts(self, state: Mapping[str, Any], own: Mapping[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])
        for label, rule in (("target", self._target_rule), ("sample", self._sample_rule)):
            if rule is not None and rule.online:
                rule.load_state_dict(state["rules"][label])
        if self._table is not None:
            self._table.load_state_dict(state["table"])
        self.global_step = own["global_step"]
        self.sampler.clock = self.global_step
        if self.total_steps is None:
            self.total_steps = own["total_steps"]
        self._realised = own["realised"].copy()
        self._domain_loss = own["domain_loss"].copy()
        self._masked_total = own["masked_total"]
        if own["target_mass"] is not None:
            self._target_mass = own["target_mass"].copy()
        self._sampled_request = None
        self._apply_domain_probs()
