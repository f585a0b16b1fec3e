"""The target p and the proposal q that a list of sources defines (DESIGN.md's weight model).

Sources in mode ``sample`` or ``weight`` shape p; those in ``sample`` or ``proposal`` shape q.
Per side, domain probabilities multiply (natural proportions when no source sets them) and item
factors multiply. The sampler holds q's item factors; :class:`Composition` holds what p needs
beyond them — its own item factors and per-domain masses — so p is never reconstructed from
the sampler's state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from reweight._checks import check_weights, chunks, progress_grid, state_array
from reweight.sources.base import ItemUpdate, Layout, Source
from reweight.weights.importance import (
    domain_mass,
    drawable_probs,
    importance_ratios,
    item_probabilities,
    mass_change,
    mixture,
)

__all__ = ["Composition"]

ItemParts = Callable[[slice], np.ndarray]  # item factors of a slice of items (float64)


class DrawTarget(Protocol):
    """What the composition needs of the sampler: q's factors and domain probabilities."""

    def set_static(self, values: Any) -> None: ...
    def set_dynamic(self, values: Any) -> None: ...
    def update(self, items: Any, values: Any) -> None: ...
    def set_domain_probs(self, probs: Any) -> None: ...
    def natural_probs(self) -> np.ndarray: ...
    def item_shares(self, items: Any) -> np.ndarray: ...


def _product(parts: Sequence[ItemParts]) -> ItemParts | None:
    """The product of item factors given in parts (None for none), multiplied in float64 per
    slice of items."""
    if not parts:
        return None

    def product(items: slice) -> np.ndarray:
        out = np.asarray(parts[0](items), dtype=np.float64)
        for factor in parts[1:]:
            out = out * factor(items)
        return out

    return product


