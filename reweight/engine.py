"""Reweighter: owns the weight sources and the sampler; turns per-sample losses into one loss.

No Lightning import: a plain PyTorch loop uses it directly (see README).
"""

from __future__ import annotations

import json
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from reweight import distributed
from reweight.data import require_index
from reweight.metrics import weight_summary
from reweight.mixing import DomainRule, FixedMixture, make_rule, make_schedule
from reweight.sampler import ReweightSampler
from reweight.table import LossTable
from reweight.weights import cap_losses, get_strategy, loss_weights, static_factor, strategy_at

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


def _check_mode(source: str, mode: str, valid: Sequence[str] = _MODES) -> None:
    if mode not in valid:
        raise ValueError(f"{source} mode {mode!r} is unknown; valid modes: {', '.join(valid)}.")


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
        _check_mode("static", self.mode)
        return static_factor(self.load(), self.beta, self.clip, self.floor)


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

    def resolve(self, names: Sequence[str]) -> np.ndarray:
        """π as an array ordered like ``names`` (not normalised)."""
        _check_mode("domain", self.mode)
        if isinstance(self.probs, Mapping):
            unknown = sorted(set(self.probs) - set(names))
            if unknown:
                raise ValueError(
                    f"domain probabilities name unknown domain(s) {unknown}; known domains: "
                    f"{list(names)}."
                )
            return np.array([float(self.probs.get(n, 0.0)) for n in names])
        array = np.asarray(self.probs, dtype=np.float64).reshape(-1)
        if array.size != len(names):
            raise ValueError(
                f"{array.size} domain probabilities for {len(names)} domains {list(names)}; "
                "give one per domain, or a mapping from name to probability."
            )
        return array


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


