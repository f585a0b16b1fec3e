"""In-batch loss weights from each sample's current loss (Sow et al. 2025)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from reweight._checks import check_int, check_range, named
from reweight.mixing import check_schedule, make_schedule
from reweight.sources.base import BatchLosses, Source
from reweight.weights import cap_losses, get_strategy, loss_weights, strategy_at

__all__ = ["InBatchWeights"]


def _as_schedule(value: Any) -> Callable[[float], float]:
    return value if callable(value) else make_schedule(value)


@dataclass(eq=False)
class InBatchWeights(Source):
    """Loss weights over the global batch from each sample's loss: softmax(f(loss)/r), mean 1.

    Args:
        strategy: a strategy of :func:`reweight.weights.loss_weights` ("linupper",
            "quadratic", "extremes", "upper", "hard", "uniform", or a registered name).
        r: the strategy's temperature, finite and > 0 at every progress: a number, a schedule
            (a callable of training progress), or a :func:`reweight.mixing.make_schedule` spec.
            Sow et al. use r = 0.4 late.
        burn_in_steps: optimizer steps of uniform weights first (Sow et al. use 1,000).
        cap_z: clamp losses above mean + cap_z · std of the batch first (noisy labels); None
            disables.
        mode: ``"weight"`` only: in-batch weights are loss weights by nature (the batch is drawn
            before its losses are known).
        name: how metrics and checkpoints name it (default ``"in_batch"``).

    Example:
        >>> import torch
        >>> from reweight import Reweighter
        >>> rw = Reweighter(4, sources=[InBatchWeights("linupper", r=1.0)])
        >>> loss = rw.reduce(torch.tensor([0.0, 1.0, 2.0, 3.0]), {"index": torch.arange(4)})
        >>> [round(w, 3) for w in rw.last_loss_weights.tolist()]
        [0.477, 0.929, 1.297, 1.297]
    """

    kind = "in_batch"
    modes = ("weight",)

    strategy: Any = "linupper"
    r: Any = 1.0
    burn_in_steps: int = 0
    cap_z: float | None = None
    mode: str = "weight"
    name: str | None = None

    def validate(self) -> None:
        super().validate()
        if not (isinstance(self.strategy, str) or callable(self.strategy)):
            raise TypeError(
                f"{self.label}.strategy must be a strategy name or a callable, got "
                f"{self.strategy!r}."
            )
        with named(f"{self.label}.strategy"):
            get_strategy(self.strategy)
        with named(f"{self.label}.r"):
            self._r = _as_schedule(self.r)
        check_schedule(
            f"{self.label}.r",
            self._r,
            low=0.0,
            low_open=True,
            hint="r is the softmax temperature of the loss weights: give a finite r > 0 at "
            "every progress (strategy='uniform' gives uniform weights).",
        )
        check_int(
            f"{self.label}.burn_in_steps",
            self.burn_in_steps,
            minimum=0,
            hint="the optimizer steps of uniform weights first (0: none).",
        )
        if self.cap_z is not None:
            check_range(
                f"{self.label}.cap_z",
                self.cap_z,
                low=0.0,
                low_open=True,
                finite=False,
                hint="give the number of standard deviations above the mean, or None.",
            )

    @property
    def needs_progress(self) -> bool:
        return not isinstance(self.r, (int, float))

    def batch_weights(self, batch: BatchLosses) -> torch.Tensor | None:
        strategy = strategy_at(self.strategy, batch.step, burn_in_steps=int(self.burn_in_steps))
        if strategy == "uniform":
            return None
        values = batch.losses
        if self.cap_z is not None:
            values = cap_losses(values, self.cap_z)
        r = float(self._r(batch.progress))
        return loss_weights(values, strategy, r, valid=batch.valid, check=False)

    def metrics(self, step: int, progress: float) -> dict[str, float]:
        return {"r": float(self._r(progress)), "burn_in": float(step < self.burn_in_steps)}

    def fingerprint(self) -> dict[str, Any]:
        strategy = self.strategy if isinstance(self.strategy, str) else "callable"
        return {**super().fingerprint(), "strategy": strategy}
