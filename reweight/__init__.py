"""reweight: online training-data reweighting for PyTorch and Lightning.

Static importance weights, domain mixing and loss-based weights, applied by sampling
(:class:`ReweightSampler`) or by loss weighting (:meth:`Reweighter.reduce`).
"""

from reweight.data import IndexedDataset
from reweight.engine import (
    DomainMixing,
    DomainWeights,
    DynamicWeights,
    Reweighter,
    StaticWeights,
)
from reweight.sampler import ReweightSampler

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
    # Lightning is imported only when the callback is used (a plain PyTorch loop never pays).
    if name == "ReweightCallback":
        from reweight.callback import ReweightCallback

        return ReweightCallback
    raise AttributeError(f"module 'reweight' has no attribute {name!r}")
