"""Domain rules: the target domain probabilities π as a function of progress (and, for online
rules, of the losses observed so far).

A rule is small explicit state: ``probs(progress)`` reads it (never mutates), ``observe(...)``
updates it from the global batch, ``state_dict``/``load_state_dict`` save and restore it.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from reweight._checks import (
    as_float_array,
    check_int,
    check_progress,
    check_real,
    check_state,
    check_weights,
    progress_grid,
    state_progress,
)
from reweight.mixing.schedules import Schedule, make_schedule
from reweight.mixing.temperature import temperature_probs

__all__ = [
    "STATE_VERSION",
    "DomainRule",
    "EndUpsample",
    "FixedMixture",
    "TemperatureRule",
    "check_rule",
]

STATE_VERSION = 1
"""Version of every rule's ``state_dict`` layout."""

Metrics = dict[str, float | np.ndarray]


class DomainRule(abc.ABC):
    """Base of all domain rules: target domain probabilities π as a function of progress.

    Attributes:
        num_domains: number of domains K.
        online: whether :meth:`observe` changes π (online rules learn from losses).
        uses_reference: whether :meth:`observe` reads per-sample reference losses.
        kind: the rule's registry name, recorded in its state.

    Subclasses implement :meth:`probs` and, if they hold state, ``_state``/``_parse_state``/
    ``_apply_state``. Every rule records the progress of the latest :meth:`observe` so
    :meth:`metrics` can report progress-dependent values (e.g. τ) without an argument.

    Example:
        >>> from reweight.mixing import DoReMi
        >>> rule = DoReMi(2, reference=[1.0, 1.0])
        >>> rule.observe(domains=[0, 1, 1], losses=[2.0, 1.0, 0.5], progress=0.1)
        >>> saved = rule.state_dict()
        >>> resumed = DoReMi(2, reference=[1.0, 1.0])
        >>> resumed.load_state_dict(saved)
        >>> bool((resumed.probs(0.1) == rule.probs(0.1)).all()), rule.online
        (True, True)
    """

    kind: ClassVar[str] = "rule"
    online: bool = False
    uses_reference: bool = False

    def __init__(self, num_domains: int) -> None:
        self.num_domains = check_int("num_domains", num_domains, minimum=1)
        self._progress = 0.0

    @abc.abstractmethod
    def probs(self, progress: float) -> np.ndarray:
        """Target domain probabilities π at ``progress`` in [0, 1].

        Returns a new float64 array (finite, >= 0, sums to 1); calling it changes nothing.
        """

    def observe(
        self,
        domains: Any,
        losses: Any,
        progress: float,
        reference: Any = None,
    ) -> None:
        """Learns from the global batch (already gathered across ranks).

        Args:
            domains: per-sample domain ids in 0..K-1.
            losses: per-sample training losses; non-finite ones are ignored.
            progress: training progress in [0, 1] when the batch was drawn.
            reference: optional per-sample reference losses (used by :class:`DoReMi`).

        Non-online rules only record ``progress`` (for :meth:`metrics`); their π never changes.
        """
        self._progress = check_progress(progress)

    def check_observe(
        self,
        domains: Any,
        losses: Any,
        progress: float,
        reference: Any = None,
    ) -> None:
        """Raises exactly what :meth:`observe` would raise for these arguments, changing nothing.

        A caller that updates several pieces of state from one batch checks every rule first,
        so that a bad batch leaves all of them unchanged.
        """
        check_progress(progress)

    def breakpoints(self) -> tuple[float, ...]:
        """Progress points where π changes its shape (schedule boundaries, switches), checked
        besides the regular grid by :func:`check_rule`."""
        return ()

    def metrics(self, progress: float | None = None) -> Metrics:
        """Internal state for logging: floats, or arrays with one entry per domain.

        Args:
            progress: where to evaluate progress-dependent values (default: the progress of
                the latest :meth:`observe`, 0 before any).
        """
        return {}

    def state_dict(self) -> dict[str, Any]:
        """A small, versioned copy of the state (tensors, safe for ``weights_only`` loading)."""
        return {
            "rule": self.kind,
            "version": STATE_VERSION,
            "num_domains": self.num_domains,
            "progress": self._progress,
            **self._state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict` output; validates all of it before changing anything.

        Checked: the header (a mapping; ``rule`` is this rule's kind, ``version`` is
        :data:`STATE_VERSION`, ``num_domains`` is this rule's K), every key present,
        ``progress`` a real number in [0, 1], and each rule's own fields (see its
        ``_parse_state``). On any error nothing changes.

        Raises:
            TypeError: the state, or one of its fields, is of the wrong kind.
            ValueError: another rule's state, another version, another number of domains, a
                missing key, or a malformed value; the message names the field.
        """
        self._restore_state(self._validate_state(state))

    # Hooks for stateful rules -------------------------------------------------------------
    #
    # load_state_dict = _restore_state(_validate_state(state)): the first validates the whole
    # state (header, progress, then the rule's _parse_state) without mutating anything, the
    # second applies it and cannot fail. Composite rules (EndUpsample) validate and restore
    # their parts through the same two calls, so a nested state is all or nothing too.

    def _validate_state(self, state: Any) -> tuple[float, Any]:
        """Validates a whole state (no mutation); returns what :meth:`_restore_state` applies."""
        keys = ("progress", *self._state_keys())
        checked = check_state(state, self.kind, STATE_VERSION, self.num_domains, keys)
        progress = state_progress(checked, self._state_what)
        return progress, self._parse_state(checked)

    def _restore_state(self, validated: tuple[float, Any]) -> None:
        """Applies what :meth:`_validate_state` returned (cannot fail)."""
        progress, parsed = validated
        self._apply_state(parsed)
        self._progress = progress

    @property
    def _state_what(self) -> str:
        """How error messages name this rule's state, e.g. ``"doremi state"``."""
        return f"{self.kind} state"

    def _state(self) -> dict[str, Any]:
        return {}

    def _state_keys(self) -> tuple[str, ...]:
        return ()

    def _parse_state(self, state: Mapping[str, Any]) -> Any:
        """Validates and converts the rule-specific part of ``state`` (no mutation).

        ``state`` has passed :func:`check_state`: every key of :meth:`_state_keys` is present.
        Use the ``state_*`` helpers of ``reweight._checks`` so every error names the
        field.
        """
        return None

    def _apply_state(self, parsed: Any) -> None:
        """Applies what :meth:`_parse_state` returned (cannot fail)."""
        return None

    def _metrics_progress(self, progress: float | None) -> float:
        return self._progress if progress is None else check_progress(progress)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_domains={self.num_domains})"


class FixedMixture(DomainRule):
    """A fixed mixture: the same π at every progress.

    Args:
        probs: non-negative weights, one per domain (normalised to sum to 1).

    Example:
        >>> rule = FixedMixture([2.0, 1.0, 1.0])
        >>> rule.probs(0.3).tolist()
        [0.5, 0.25, 0.25]
    """

    kind = "fixed"

    def __init__(self, probs: Any) -> None:
        weights = check_weights("probs", probs)
        super().__init__(weights.size)
        self._probs = weights / weights.sum()

    def probs(self, progress: float) -> np.ndarray:
        check_progress(progress)
        return self._probs.copy()

    def __repr__(self) -> str:
        return f"FixedMixture({self._probs.tolist()})"


class TemperatureRule(DomainRule):
    """Temperature sampling p_d ∝ n_d^(1/τ(progress)) with a fixed τ or a schedule.

    Args:
        sizes: domain sizes n_d (see :func:`temperature_probs`).
        tau: a temperature > 0 (``inf`` = uniform), a :class:`Schedule`, or a schedule spec
            for :func:`make_schedule`; e.g. :func:`cooldown` for Li et al.'s Cooldown.
        min_prob: floor for every non-empty domain (see :func:`temperature_probs`).

    Example:
        >>> from reweight.mixing import Step
        >>> rule = TemperatureRule([900, 90, 10], Step([float("inf"), 1.0], [0.5]))
        >>> rule.probs(0.0).round(3).tolist(), rule.probs(1.0).round(3).tolist()
        ([0.333, 0.333, 0.333], [0.9, 0.09, 0.01])
        >>> rule.metrics(0.25)
        {'tau': inf}
    """

    kind = "temperature"

    def __init__(
        self, sizes: Any, tau: float | Schedule | Mapping[str, Any], min_prob: float = 0.0
    ) -> None:
        self.sizes = as_float_array("sizes", sizes)
        super().__init__(max(self.sizes.size, 1))
        self.schedule = make_schedule(tau)
        self.min_prob = check_real("min_prob", min_prob)
        # Fail now, not mid-run: every τ on a fine grid must be valid (and the sizes too).
        for progress in progress_grid(self.schedule.breakpoints()).tolist():
            temperature_probs(self.sizes, self.schedule(progress), self.min_prob)

    def tau(self, progress: float) -> float:
        """τ at ``progress``.

        Example:
            >>> TemperatureRule([3, 1], 2.0).tau(0.5)
            2.0
        """
        return self.schedule(progress)

    def probs(self, progress: float) -> np.ndarray:
        return temperature_probs(self.sizes, self.schedule(progress), self.min_prob)

    def breakpoints(self) -> tuple[float, ...]:
        return self.schedule.breakpoints()

    def metrics(self, progress: float | None = None) -> Metrics:
        return {"tau": self.schedule(self._metrics_progress(progress))}

    def __repr__(self) -> str:
        return f"TemperatureRule(sizes={self.sizes.tolist()}, tau={self.schedule!r})"


class EndUpsample(DomainRule):
    """End-of-training domain upsampling (Blakeney et al. 2024, "Does your data spark joy?").

    Before progress ``1 − fraction`` the ``base`` rule's π is used; over the last ``fraction``
    of training either chosen domains are upsampled (``factors``: π_d ← π_d · factor_d, then
    renormalised) or the mixture switches to ``mixture``. The switch happens at progress
    ``>= 1 − fraction``. The base rule keeps observing throughout, so an online base keeps
    learning.

    Blakeney et al. ablated the upsampling duration from 5% to 30% of training and found 10–20%
    best (gains of up to 6.9 pp MMLU, 8.3 pp GSM8K, 6.2 pp HumanEval for a 7B model trained on 1T
    tokens); the default ``fraction = 0.15`` is the middle of that range.

    Args:
        base: the rule in force before the switch.
        fraction: the final part of training that is upsampled, in (0, 1].
        factors: domain index → factor >= 0 (others 1), or one factor per domain.
        mixture: the mixture to switch to (weights, one per domain); give exactly one of
            ``factors`` and ``mixture``.

    Example:
        >>> rule = EndUpsample(FixedMixture([0.8, 0.1, 0.1]), fraction=0.2, factors={2: 3.0})
        >>> rule.probs(0.5).round(3).tolist(), rule.probs(0.8).round(3).tolist()
        ([0.8, 0.1, 0.1], [0.667, 0.083, 0.25])
        >>> rule.metrics(0.9)
        {'upsampling': 1.0}
    """

    kind = "end_upsample"

    def __init__(
        self,
        base: DomainRule,
        fraction: float = 0.15,
        factors: Mapping[int, float] | Any = None,
        mixture: Any = None,
    ) -> None:
        if not isinstance(base, DomainRule):
            raise TypeError(f"base must be a DomainRule, got {type(base).__name__}.")
        super().__init__(base.num_domains)
        self.base = base
        self.online = base.online
        self.uses_reference = base.uses_reference
        self.fraction = check_real("fraction", fraction)
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(
                f"fraction must lie in (0, 1] (the last part of training to upsample), got "
                f"{self.fraction!r}; Blakeney et al. found 0.1-0.2 best."
            )
        self.switch = 1.0 - self.fraction
        k = self.num_domains
        if (factors is None) == (mixture is None):
            raise ValueError(
                "give exactly one of factors (domain index → upsampling factor) and mixture "
                "(the mixture to switch to)."
            )
        self.factors: np.ndarray | None = None
        self.mixture: np.ndarray | None = None
        if factors is not None:
            self.factors = _factor_vector(factors, k)
        else:
            weights = check_weights("mixture", mixture, k)
            self.mixture = weights / weights.sum()
        # A factor that zeroes every domain the base can give mass to fails at the switch; catch
        # the static case (factors all zero) now.
        if self.factors is not None and not (self.factors > 0).any():
            raise ValueError("factors are all zero; at least one domain must keep its mass.")

    def upsampling(self, progress: float) -> bool:
        """Whether the end-of-training phase is active at ``progress``.

        Example:
            >>> rule = EndUpsample(FixedMixture([1, 1]), fraction=0.25, factors={0: 2.0})
            >>> rule.upsampling(0.74), rule.upsampling(0.75)
            (False, True)
        """
        return check_progress(progress) >= self.switch

    def probs(self, progress: float) -> np.ndarray:
        base = self.base.probs(progress)
        if not self.upsampling(progress):
            return base
        if self.factors is None:
            return np.array(self.mixture, dtype=np.float64)
        scaled = base * self.factors
        total = float(scaled.sum())
        if not total > 0:
            raise ValueError(
                f"upsampling factors {self.factors.tolist()} leave no mass on the base "
                f"probabilities {base.tolist()}; give a positive factor to a domain the base "
                "samples."
            )
        return scaled / total

    def observe(self, domains: Any, losses: Any, progress: float, reference: Any = None) -> None:
        self.base.observe(domains, losses, progress, reference)
        super().observe(domains, losses, progress, reference)

    def check_observe(
        self, domains: Any, losses: Any, progress: float, reference: Any = None
    ) -> None:
        self.base.check_observe(domains, losses, progress, reference)
        super().check_observe(domains, losses, progress, reference)

    def breakpoints(self) -> tuple[float, ...]:
        return (self.switch, *self.base.breakpoints())

    def metrics(self, progress: float | None = None) -> Metrics:
        at = self._metrics_progress(progress)
        return {"upsampling": float(self.upsampling(at)), **self.base.metrics(at)}

    def _state(self) -> dict[str, Any]:
        return {"base": self.base.state_dict()}

    def _state_keys(self) -> tuple[str, ...]:
        return ("base",)

    def _parse_state(self, state: Mapping[str, Any]) -> Any:
        # The base's whole state is validated here, before anything (ours or the base's)
        # changes; errors name the nested field, e.g. "end_upsample state: 'base': ...".
        try:
            return self.base._validate_state(state["base"])
        except (TypeError, ValueError) as error:
            raise type(error)(f"{self._state_what}: 'base': {error}") from error

    def _apply_state(self, parsed: Any) -> None:
        self.base._restore_state(parsed)

    def __repr__(self) -> str:
        change = (
            f"factors={self.factors.tolist()}"
            if self.factors is not None
            else f"mixture={None if self.mixture is None else self.mixture.tolist()}"
        )
        return f"EndUpsample({self.base!r}, fraction={self.fraction}, {change})"


def _factor_vector(factors: Any, num_domains: int) -> np.ndarray:
    out = np.ones(num_domains)
    if isinstance(factors, Mapping):
        for key, value in factors.items():
            if isinstance(key, bool) or not isinstance(key, int | np.integer):
                raise TypeError(
                    f"factors keys must be domain indices (ints), got {key!r}; make_rule maps "
                    "domain names to indices."
                )
            if not 0 <= int(key) < num_domains:
                raise ValueError(f"factors name domain {int(key)}, outside 0..{num_domains - 1}.")
            out[int(key)] = check_real(f"factor of domain {int(key)}", value)
    else:
        out = as_float_array("factors", factors)
        if out.size != num_domains:
            raise ValueError(
                f"factors has {out.size} entries for {num_domains} domains; give one per "
                "domain or a mapping from domain index to factor."
            )
        if not np.isfinite(out).all():
            raise ValueError(f"factors must be finite, got {out.tolist()!r}.")
    if (out < 0).any() or not all(math.isfinite(v) for v in out.tolist()):
        raise ValueError(f"factors must be finite and >= 0, got {out.tolist()!r}.")
    return out


def check_rule(
    name: str, rule: DomainRule, num_domains: int, breakpoints: Any = ()
) -> list[tuple[float, np.ndarray]]:
    """Checks a rule's π on the progress grid: finite, >= 0, not all zero, one per domain.

    π is read (never changed) at 0, 1/64, ..., 1, at the rule's :meth:`DomainRule.breakpoints`
    and at the extra ``breakpoints``; for online rules this is π in their current state.

    Args:
        name: the field the rule configures (used in every error).
        rule: the rule.
        num_domains: K, the number of domains π must cover.
        breakpoints: more progress points to check (e.g. another rule's, to compare the two).

    Returns:
        ``(progress, π)`` for every grid point, for further checks by the caller.

    Raises:
        ValueError: a bad π, or a rule that raises at some progress (naming ``name`` and the
            progress).

    Example:
        >>> len(check_rule("rule", FixedMixture([1.0, 1.0]), 2))
        65
    """
    if not isinstance(rule, DomainRule):
        raise TypeError(f"{name} must be a DomainRule, got {type(rule).__name__}.")
    if rule.num_domains != num_domains:
        raise ValueError(
            f"{name} has {rule.num_domains} domains but the data has {num_domains}; build the "
            "rule for these domains."
        )
    out: list[tuple[float, np.ndarray]] = []
    for progress in progress_grid((*rule.breakpoints(), *breakpoints)).tolist():
        where = f"{name} probabilities at progress {progress:g}"
        try:
            probs = rule.probs(progress)
        except Exception as error:
            raise ValueError(
                f"{where} could not be computed ({type(error).__name__}: {error}); the rule must "
                "give valid probabilities at every progress in [0, 1]."
            ) from error
        out.append((progress, check_weights(where, probs, num_domains)))
    return out
