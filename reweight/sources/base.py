"""The weight-source protocol: what a source contributes, what it observes, its metrics and state.

A source is one way of weighting data. It may contribute

* domain probabilities π (:meth:`Source.domain_probs`), as a function of training progress;
* a fixed per-item factor (:meth:`Source.item_factors`) or per-item factors that change during
  training (returned as :class:`ItemUpdate` by :meth:`Source.observe` and :meth:`Source.on_step`);
* in-batch loss weights (:meth:`Source.batch_weights`), mean 1 over the global batch.

How it acts is its ``mode``, the same three words for every source:

* ``"sample"`` — items are drawn in proportion to it (upsampling); the loss is not corrected;
* ``"weight"`` — items are drawn as if it were absent and each loss is multiplied by it
  (upweighting, through the importance ratio p/q);
* ``"proposal"`` — items are drawn in proportion to it and the loss is corrected back to what
  the other sources target (importance sampling: it changes which items are drawn, not what the
  model is trained on). Sampling from one distribution and correcting to another is a
  ``"weight"`` source for the target plus a ``"proposal"`` source for the draws.

The :class:`~reweight.Reweighter` composes a list of sources; it knows this protocol, not the
sources. A new source is a subclass in one file plus one line in :mod:`reweight.sources`.
"""

from __future__ import annotations

import abc
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from reweight._checks import check_choice

__all__ = [
    "MODES",
    "BatchLosses",
    "GlobalBatch",
    "ItemUpdate",
    "Layout",
    "Mode",
    "Source",
    "load_per_item",
]

Mode = Literal["sample", "weight", "proposal"]
MODES: tuple[str, ...] = ("sample", "weight", "proposal")


@dataclass(frozen=True)
class Layout:
    """What a source may know of the data: item count, domains and their names.

    Attributes:
        num_items: N.
        domain_sizes: items per domain (K entries).
        domain_names: the K domain names.
        item_domains: maps item indices to domain ids.
    """

    num_items: int
    domain_sizes: np.ndarray
    domain_names: list[str]
    item_domains: Callable[[np.ndarray], np.ndarray]

    @property
    def num_domains(self) -> int:
        return len(self.domain_names)


@dataclass(frozen=True)
class GlobalBatch:
    """The global batch (every rank's samples, gathered), as a source sees it.

    Attributes:
        index: item indices (int64).
        domains: their domain ids.
        losses: per-sample training losses (float64; non-finite where ``valid`` is False).
        valid: which losses are finite (the others are masked out).
        columns: optional per-sample batch columns a source asked for (``Source.batch_keys``),
            e.g. ``"reference_loss"``.
        step: the optimizer step the batch is trained at.
        progress: training progress in [0, 1] at that step.
    """

    index: np.ndarray
    domains: np.ndarray
    losses: np.ndarray
    valid: np.ndarray
    columns: Mapping[str, np.ndarray] = field(default_factory=dict)
    step: int = 0
    progress: float = 0.0

    def finite(self) -> GlobalBatch:
        """The same batch without its masked (non-finite) samples."""
        keep = self.valid
        if keep.all():
            return self
        return GlobalBatch(
            self.index[keep],
            self.domains[keep],
            self.losses[keep],
            self.valid[keep],
            {key: value[keep] for key, value in self.columns.items()},
            self.step,
            self.progress,
        )


@dataclass(frozen=True)
class BatchLosses:
    """The global batch's losses where they are (on the GPU in a CUDA step), for in-batch loss
    weights: read them with tensor operations only, never back to the host, so the training
    step is not synchronised.

    Attributes:
        losses: per-sample training losses (float64; non-finite where ``valid`` is False).
        valid: which losses are finite.
        columns: the per-sample batch columns the sources asked for (float64).
        step: the optimizer step the batch is trained at.
        progress: training progress in [0, 1] at that step.
    """

    losses: torch.Tensor
    valid: torch.Tensor
    columns: Mapping[str, torch.Tensor] = field(default_factory=dict)
    step: int = 0
    progress: float = 0.0


@dataclass(frozen=True)
class ItemUpdate:
    """New per-item factors of a source whose item factors change during training.

    Attributes:
        items: the items whose factor changes (unique), or None for every item.
        values: their new factors (float64, finite, > 0).
    """

    items: np.ndarray | None
    values: np.ndarray


