"""Reducible-loss selection (RHO-LOSS, Mindermann et al. 2022): prioritise what is learnable."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from reweight.sources.base import GlobalBatch, Layout, check_path_or_array, load_per_item
from reweight.sources.loss_priority import LossPriority

__all__ = ["ReducibleLoss"]


@dataclass(eq=False)
class ReducibleLoss(LossPriority):
    """Priorities from the reducible loss: training loss − irreducible loss, per item.

    Plain loss priorities chase items the model cannot learn (noisy labels, ambiguous text):
    their loss stays high. The irreducible loss — the loss of a model trained on held-out data
    (RHO-LOSS's "irreducible loss model"), or any reference model — is high for those items
    too, so their reducible loss is low and they are drawn less. Every option of
    :class:`LossPriority` applies to the reducible loss.

    Args:
        reference: per-item irreducible losses (an array or a ``.npy`` path, one per item);
            without it, every batch must carry them under ``batch_key``.
        batch_key: the batch key of per-sample irreducible losses (default
            ``"reference_loss"``, as for DoReMi); it takes precedence over ``reference``.
        (and every argument of :class:`LossPriority`; ``name`` defaults to
        ``"reducible_loss"``.)

    Example:
        >>> import torch
        >>> from reweight import Reweighter
        >>> source = ReducibleLoss(reference=[0.0, 0.0, 3.5, 0.0], pressure=10.0, refresh_every=1)
        >>> rw = Reweighter(4, sources=[source])
        >>> _ = rw.reduce(torch.tensor([4.0, 3.0, 4.0, 1.0]), {"index": torch.arange(4)})
        >>> rw.step()
        >>> rw.sampler.factors(range(4))[1].round(3).tolist()  # item 2 is noise: last
        [1.0, 0.464, 0.1, 0.215]
    """

    kind = "reducible_loss"

    reference: Any = None
    batch_key: str = "reference_loss"

    def validate(self) -> None:
        super().validate()
        if self.reference is not None:
            check_path_or_array(f"{self.label}.reference", self.reference)
        if not isinstance(self.batch_key, str) or not self.batch_key:
            raise TypeError(f"{self.label}.batch_key must be a string, got {self.batch_key!r}.")
        self.batch_keys = (self.batch_key,)  # type: ignore[misc]

    def bind(self, layout: Layout) -> None:
        reference = None
        if self.reference is not None:
            reference = load_per_item(f"{self.label}.reference", self.reference, layout.num_items)
        super().bind(layout)
        self._reference = reference

    def signal(self, batch: GlobalBatch) -> np.ndarray:
        irreducible = batch.columns.get(self.batch_key)
        if irreducible is None:
            if self._reference is None:
                raise ValueError(
                    f"{self.label} needs irreducible losses: give reference=... (one per item) "
                    f"or put {self.batch_key!r} (one per sample) in every batch."
                )
            irreducible = self._reference[batch.index]
        if not np.isfinite(irreducible).all():
            bad = float(irreducible[~np.isfinite(irreducible)][0])
            raise ValueError(
                f"{self.label}: irreducible losses must be finite, got {bad!r} in batch key "
                f"{self.batch_key!r}; fix the reference losses."
            )
        return batch.losses - irreducible

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "batch_key": self.batch_key}
