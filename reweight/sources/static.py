"""Static importance weights (DSIR, a density-ratio classifier, or a column the user has)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from reweight._checks import FLOAT32_TINY, named
from reweight.sources.base import Layout, Source, check_path_or_array, load_per_item
from reweight.weights import check_static_params, static_factor

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

    def factor(self) -> np.ndarray:
        """a_i, max 1, floored (see :func:`reweight.weights.static_factor`); reads the file."""
        where = f"{self.label}.log_weights"
        with named(where):
            factor = static_factor(
                load_per_item(where, self.log_weights), self.beta, self.clip, self.floor
            )
        excluded = int((factor == 0).sum())
        if excluded and self.mode != "sample":
            raise ValueError(
                f"{self.label}.log_weights has {excluded} item(s) at -inf (excluded, e.g. by "
                f"`--min-tokens`), which mode={self.mode!r} cannot honour (an excluded item "
                "would still be drawn or still be a target); use mode='sample', or write the "
                "weights with `--min-tokens 0`."
            )
        kept = factor[factor > 0]
        if kept.min() < FLOAT32_TINY:
            raise ValueError(
                f"{self.label}.floor={self.floor!r} lets factors fall to "
                f"{float(kept.min())!r}, below float32's smallest normal number "
                f"{FLOAT32_TINY:.3g} (the sampler stores factors as float32); raise the floor or "
                "lower beta."
            )
        return factor

    def bind(self, layout: Layout) -> None:
        factor = self.factor()
        if factor.size != layout.num_items:
            raise ValueError(
                f"{self.label}.log_weights has {factor.size} entries for {layout.num_items} "
                "items; give one per item, in dataset order."
            )
        super().bind(layout)
        self._crc = zlib.crc32(factor.astype(np.float32).tobytes())
        self._factor: np.ndarray | None = factor

    def item_factors(self) -> np.ndarray:
        """a_i, handed over once: the Reweighter stores it where it is needed (the sampler, the
        target), so no third copy stays here."""
        if self._factor is None:
            raise RuntimeError(f"{self.label}'s factors were handed over already.")
        factor, self._factor = self._factor, None
        return factor

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "crc": self._crc}