class Source(abc.ABC):
    """Base of every weight source (see the module docstring for the protocol).

    Subclasses are dataclasses whose fields are the configuration; ``__post_init__`` calls
    :meth:`validate`, so a bad field fails when the source is built. :meth:`bind` is called
    once, by the Reweighter, with the data's :class:`Layout`.

    Class attributes:
        kind: registry name (``make_source({"kind": ...})``).
        modes: the modes it supports.
        changes_items: whether it updates per-item factors during training (its ``observe``
            and ``on_step`` return :class:`ItemUpdate`).
        batch_keys: optional per-sample batch columns it reads (gathered across ranks).
    """

    kind: ClassVar[str] = "source"
    modes: ClassVar[tuple[str, ...]] = MODES
    changes_items: ClassVar[bool] = False
    batch_keys: ClassVar[tuple[str, ...]] = ()
    mode: str
    name: str | None

    def __post_init__(self) -> None:
        self.validate()
        self._layout: Layout | None = None

    # ---- configuration

    def validate(self) -> None:
        """Checks every field that can be checked without the data; raises ValueError
        (TypeError for a wrong type) naming the field, showing the value, saying the fix."""
        check_choice(f"{self.label}.mode", self.mode, self.modes, "modes")
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise TypeError(f"{self.label}.name must be a non-empty string, got {self.name!r}.")

    @property
    def label(self) -> str:
        """How errors name this source (its class)."""
        return type(self).__name__

    def bind(self, layout: Layout) -> None:
        """Checks what needs the data and builds the source's working state (called once)."""
        if self._layout is not None:
            raise ValueError(
                f"this {self.label} already belongs to a Reweighter; build a new source for "
                "each Reweighter (sources hold per-run state)."
            )
        self._layout = layout

    def unbind(self) -> None:
        """Frees the source again (the Reweighter it was bound to failed to build)."""
        self._layout = None

    @property
    def layout(self) -> Layout:
        if self._layout is None:
            raise RuntimeError(f"{self.label} is not bound to a Reweighter yet.")
        return self._layout

    @property
    def in_target(self) -> bool:
        """Whether it shapes the target p (modes ``sample`` and ``weight``)."""
        return self.mode in ("sample", "weight")

    @property
    def in_proposal(self) -> bool:
        """Whether it shapes the draws q (modes ``sample`` and ``proposal``)."""
        return self.mode in ("sample", "proposal")

    @property
    def sets_domains(self) -> bool:
        """Whether it contributes domain probabilities (it overrides :meth:`domain_probs`)."""
        return type(self).domain_probs is not Source.domain_probs

    @property
    def fixed_items(self) -> bool:
        """Whether it contributes a fixed item factor (it overrides :meth:`item_factors`)."""
        return type(self).item_factors is not Source.item_factors

    @property
    def shapes_draws(self) -> bool:
        """Whether it shapes p or q at all (in-batch loss weights alone do not)."""
        return self.sets_domains or self.fixed_items or self.changes_items

    @property
    def needs_progress(self) -> bool:
        """Whether anything it contributes depends on training progress."""
        return False

    # ---- contributions (after bind)

    def domain_probs(self, progress: float) -> np.ndarray | None:
        """Its domain probabilities at ``progress`` (not necessarily normalised), or None."""
        return None

    def breakpoints(self) -> tuple[float, ...]:
        """Progress points where its contributions change shape (checked besides the grid)."""
        return ()

    def item_factors(self) -> np.ndarray | None:
        """Its fixed per-item factor (N float64 values in (0, 1]), or None."""
        return None

    def item_factor_parts(self) -> Callable[[slice], np.ndarray]:
        """Its fixed item factor as a function of a slice of items (float64), which the
        Reweighter reads one chunk at a time; by default slices of :meth:`item_factors`."""
        factors = self.item_factors()
        if factors is None:
            raise TypeError(f"{self.label} says it has fixed item factors but gave none.")
        return lambda items: factors[items]

    def batch_weights(self, batch: BatchLosses) -> torch.Tensor | None:
        """In-batch loss weights for the global batch (float64 on the losses' device, 0 where
        ``batch.valid`` is False), or None. Called before any state changes; must not change
        state, nor read the losses back to the host (non-finite weights are an error the
        Reweighter reports)."""
        return None

    # ---- learning from the global batch and from steps

    def check_observe(self, batch: GlobalBatch) -> None:
        """Raises exactly what :meth:`observe` would raise for ``batch``, changing nothing."""
        return None

    def observe(self, batch: GlobalBatch) -> ItemUpdate | None:
        """Learns from the global batch's finite losses; returns changed item factors."""
        return None

    def check_step(self, step: int, progress: float) -> None:
        """Raises exactly what :meth:`on_step` would raise, changing nothing."""
        return None

    def on_step(self, step: int, progress: float) -> ItemUpdate | None:
        """Called when the optimizer step ``step`` begins; returns changed item factors."""
        return None

    # ---- diagnostics and state

    def metrics(self, step: int, progress: float) -> dict[str, float]:
        """Flat diagnostics (reads only); the Reweighter prefixes them with the source name."""
        return {}

    def fingerprint(self) -> dict[str, Any]:
        """What a checkpoint must match to be restored into this source."""
        return {"kind": self.kind, "mode": self.mode}

    def state_dict(self) -> Any:
        """Small, versioned state (None for a stateless source)."""
        return None

    def check_state(self, state: Any, step: int) -> None:
        """Raises ValueError when ``state`` cannot belong to a run at optimizer step ``step``
        (e.g. updated at a later step); changes nothing. :meth:`load_state_dict` checks the
        rest."""
        return None

    def load_state_dict(self, state: Any) -> None:
        """Restores :meth:`state_dict`; validates all of it before changing anything."""
        self.apply_state(self.parse_state(state))

    def parse_state(self, state: Any) -> Any:
        """Validates a whole :meth:`state_dict` (changes nothing); returns what
        :meth:`apply_state` applies."""
        if state is not None:
            raise ValueError(f"{self.label} holds no state, got {type(state).__name__}.")
        return None

    def apply_state(self, parsed: Any) -> None:
        """Applies what :meth:`parse_state` returned (cannot fail)."""
        return None


