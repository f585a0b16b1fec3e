"""reweight: online training-data reweighting for PyTorch and Lightning.

Static importance weights, domain mixing and loss-based weights, applied by sampling
(:class:`ReweightSampler`) or by loss weighting (:meth:`Reweighter.reduce`).

The public names are imported on first use, so ``python -m reweight.static`` and its worker
processes do not pay for importing torch and Lightning unless they need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from reweight.callback import ReweightCallback
    from reweight.data import IndexedDataset
    from reweight.engine import (
        DomainMixing,
        DomainWeights,
        DynamicWeights,
        Reweighter,
        StaticWeights,
    )
    from reweight.sampler import ReweightSampler

_HOMES = {
    "DomainMixing": "reweight.engine",
    "DomainWeights": "reweight.engine",
    "DynamicWeights": "reweight.engine",
    "IndexedDataset": "reweight.data",
    "ReweightCallback": "reweight.callback",
    "ReweightSampler": "reweight.sampler",
    "Reweighter": "reweight.engine",
    "StaticWeights": "reweight.engine",
}

__all__ = [
    "DomainMixing",
    "DomainWeights",
    "DynamicWeights",
    "IndexedDataset",
    "ReweightCallback",
    "ReweightSampler",
    "Reweighter",
    "StaticWeights",
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
