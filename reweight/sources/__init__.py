"""Weight sources behind one protocol (:class:`Source`), and their registry.

=================  ===========================  ==============================================
kind               class                        what it contributes
=================  ===========================  ==============================================
``static``         :class:`StaticImportance`    a fixed per-item factor (DSIR log weights)
``mixing``         :class:`DomainMixing`        domain probabilities (τ schedules, DoReMi, ...)
``in_batch``       :class:`InBatchWeights`      in-batch loss weights (Sow et al. 2025)
``loss_priority``  :class:`LossPriority`        per-item priorities from a loss table
``reducible_loss`` :class:`ReducibleLoss`       priorities from loss − irreducible loss
=================  ===========================  ==============================================

Every source takes ``mode`` = ``"sample"``, ``"weight"`` or ``"proposal"`` (see
:mod:`reweight.sources.base`). Adding a source is a :class:`Source` subclass in one file and one
line in :data:`SOURCES`.

Example:
    >>> source = make_source({"kind": "mixing", "rule": {"kind": "cooldown"}})
    >>> type(source).__name__, source.mode
    ('DomainMixing', 'sample')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reweight.sources.base import MODES, BatchLosses, GlobalBatch, ItemUpdate, Layout, Mode, Source
from reweight.sources.in_batch import InBatchWeights
from reweight.sources.loss_priority import LossPriority
from reweight.sources.mixing import DomainMixing
from reweight.sources.reducible_loss import ReducibleLoss
from reweight.sources.static import StaticImportance

__all__ = [
    "MODES",
    "SOURCES",
    "BatchLosses",
    "DomainMixing",
    "GlobalBatch",
    "InBatchWeights",
    "ItemUpdate",
    "Layout",
    "LossPriority",
    "Mode",
    "ReducibleLoss",
    "Source",
    "StaticImportance",
    "make_source",
]

SOURCES: dict[str, type[Source]] = {
    "static": StaticImportance,
    "mixing": DomainMixing,
    "in_batch": InBatchWeights,
    "loss_priority": LossPriority,
    "reducible_loss": ReducibleLoss,
}
"""Source kinds for :func:`make_source`."""


def make_source(spec: Source | Mapping[str, Any]) -> Source:
    """A source from a plain spec ``{"kind": ..., **fields}`` (a Source is returned as is).

    Raises:
        ValueError: an unknown kind (the message lists the kinds) or a bad field.
        TypeError: a spec that is neither a Source nor a mapping with a ``kind``.
    """
    if isinstance(spec, Source):
        return spec
    if not isinstance(spec, Mapping) or "kind" not in spec:
        raise TypeError(
            f"a source must be a Source or a mapping with a 'kind' (one of {sorted(SOURCES)}), "
            f"got {spec!r}."
        )
    fields = dict(spec)
    kind = fields.pop("kind")
    if kind not in SOURCES:
        raise ValueError(f"unknown source kind {kind!r}; valid kinds: {', '.join(SOURCES)}.")
    cls = SOURCES[kind]
    try:
        return cls(**fields)
    except TypeError as error:
        if "unexpected keyword" in str(error) or "required positional" in str(error):
            raise TypeError(f"source {kind!r}: {error}") from None
        raise