def check_path_or_array(name: str, value: Any) -> None:
    """A ``.npy`` path or an array-like of numbers (read later, when the data's length is known)."""
    if isinstance(value, (str, Path, torch.Tensor, np.ndarray)):
        return
    if isinstance(value, (Mapping, bytes)) or not isinstance(value, (Sequence, numbers.Real)):
        raise TypeError(
            f"{name} must be a .npy path or an array of numbers (one per item), got "
            f"{type(value).__name__}."
        )


def read_per_item(name: str, value: Any) -> np.ndarray:
    """Per-item numbers as a 1-D array without a copy where possible: a ``.npy`` path is
    memory-mapped, a tensor or array kept in its dtype (a list becomes float64).

    Example:
        >>> read_per_item("reference", [1.0, 2.0]).tolist()
        [1.0, 2.0]
    """
    if isinstance(value, (str, Path)):
        path = Path(value)
        if not path.exists():
            raise FileNotFoundError(f"{name}: file {str(path)!r} does not exist.")
        return np.load(path, mmap_mode="r", allow_pickle=False).reshape(-1)
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().reshape(-1)
    array = np.asarray(value)
    return array.reshape(-1) if array.dtype.kind == "f" else array.astype(np.float64).reshape(-1)


def load_per_item(name: str, value: Any, num_items: int | None = None) -> np.ndarray:
    """Per-item numbers as float64: an array-like, a tensor, or a ``.npy`` path.

    With ``num_items``, checks there is one finite value per item.

    Example:
        >>> load_per_item("reference", [1.0, 2.0], 2).tolist()
        [1.0, 2.0]
    """
    array = np.array(read_per_item(name, value), dtype=np.float64)
    if num_items is not None:
        bad = ~np.isfinite(array)
        if array.size != num_items or bad.any():
            example = f"; e.g. {float(array[bad][0])!r}" if bad.any() else ""
            raise ValueError(
                f"{name} must hold {num_items} finite values, one per item in dataset order "
                f"(got {array.size} values{example})."
            )
    return array
