"""reweight: online training-data reweighting for PyTorch and Lightning.

Weight sources (:mod:`reweight.sources`: static importance, domain mixing, in-batch loss
weights, loss priorities, reducible loss), each applied by sampling (:class:`ReweightSampler`),
by loss weighting (:meth:`Reweighter.reduce`), or sampled and corrected.

The public names are imported on first use, so ``python -m reweight.static`` and its worker
processes do not pay for importing torch and Lightning unless they need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from reweight.callback import ReweightCallback
    from reweight.data import IndexedDataset
    from reweight.engine import Reweighter
    from reweight.sampler import ReweightSampler
    from reweight.sources import (
        DomainMixing,
        InBatchWeights,
        LossPriority,
        ReducibleLoss,
        StaticImportance,
        make_source,
    )

_HOMES = {
    "DomainMixing": "reweight.sources",
    "InBatchWeights": "reweight.sources",
    "IndexedDataset": "reweight.data",
    "LossPriority": "reweight.sources",
    "ReducibleLoss": "reweight.sources",
    "ReweightCallback": "reweight.callback",
    "ReweightSampler": "reweight.sampler",
    "Reweighter": "reweight.engine",
    "StaticImportance": "reweight.sources",
    "make_source": "reweight.sources",
}

__all__ = [
    "DomainMixing",
    "InBatchWeights",
    "IndexedDataset",
    "LossPriority",
    "ReducibleLoss",
    "ReweightCallback",
    "ReweightSampler",
    "Reweighter",
    "StaticImportance",
    "make_source",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'reweight' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
