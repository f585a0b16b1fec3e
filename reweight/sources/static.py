"""Static importance weights (DSIR, a density-ratio classifier, or a column the user has)."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from reweight._checks import FLOAT32_TINY, chunks, named
from reweight.sources.base import Layout, Source, check_path_or_array, read_per_item
from reweight.weights import check_static_params
from reweight.weights.static import StaticFactor, plan_static_factor

__all__ = ["StaticImportance"]


@dataclass(eq=False)
class StaticImportance(Source):
    """Per-item factor a_i = exp(β · clip(log w_i)) from fixed log importance weights.

    Args:
        log_weights: per-item log importance weights, or the path of a ``.npy`` file of them
            (e.g. from ``python -m reweight.static``); −inf excludes an item (never drawn;
            ``mode="sample"`` only).
        beta: temper (0 ignores the weights, 1 uses them as they are).
        clip: clip the log weights to [−c, c] (a number) or [lo, hi] (a pair).
        floor: smallest factor relative to the mean factor (keeps every item reachable).
        mode: ``"sample"`` draws items in proportion to the factor; ``"weight"`` draws as if
            unweighted and multiplies each loss by the importance ratio; ``"proposal"`` draws
            by the factor and divides it out of the loss.
        name: how metrics and checkpoints name it (default ``"static"``).

    Example:
        >>> StaticImportance([0.0, 1.0], beta=0.5).factor().round(3).tolist()
        [0.607, 1.0]
    """

    kind = "static"

    log_weights: Any
    beta: float = 1.0
    clip: float | tuple[float, float] | None = None
    floor: float = 1e-6
    mode: str = "sample"
    name: str | None = None

    def validate(self) -> None:
        super().validate()
        check_static_params(
            self.beta, self.clip, self.floor, prefix=f"{self.label}.", positive_floor=True
        )
        check_path_or_array(f"{self.label}.log_weights", self.log_weights)

    def _plan(self) -> tuple[StaticFactor, int]:
        """The factor's plan (reads the log weights chunk by chunk), checked for this mode,
        and the CRC-32 of the factor as float32."""
        where = f"{self.label}.log_weights"
        with named(where):
            plan = plan_static_factor(
                read_per_item(where, self.log_weights), self.beta, self.clip, self.floor
            )
        excluded, smallest, crc = 0, np.inf, 0
        for part in chunks(plan.size):
            piece = plan.part(part)
            crc = zlib.crc32(piece.astype(np.float32).tobytes(), crc)
            excluded += int(np.count_nonzero(piece == 0))
            kept = piece[piece > 0]
            smallest = min(smallest, float(kept.min())) if kept.size else smallest
        if excluded and self.mode != "sample":
            raise ValueError(
                f"{self.label}.log_weights has {excluded} item(s) at -inf (excluded, e.g. by "
                f"`--min-tokens`), which mode={self.mode!r} cannot honour (an excluded item "
                "would still be drawn or still be a target); use mode='sample', or write the "
                "weights with `--min-tokens 0`."
            )
        if smallest < FLOAT32_TINY:
            raise ValueError(
                f"{self.label}.floor={self.floor!r} lets factors fall to "
                f"{smallest!r}, below float32's smallest normal number "
                f"{FLOAT32_TINY:.3g} (the sampler stores factors as float32); raise the floor or "
                "lower beta."
            )
        return plan, crc

    def factor(self) -> np.ndarray:
        """a_i, max 1, floored (see :func:`reweight.weights.static_factor`); reads the file."""
        plan, _ = self._plan()
        return plan.part(slice(0, plan.size))

    def bind(self, layout: Layout) -> None:
        plan, crc = self._plan()
        if plan.size != layout.num_items:
            raise ValueError(
                f"{self.label}.log_weights has {plan.size} entries for {layout.num_items} "
                "items; give one per item, in dataset order."
            )
        super().bind(layout)
        self._crc = crc
        self._factor = plan

    def item_factors(self) -> np.ndarray:
        """a_i of every item (float64; computed anew from the log weights)."""
        return self._factor.part(slice(0, self._factor.size))

    def item_factor_parts(self) -> Callable[[slice], np.ndarray]:
        """a_i of a slice of items, computed on demand: the whole float64 factor never exists."""
        return self._factor.part

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "crc": self._crc}