class Composition:
    """p and q of a list of bound sources over one data layout; q is written to the sampler.

    Args:
        sources: the sources, bound to ``layout``.
        layout: the data's layout.
        sampler: draws from q (a :class:`~reweight.ReweightSampler`).

    Attributes:
        weighting: whether p differs from q anywhere (then losses carry p/q).
        target_probs: π_p now.
    """

    def __init__(self, sources: Sequence[Source], layout: Layout, sampler: DrawTarget) -> None:
        shaping = [s for s in sources if s.shapes_draws]
        live = [s for s in shaping if s.changes_items]
        if len(live) > 1:
            raise ValueError(
                f"sources {[s.name or s.kind for s in live]} both change item factors during "
                "training; use one of them (the sampler holds one updatable item factor)."
            )
        self._layout = layout
        self._sampler = sampler
        self._natural = sampler.natural_probs()
        self.target_probs = self._natural
        self._sampled: np.ndarray | None = None
        self._domain_sources = [s for s in shaping if s.sets_domains]
        self.live: Source | None = live[0] if live else None
        self.weighting = any(s.mode != "sample" for s in shaping)
        target_fixed = [s for s in shaping if s.in_target and s.fixed_items]
        proposal_fixed = [s for s in shaping if s.in_proposal and s.fixed_items]
        parts = {id(s): s.item_factor_parts() for s in shaping if s.fixed_items}
        proposal_factors = _product([parts[id(s)] for s in proposal_fixed])
        if proposal_factors is not None:
            sampler.set_static(proposal_factors)
            del proposal_factors
        # p's item factors equal the sampler's unless a source shapes only one side of them.
        same_items = all(s.mode == "sample" for s in shaping if s.fixed_items or s.changes_items)
        self._own: np.ndarray | None = None  # t_i without the live factor (float32)
        self._live: np.ndarray | None = None  # the live factor, when p has it (float32)
        self.mass: np.ndarray | None = None  # T_d, when p has its own item factors
        if not same_items:
            target = _product([parts[id(s)] for s in target_fixed])
            if target is not None:
                self._own = np.empty(layout.num_items, dtype=np.float32)
                for part in chunks(layout.num_items):
                    self._own[part] = target(part)
            if self.live is not None and self.live.in_target:
                self._live = np.ones(layout.num_items, dtype=np.float32)
            self.mass = self._compute_mass()
        self.check_grid()
        self.apply(self.domain_probs(0.0))

    # ------------------------------------------------------------------ domains

    @property
    def needs_progress(self) -> bool:
        return any(s.needs_progress for s in self._domain_sources)

    def domain_probs(self, progress: float) -> tuple[np.ndarray, np.ndarray] | None:
        """(π_p, π_q) at ``progress``, checked and normalised (None without domain sources);
        changes nothing."""
        if not self._domain_sources:
            return None
        k, where = self._layout.num_domains, f"at progress {progress:g}"
        probs = {
            id(s): check_weights(f"{s.name or s.kind} {where}", s.domain_probs(progress), k)
            for s in self._domain_sources
        }
        target = mixture([probs[id(s)] for s in self._domain_sources if s.in_target], self._natural)
        sample = drawable_probs(
            mixture([probs[id(s)] for s in self._domain_sources if s.in_proposal], self._natural)
        )
        if not (sample[self._layout.domain_sizes > 0] > 0).any():
            raise ValueError(
                f"the domain probabilities {where} put no mass on a domain that has items "
                f"({sample.tolist()}; domain sizes {self._layout.domain_sizes.tolist()}); "
                "nothing could be drawn (nothing was changed)."
            )
        return target, sample

    def domain_probs_after(
        self, parsed: Mapping[str | None, Any], progress: float
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """:meth:`domain_probs` at ``progress`` once the domain sources hold the states
        ``parsed`` (by source name, from their ``parse_state``): applied for this call only,
        then put back, so nothing changes."""
        current = [(s, s.parse_state(s.state_dict())) for s in self._domain_sources]
        try:
            for source, _ in current:
                source.apply_state(parsed[source.name])
            return self.domain_probs(progress)
        finally:
            for source, old in current:
                source.apply_state(old)

    def apply(self, probs: tuple[np.ndarray, np.ndarray] | None, force: bool = False) -> None:
        """Sets π_p and π_q (from :meth:`domain_probs`); π_q goes to the sampler when it
        changes (or when ``force``)."""
        if probs is None:
            return
        target, sample = probs
        if force or self._sampled is None or not np.array_equal(sample, self._sampled):
            self._sampler.set_domain_probs(sample)
            self._sampled = sample
        self.target_probs = target

    def check_grid(self) -> None:
        """Checks π_p and π_q on the progress grid: every domain that can be drawn must have a
        positive target probability when p differs from q, or a batch of its items would have
        no loss weight at all."""
        if not self._domain_sources:
            return
        breakpoints = [b for s in self._domain_sources for b in s.breakpoints()]
        sizes, names = self._layout.domain_sizes, self._layout.domain_names
        for at in progress_grid(breakpoints).tolist():
            probs = self.domain_probs(at)
            assert probs is not None
            target, sample = probs
            starved = (sample > 0) & (sizes > 0) & ~(target > 0)
            if self.weighting and starved.any():
                d = int(np.flatnonzero(starved)[0])
                culprits = [
                    f"{s.label}.rule (source {s.name or s.kind!r})"
                    for s in self._domain_sources
                    if s.in_target and not np.asarray(s.domain_probs(at))[d] > 0
                ]
                raise ValueError(
                    f"{' and '.join(culprits)} give domain {names[d]!r} probability 0 at "
                    f"progress {at:g}, but the draws still reach it, so a batch of its items "
                    "would have no loss weight; give every drawn domain a positive target "
                    "probability, or use mode='sample' to leave domains out."
                )

    # ------------------------------------------------------------------ items

    def _compute_mass(self) -> np.ndarray:
        """T_d = Σ_{j∈d} t_j over every item (O(N), in chunks)."""
        n, k = self._layout.num_items, self._layout.num_domains
        mass = np.zeros(k)
        for start in range(0, n, 1 << 22):
            items = np.arange(start, min(n, start + (1 << 22)))
            mass += domain_mass(self._factors(items), self._layout.item_domains(items), k)
        return mass

    def _factors(self, items: np.ndarray) -> np.ndarray | None:
        own = None if self._own is None else self._own[items].astype(np.float64)
        if self._live is None:
            return own
        live = self._live[items].astype(np.float64)
        return live if own is None else own * live

    def route(self, source: Source, update: ItemUpdate | None) -> None:
        """Sends a source's new item factors to q (the sampler) and p."""
        if update is None:
            return
        if not source.changes_items:
            raise TypeError(
                f"{source.label} returned new item factors but does not declare "
                "changes_items = True; declare it (the Reweighter then routes them)."
            )
        if source.in_proposal:
            if update.items is None:
                self._sampler.set_dynamic(update.values)
            else:
                self._sampler.update(update.items, update.values)
        if source.in_target and self._live is not None:
            self._update_target(update)

    def _update_target(self, update: ItemUpdate) -> None:
        assert self.mass is not None and self._live is not None
        if update.items is None:
            self._live[:] = update.values
            self.mass = self._compute_mass()
            return
        items = update.items
        old = self._factors(items)
        self._live[items] = update.values
        new = self._factors(items)
        k = self._layout.num_domains
        self.mass += mass_change(self._layout.item_domains(items), old, new, k)  # type: ignore[arg-type]

    def target_probabilities(self, items: np.ndarray) -> np.ndarray:
        """p(i) of each item under the current target."""
        domains = self._layout.item_domains(items)
        if self.mass is None:  # p's item factors are q's: p(i) = π_p(d) · s_i / S_d
            return self.target_probs[domains] * self._sampler.item_shares(items)
        return item_probabilities(self.target_probs, domains, self._factors(items), self.mass)

    def ratios(self, items: np.ndarray, q: np.ndarray) -> np.ndarray:
        """p(i)/q(i) for items drawn with probabilities ``q``."""
        return importance_ratios(self.target_probabilities(items), q)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any] | None:
        if self.mass is None:
            return None
        return {
            "mass": torch.from_numpy(self.mass.copy()),
            "live": None if self._live is None else state_array(self._live),
        }

    def parse_state(self, state: Any) -> tuple[np.ndarray, np.ndarray | None] | None:
        """Validates a :meth:`state_dict` (changes nothing)."""
        if self.mass is None:
            if state is not None:
                raise ValueError("Reweighter state: 'target' must be None for these sources.")
            return None
        if not isinstance(state, dict) or set(state) != {"mass", "live"}:
            raise ValueError("Reweighter state: 'target' must hold 'mass' and 'live'.")
        k, n = self._layout.num_domains, self._layout.num_items
        for key in ("mass", "live"):
            value = state[key]
            if not isinstance(value, (torch.Tensor, np.ndarray)) and (key, value) != ("live", None):
                raise ValueError(
                    f"Reweighter state: target {key!r} must be a tensor, got "
                    f"{type(value).__name__}; the state is corrupt."
                )
        mass = np.asarray(torch.as_tensor(state["mass"]).cpu().numpy(), dtype=np.float64)
        if mass.shape != (k,) or not np.isfinite(mass).all() or (mass < 0).any():
            raise ValueError(
                f"Reweighter state: target 'mass' must hold {k} finite values >= 0, got "
                f"{mass.tolist()!r:.80}; the state is corrupt."
            )
        live = state["live"]
        if (live is None) != (self._live is None):
            raise ValueError("Reweighter state: target 'live' does not fit these sources.")
        if live is not None:  # kept as saved (no copy); checked as float32, chunk by chunk
            live = torch.as_tensor(live).cpu().numpy()
            if live.shape != (n,) or not all(
                np.isfinite(piece).all() and (piece > 0).all()
                for piece in (live[part].astype(np.float32) for part in chunks(n))
            ):
                raise ValueError(
                    f"Reweighter state: target 'live' must hold {n} finite factors > 0; the "
                    "state is corrupt."
                )
        return mass.copy(), live

    def apply_state(self, parsed: tuple[np.ndarray, np.ndarray | None] | None) -> None:
        if parsed is None:
            return
        self.mass, live = parsed
        if live is not None and self._live is not None:
            self._live[...] = live  # in place, cast to float32 as parse_state checked it
