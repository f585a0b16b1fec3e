"""The ``reweight`` presets of conf/reweight/ (or a YAML file of the same form) as weight sources.

The Hydra main job (recipes/train.py) and the plain loops (recipes/train_torchrun.py,
recipes/train_fabric.py) build their sources here; importing this module imports no Lightning.

Example:
    >>> from recipes.presets import load_preset, preset_sources
    >>> preset = load_preset("balanced")
    >>> [type(s).__name__ for s in preset_sources(preset, corpus=None, train_idx=None)]
    ['DomainMixing']
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from reweight.sources import Source

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from recipes.data import AnyCorpus

__all__ = ["PRESET_DIR", "load_preset", "preset_sources"]

#: Where the named presets live (conf/reweight/<name>.yaml).
PRESET_DIR = Path(__file__).resolve().parents[1] / "conf" / "reweight"


def load_preset(name: str) -> DictConfig:
    """The preset ``name`` of conf/reweight/ (``balanced``, ``full``, ...), or a YAML file path
    (``*.yaml``) with the same ``sources:`` block."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
        raise ValueError(f"no reweight preset {name!r}; use one of {names} or a .yaml file path.")
    preset = OmegaConf.load(path)
    if not isinstance(preset, DictConfig):
        raise ValueError(f"reweight preset {str(path)!r} must be a mapping with a sources: block.")
    return preset


def preset_sources(
    preset: DictConfig, corpus: AnyCorpus | None, train_idx: np.ndarray | None
) -> list[Source]:
    """The preset's weight sources, instantiated from their ``_target_`` (a source class, or a
    factory such as :func:`recipes.dsir.dsir_importance` that also takes the corpus and the
    training split); each is named by its key under ``sources``; null entries are off.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import get_object, instantiate

    context: dict[str, Any] = {"corpus": corpus, "train_idx": train_idx}
    sources: list[Source] = []
    for name, spec in (preset.get("sources") or {}).items():
        if spec is None:
            continue
        if "_target_" not in spec:
            raise ValueError(
                f"reweight.sources.{name} has no _target_; give the source class, e.g. "
                "_target_: reweight.sources.DomainMixing."
            )
        parameters = inspect.signature(get_object(spec._target_)).parameters
        extra = {key: value for key, value in context.items() if key in parameters}
        try:
            source = instantiate(spec, name=str(name), _convert_="all", **extra)
        except InstantiationException as error:  # show the source's own message, not Hydra's
            if isinstance(error.__cause__, (ValueError, TypeError)):
                raise error.__cause__ from None
            raise
        if not isinstance(source, Source):
            raise TypeError(
                f"reweight.sources.{name}: {spec._target_} built a {type(source).__name__}, "
                "not a weight source (reweight.sources)."
            )
        sources.append(source)
    return sources
