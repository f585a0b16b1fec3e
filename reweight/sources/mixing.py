"""Domain mixing: fixed mixtures, temperature schedules (Cooldown), end-of-training upsampling,
and online domain rules (DoReMi, ODM)."""

from __future__ import annotations

import json
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from reweight._checks import check_range, check_weights, named
from reweight.mixing import DomainRule, FixedMixture, check_rule, make_rule
from reweight.sources.base import GlobalBatch, Layout, Source, check_path_or_array, load_per_item

__all__ = ["DomainMixing"]

_REFERENCE_KEY = "reference_loss"


def _is_probabilities(rule: Any) -> bool:
    """A list, array or tensor of numbers, or a mapping name → number without a ``kind``."""
    if isinstance(rule, Mapping):
        return "kind" not in rule
    return isinstance(rule, (np.ndarray, torch.Tensor)) or (
        isinstance(rule, Sequence) and not isinstance(rule, (str, bytes))
    )


def _describe(value: Any) -> Any:
    """A JSON-able description of a rule's configuration, for checkpoint fingerprints."""
    if isinstance(value, Mapping):
        return json.loads(json.dumps(value, sort_keys=True, default=str))
    if isinstance(value, (int, float, str)) or value is None:
        return value
    return type(value).__name__


@dataclass(eq=False)
class DomainMixing(Source):
    """Domain probabilities π from a domain rule, as a function of training progress.

    Args:
        rule: a :class:`reweight.mixing.DomainRule`; a :func:`reweight.mixing.make_rule` spec
            such as ``{"kind": "cooldown"}`` or a kind name (domain names in the spec refer to
            the Reweighter's ``domain_names``); a number τ (temperature sampling at τ); or fixed
            probabilities, one per domain (a sequence) or by domain name (a mapping).
        mode: ``"sample"`` draws domain d with probability π(d) (upsampling); ``"weight"`` draws
            domains as the other sources say (their natural proportions when none does) and
            multiplies each loss by π(d) / q(d) (scalarization, Li et al. 2025);
            ``"proposal"`` draws from π and corrects the loss to the other sources' target.
        reference: per-item reference losses for DoReMi (an array or a ``.npy`` path, one per
            item); a batch key ``"reference_loss"`` takes precedence when present.
        name: how metrics and checkpoints name it (default ``"mixing"``).

    Example:
        >>> import torch
        >>> from reweight import Reweighter
        >>> rw = Reweighter(domains=[0, 0, 0, 1],
        ...                 sources=[DomainMixing({"kind": "uniform"}, mode="weight")])
        >>> rw.importance_ratios(torch.tensor([0, 3])).tolist()  # π = (½, ½) over (¾, ¼)
        [0.6666666666666666, 2.0]
    """

    kind = "mixing"

    rule: Any
    mode: str = "sample"
    reference: Any = None
    name: str | None = None

    def validate(self) -> None:
        super().validate()
        rule, where = self.rule, f"{self.label}.rule"
        if _is_probabilities(rule):
            values = list(rule.values()) if isinstance(rule, Mapping) else rule
            if isinstance(rule, Mapping) and any(not isinstance(k, str) for k in rule):
                raise TypeError(
                    f"{where}: the keys of fixed probabilities must be domain names, got "
                    f"{list(rule)!r}; give a sequence to address domains by id."
                )
            check_weights(where, values)
        elif isinstance(rule, numbers.Real) and not isinstance(rule, bool):
            check_range(
                where,
                rule,
                low=0.0,
                low_open=True,
                finite=False,
                hint="a number is a sampling temperature τ > 0 (1 = natural, inf = uniform).",
            )
        elif not isinstance(rule, (DomainRule, Mapping, str)):
            raise TypeError(
                f"{where} must be a DomainRule, a make_rule spec such as {{'kind': 'cooldown'}}, "
                f"a kind name, a temperature τ or fixed probabilities; got {rule!r}."
            )
        if self.reference is not None:
            check_path_or_array(f"{self.label}.reference", self.reference)

    def bind(self, layout: Layout) -> None:
        where = f"{self.label}.rule"
        spec, names, sizes = self.rule, layout.domain_names, layout.domain_sizes
        if isinstance(spec, DomainRule):
            if spec.num_domains != layout.num_domains:
                raise ValueError(
                    f"{where} has {spec.num_domains} domains but the data has "
                    f"{layout.num_domains} ({names}); build the rule for these domains."
                )
            rule = spec
        else:
            if _is_probabilities(spec):
                spec = {"kind": "fixed", "probs": dict(spec) if isinstance(spec, Mapping) else spec}
            elif isinstance(spec, numbers.Real):
                spec = {"kind": "temperature", "tau": float(spec)}
            with named(where):
                rule = make_rule(spec, sizes, names)
        reference = None
        if self.reference is not None:
            reference = load_per_item(f"{self.label}.reference", self.reference, layout.num_items)
        if reference is not None and not rule.uses_reference:
            raise ValueError(
                f"{self.label}.reference is only read by rules that use reference losses "
                f"(DoReMi), not by {type(rule).__name__}; drop it or use a DoReMi rule."
            )
        self._grid = check_rule(where, rule, layout.num_domains)
        super().bind(layout)
        self._rule = rule
        self._reference = reference

    @property
    def domain_rule(self) -> DomainRule:
        """The rule built from ``rule`` (after the Reweighter bound this source)."""
        return self._rule

    @property
    def needs_progress(self) -> bool:
        return not isinstance(self._rule, FixedMixture)

    def domain_probs(self, progress: float) -> np.ndarray:
        return self._rule.probs(progress)

    def breakpoints(self) -> tuple[float, ...]:
        return self._rule.breakpoints()

    @property
    def batch_keys(self) -> tuple[str, ...]:  # type: ignore[override]
        """``"reference_loss"`` for a rule that reads reference losses (DoReMi)."""
        rule = getattr(self, "_rule", None)
        return (_REFERENCE_KEY,) if rule is not None and rule.uses_reference else ()

    def _reference_losses(self, batch: GlobalBatch) -> np.ndarray | None:
        reference = batch.columns.get(_REFERENCE_KEY)
        if reference is None and self._reference is not None:
            reference = self._reference[batch.index]
        return reference

    def check_observe(self, batch: GlobalBatch) -> None:
        if self._rule.online:
            self._rule.check_observe(
                batch.domains, batch.losses, batch.progress, reference=self._reference_losses(batch)
            )

    def observe(self, batch: GlobalBatch) -> None:
        if self._rule.online:
            self._rule.observe(
                batch.domains, batch.losses, batch.progress, reference=self._reference_losses(batch)
            )

    def metrics(self, step: int, progress: float) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, value in self._rule.metrics(progress).items():
            array = np.asarray(value, dtype=np.float64)
            if array.ndim == 0:
                out[key] = float(array)
            elif array.size == self.layout.num_domains:
                for name, v in zip(self.layout.domain_names, array.tolist(), strict=True):
                    out[f"{key}/{name}"] = float(v)
        return out

    def fingerprint(self) -> dict[str, Any]:
        initial = self._grid[0][1]
        return {
            **super().fingerprint(),
            "rule": _describe(self.rule) if not _is_probabilities(self.rule) else "fixed",
            "initial": [round(float(p), 12) for p in initial / initial.sum()],
        }

    def state_dict(self) -> Any:
        return self._rule.state_dict() if self._rule.online else None

    def parse_state(self, state: Any) -> Any:
        if self._rule.online:
            return self._rule._validate_state(state)
        return super().parse_state(state)

    def apply_state(self, parsed: Any) -> None:
        if self._rule.online:
            self._rule._restore_state(parsed)