@dataclass(frozen=True)
class DynamicWeights:
    """Per-sample weights from current losses (Sow et al. 2025) and loss-driven sampling
    priorities from a per-item loss table (Loshchilov & Hutter 2015).

    Args:
        strategy: in-batch strategy of :func:`reweight.weights.loss_weights` ("linupper",
            "quadratic", "extremes", "upper", "hard", "uniform", or a registered name).
        r: the strategy's temperature: a number, a schedule (a callable of training progress),
            or a spec for :func:`reweight.mixing.make_schedule`. Sow et al. use r = 0.4 late.
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
        """Checks every field; raises ValueError naming the bad value and the fix."""
        _check_mode("dynamic", self.mode, _DYNAMIC_MODES)
        get_strategy(self.strategy)
        if self.priority not in ("rank", "softmax"):
            raise ValueError(
                f"dynamic priority {self.priority!r} is unknown; valid: rank, softmax."
            )
        if int(self.burn_in_steps) != self.burn_in_steps or self.burn_in_steps < 0:
            raise ValueError(f"burn_in_steps must be an integer >= 0, got {self.burn_in_steps!r}.")
        if int(self.refresh_every) != self.refresh_every or self.refresh_every < 1:
            raise ValueError(f"refresh_every must be an integer >= 1, got {self.refresh_every!r}.")
        if self.cap_z is not None and not self.cap_z > 0:
            raise ValueError(f"cap_z must be > 0 (or None to disable), got {self.cap_z!r}.")


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


def _valid_total_steps(value: Any) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not np.isfinite(value)
        or int(value) != value
        or value < 1
    ):
        raise ValueError(f"total_steps must be an integer >= 1, got {value!r}.")
    return int(value)


def _as_schedule(value: Any) -> Callable[[float], float]:
    if callable(value):
        return value
    return make_schedule(value)


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
        names = [str(i) for i in range(k)] if domain_names is None else list(domain_names)
        if len(names) != k:
            raise ValueError(f"{len(names)} domain names for {k} domains; give one per domain.")
        if not 0 <= realised_decay < 1:
            raise ValueError(f"realised_decay must lie in [0, 1), got {realised_decay!r}.")
        if nonfinite not in _NONFINITE:
            raise ValueError(f"nonfinite={nonfinite!r} is unknown; valid: {', '.join(_NONFINITE)}.")
        if dynamic is not None:
            dynamic.validate()
        self.sampler = sampler
        self.domain_names = names
        self.static = static
        self.domain_weights = domain_weights
        self.dynamic = dynamic
        self.nonfinite = nonfinite
        self.self_normalize = bool(self_normalize)
        self.realised_decay = realised_decay
        self.total_steps = None if total_steps is None else _valid_total_steps(total_steps)
        self.global_step = 0
        n = sampler.num_items
        sizes = sampler.domain_sizes
        self._natural = sampler.natural_probs()

        # ---- domain rules: what p targets and what q samples
        mixing = domain_weights
        mode: str = "sample"
        self._target_rule: DomainRule | None = None
        self._sample_rule: DomainRule | None = None
        self._reference: np.ndarray | None = None
        if isinstance(mixing, DomainWeights):
            mode = mixing.mode
            self._target_rule = FixedMixture(mixing.resolve(names))
        elif isinstance(mixing, DomainMixing):
            mode = mixing.mode
            _check_mode("domain mixing", mode, _MIXING_MODES)
            self._target_rule = self._resolve_rule(mixing.rule, sizes, names)
            if mode == "hybrid":
                if mixing.sample_rule is None:
                    raise ValueError(
                        "hybrid domain mixing needs sample_rule (what to draw from, e.g. a "
                        "temperature τ such as 3.0) besides rule (what to correct the loss to)."
                    )
                self._sample_rule = self._resolve_rule(mixing.sample_rule, sizes, names)
            elif mixing.sample_rule is not None:
                raise ValueError(
                    f"sample_rule is only used by mode='hybrid' (mode is {mode!r}); drop it or "
                    "switch the mode."
                )
            if mixing.reference is not None:
                self._reference = StaticWeights(mixing.reference).load()
                if self._reference.size != n or not np.isfinite(self._reference).all():
                    raise ValueError(
                        f"reference losses must be {n} finite values, one per item "
                        f"(got {self._reference.size} values)."
                    )
        elif mixing is not None:
            raise TypeError(
                f"domain_weights must be DomainWeights or DomainMixing, got {type(mixing)}."
            )
        if mode == "sample":
            self._sample_rule = self._target_rule
        self._mixing_mode = mode
        self._needs_progress = any(
            rule is not None and not isinstance(rule, FixedMixture)
            for rule in (self._target_rule, self._sample_rule)
        ) or (dynamic is not None and not isinstance(dynamic.r, (int, float)))
        self._r_schedule = None if dynamic is None else _as_schedule(dynamic.r)
        self._target_probs = self._natural.copy()
        self._sampled_request: np.ndarray | None = None
        self._apply_domain_probs()

        # ---- item factors: a (static) and b (dynamic priorities)
        self._target_static: np.ndarray | None = None  # a_t when it differs from the sampler's
        target_factor = np.ones(n)
        if static is not None:
            target_factor = static.factor()
            if target_factor.size != n:
                raise ValueError(
                    f"static log weights have {target_factor.size} entries for {n} items; "
                    "give one per item, in dataset order."
                )
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
    def _resolve_rule(spec: Any, sizes: np.ndarray, names: list[str]) -> DomainRule:
        if isinstance(spec, DomainRule):
            if spec.num_domains != len(names):
                raise ValueError(
                    f"the domain rule has {spec.num_domains} domains but the data has "
                    f"{len(names)} ({names}); build the rule for these domains."
                )
            return spec
        if isinstance(spec, (int, float)) and not isinstance(spec, bool):
            spec = {"kind": "temperature", "tau": float(spec)}
        return make_rule(spec, sizes, names)

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
        total = _valid_total_steps(total_steps)
        if self.total_steps is not None and total != self.total_steps:
            warnings.warn(
                f"the run's length changes from {self.total_steps} to {total} optimizer steps at "
                f"step {self.global_step}; schedules now read progress as step / {total} "
                "(a resumed run with another max_steps: the schedule is not the one an "
                "uninterrupted run of either length would follow).",
                RuntimeWarning,
                stacklevel=2,
            )
        self.total_steps = total
        self._apply_domain_probs()

    @property
    def needs_total_steps(self) -> bool:
        """Whether a schedule or an online rule reads training progress (then ``total_steps``
        must be known before the first :meth:`step`)."""
        return self._needs_progress

    @property
    def progress(self) -> float:
        """Training progress in [0, 1]: ``global_step / total_steps`` (0 until it is known)."""
        if self.total_steps is None:
            return 0.0
        return min(1.0, self.global_step / self.total_steps)

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

    def _apply_domain_probs(self) -> None:
        """Sets π_p and π_q for the current progress (π_q goes to the sampler when it changes)."""
        progress = self.progress
        if self._target_rule is None:
            return
        target = np.asarray(self._target_rule.probs(progress), dtype=np.float64)
        if self._mixing_mode == "weight":
            sample = self._natural
        elif self._sample_rule is self._target_rule:
            sample = target
        else:
            assert self._sample_rule is not None
            sample = np.asarray(self._sample_rule.probs(progress), dtype=np.float64)
        if self._sampled_request is None or not np.array_equal(sample, self._sampled_request):
            self.sampler.set_domain_probs(sample)
            self._sampled_request = sample
        self._target_probs = target / target.sum()

    # ------------------------------------------------------------------ per step

    def loss_weights(self, index: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The unnormalised importance ratio p(i)/q(i) of each item (float64 tensor; 1 if unused).

        p applies every source; q is what the sampler draws from now (:meth:`reduce` divides
        by the q each item was drawn with instead).
        """
        idx = np.asarray(index.detach().cpu().numpy() if isinstance(index, torch.Tensor) else index)
        idx = idx.astype(np.int64).reshape(-1)
        if not self._weighting:
            return torch.ones(idx.size, dtype=torch.float64)
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
        if local_idx.numel() and (
            int(local_idx.min()) < 0 or int(local_idx.max()) >= self.sampler.num_items
        ):
            bad = local_idx[(local_idx < 0) | (local_idx >= self.sampler.num_items)][0]
            raise ValueError(
                f"batch index {int(bad)} is outside 0..{self.sampler.num_items - 1}; the batch "
                "must come from the dataset the Reweighter was built for."
            )
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
            strategy = strategy_at(dyn.strategy, self.global_step, burn_in_steps=dyn.burn_in_steps)
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

        # ---- state updates
        if masked:
            self._masked_total += masked
            if not self._warned_nonfinite:
                self._warned_nonfinite = True
                warnings.warn(
                    f"{masked} of {g_loss.size} per-sample losses are NaN or inf (e.g. "
                    f"{example!r}); they are masked out of the loss, the weights, the loss table "
                    "and the domain rules (counted in metrics as guard/masked_losses). Fix the "
                    "loss, or pass nonfinite='raise' to stop instead. Warned once.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        self._masked_last = masked
        if draws is not None:
            self.sampler.commit_draws(draws)
            self._last_draw_age = float(self.global_step - int(draws.clock.min()))
        self._record(g_idx)
        self._observe(
            g_idx[valid], g_dom[valid], g_loss[valid], None if g_ref is None else g_ref[valid]
        )
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
        """Feeds the global batch's finite losses to the domain metrics, rules and loss table."""
        k = self.sampler.num_domains
        if idx.size == 0:
            return
        counts = np.bincount(dom, minlength=k)
        sums = np.bincount(dom, weights=loss, minlength=k)
        seen = counts > 0
        means = np.divide(sums, counts, out=np.zeros(k), where=seen)
        first = seen & np.isnan(self._domain_loss)
        decay = self.realised_decay
        update = seen & ~first
        self._domain_loss[first] = means[first]
        self._domain_loss[update] = decay * self._domain_loss[update] + (1 - decay) * means[update]

        progress = self.progress
        if reference is None and self._reference is not None:
            reference = self._reference[idx]
        for rule in {id(r): r for r in (self._target_rule, self._sample_rule) if r}.values():
            if rule.online:
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
            if self._target_mass is not None and self._b_in_target:
                _, old = self.sampler.factors(items)
                a = self._target_static[items].astype(np.float64)  # type: ignore[index]
                self._target_mass += np.bincount(
                    self._item_domains(items), weights=a * (priority - old), minlength=k
                )
            self.sampler.update(items, priority)

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

    def _record(self, items: np.ndarray) -> None:
        """Realised domain shares, over the global batch."""
        counts = np.bincount(self._item_domains(items), minlength=self.sampler.num_domains)
        shares = counts / max(1, items.size)
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
        self.global_step += 1
        self.sampler.clock = self.global_step
        dyn = self.dynamic
        step = self.global_step
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
        self._apply_domain_probs()

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
