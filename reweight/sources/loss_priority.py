"""Loss-driven sampling priorities from a per-item loss table (Loshchilov & Hutter 2015)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from reweight._checks import FLOAT32_TINY, check_choice, check_int, check_range
from reweight.sources.base import GlobalBatch, ItemUpdate, Layout, Source
from reweight.table import PRIORITY_METHODS, LossTable, check_priority_params, check_table_params
from reweight.table_state import check_track_last_seen

__all__ = ["LossPriority"]

_DEFAULT_PRESSURE = 100.0
_DEFAULT_TEMPERATURE = 1.0


@dataclass(eq=False)
class LossPriority(Source):
    """Per-item priorities b_i from an EMA of each item's loss: high-loss items first.

    Args:
        priority: ``"rank"`` (selection pressure ``pressure``, the ratio of the most to the
            least likely item) or ``"softmax"`` (of the loss estimate over ``temperature``).
        pressure: rank priorities only (default 100).
        temperature: softmax priorities only (default 1).
        floor: smallest priority relative to the largest; keeps every item reachable.
        decay: EMA decay of each item's loss in the table.
        prior: loss estimate of unseen items: ``"mean"`` (of the seen items) or a number.
        relax_steps: stale entries relax toward the prior with this time constant (steps).
        track_last_seen: keep each item's last-seen step in the table (4 of its 8 bytes per
            item), which ``relax_steps`` and the ``staleness_mean`` / ``staleness_max``
            metrics need. False (with ``relax_steps=None``) gives the same priorities from 4
            bytes per item, without those metrics: 4 GB less at 10^9 items.
        refresh_every: steps between full refreshes of every item's priority (O(N)), plus
            refreshes at steps 1, 2, 4, 8, ... before the first one; between refreshes only the
            items of each batch are updated (O(batch · log N)), ranked against the last
            refresh's snapshot of all estimates.
        mode: ``"sample"`` draws items by priority and trains on them as drawn (online batch
            selection); ``"proposal"`` draws by priority and divides it out of the loss (the
            expected gradient is the other sources'); ``"weight"`` multiplies each loss by it.
        name: how metrics and checkpoints name it (default ``"loss_priority"``).

    Example:
        >>> import torch
        >>> from reweight import Reweighter
        >>> rw = Reweighter(4, sources=[LossPriority(pressure=10.0, refresh_every=1)])
        >>> _ = rw.reduce(torch.tensor([4.0, 3.0, 2.0, 1.0]), {"index": torch.arange(4)})
        >>> rw.step()
        >>> rw.sampler.factors(range(4))[1].round(3).tolist()
        [1.0, 0.464, 0.215, 0.1]
    """

    kind = "loss_priority"
    changes_items = True

    priority: str = "rank"
    pressure: float | None = None
    temperature: float | None = None
    floor: float = 1e-3
    decay: float = 0.9
    prior: float | str = "mean"
    relax_steps: int | None = None
    track_last_seen: bool = True
    refresh_every: int = 1000
    mode: str = "sample"
    name: str | None = None

    def validate(self) -> None:
        super().validate()
        prefix = f"{self.label}."
        check_choice(f"{prefix}priority", self.priority, PRIORITY_METHODS, "priorities")
        for field, method in (("pressure", "rank"), ("temperature", "softmax")):
            if getattr(self, field) is not None and self.priority != method:
                raise ValueError(
                    f"{prefix}{field}={getattr(self, field)!r} is only used by "
                    f"priority={method!r} (priority is {self.priority!r}); drop it."
                )
        check_range(
            f"{prefix}floor",
            self.floor,
            low=FLOAT32_TINY,
            high=1.0,
            hint="the smallest priority relative to the largest must be positive (0 would make "
            "items unreachable) and a normal float32 (the sampler stores priorities as float32).",
        )
        check_priority_params(
            self.priority, self._pressure, self._temperature, self.floor, prefix=prefix
        )
        check_table_params(self.decay, self.prior, None, prefix=prefix)
        if self.relax_steps is not None:
            check_int(
                f"{prefix}relax_steps",
                self.relax_steps,
                minimum=1,
                hint="the relaxation time constant in steps, or None for no relaxation.",
            )
        check_track_last_seen(self.track_last_seen, self.relax_steps, prefix=prefix)
        check_int(
            f"{prefix}refresh_every",
            self.refresh_every,
            minimum=1,
            hint="the steps between full refreshes of every item's priority.",
        )

    @property
    def _pressure(self) -> float:
        return _DEFAULT_PRESSURE if self.pressure is None else self.pressure

    @property
    def _temperature(self) -> float:
        return _DEFAULT_TEMPERATURE if self.temperature is None else self.temperature

    def bind(self, layout: Layout) -> None:
        super().bind(layout)
        self.table = LossTable(
            layout.num_items,
            decay=self.decay,
            prior=self.prior,
            relax_steps=self.relax_steps,
            track_last_seen=self.track_last_seen,
        )

    def signal(self, batch: GlobalBatch) -> np.ndarray:
        """What the table tracks for each sample of ``batch``: its training loss."""
        return batch.losses

    def _priorities(self, items: np.ndarray | None, step: int) -> np.ndarray:
        method, pressure, temperature = self.priority, self._pressure, self._temperature
        if items is None:  # float32, as the sampler stores them: half the memory of float64
            return self.table.all_priorities(
                step,
                method=method,
                pressure=pressure,
                temperature=temperature,
                floor=self.floor,
                dtype=np.float32,
            )
        return self.table.priorities(
            items, step, method=method, pressure=pressure, temperature=temperature, floor=self.floor
        )

    def check_observe(self, batch: GlobalBatch) -> None:
        self.table.check_update(batch.index, self.signal(batch), step=batch.step)

    def observe(self, batch: GlobalBatch) -> ItemUpdate | None:
        if batch.index.size == 0:
            return None
        self.table.update(batch.index, self.signal(batch), step=batch.step)
        items = np.unique(batch.index)
        return ItemUpdate(items, self._priorities(items, batch.step))

    def check_step(self, step: int, progress: float) -> None:
        self.table.check_update((), (), step=step)

    def on_step(self, step: int, progress: float) -> ItemUpdate | None:
        # Every refresh_every steps, and at steps 1, 2, 4, 8, ... before that, so the rank
        # snapshot reflects the losses seen early on.
        every = self.refresh_every
        if step % every and (step >= every or step & (step - 1)):
            return None
        self.table.refresh(step)
        return ItemUpdate(None, self._priorities(None, step))

    def metrics(self, step: int, progress: float) -> dict[str, float]:
        out = {"coverage": float(self.table.coverage())}
        if self.table.track_last_seen:
            stale = self.table.staleness(step)
            out["staleness_mean"] = float(stale["mean"])
            out["staleness_max"] = float(stale["max"])
        return out

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "priority": self.priority}

    def state_dict(self) -> Any:
        return self.table.state_dict()

    def check_state(self, state: Any, step: int) -> None:
        saved = state.get("step") if isinstance(state, dict) else None
        if isinstance(saved, (int, np.integer)) and not isinstance(saved, bool) and saved > step:
            raise ValueError(
                f"Reweighter state: {self.name}'s loss table was updated at step {int(saved)}, "
                f"after the run's step {step}; the state is corrupt."
            )

    def parse_state(self, state: Any) -> Any:
        return self.table.parse_state(state)

    def apply_state(self, parsed: Any) -> None:
        self.table.apply_state(parsed)
