"""Per-item loss table: a fixed-size memory of every item's loss that drives sampling priorities.

Loss-driven *sampling* (Loshchilov & Hutter 2015, "Online Batch Selection for Faster Training of
Neural Networks") needs each item's latest loss, not only the current batch's. This table keeps,
per item, a float32 exponential moving average (EMA) of its loss and the int32 step it was last
seen (−1: never): 8 bytes per item, no history, no growth — 10⁸ items take 800 MB.

* :meth:`LossTable.update` folds the global batch in: first sighting sets ``EMA = loss``, later
  ones ``EMA ← decay · EMA + (1 − decay) · loss``. Every rank applies the same all-gathered batch,
  so every rank holds the same table.
* :meth:`LossTable.estimates`: an item's current loss estimate. Unseen items get the prior
  (``"mean"``: the running mean of the seen EMAs, kept in O(batch) per update; or a constant),
  so they are still drawn; a seen item's EMA relaxes toward the prior as it goes stale,
  ``prior + (EMA − prior) · exp(−(step − last_seen) / relax_steps)``.
* :meth:`LossTable.priorities` turns estimates into sampling priorities in ``[floor, 1]``:

  - ``"rank"`` (Loshchilov & Hutter): items ranked by estimate, rank 1 = highest;
    ``p = exp(−log(s) · (rank − 1) / (N − 1))`` with the selection pressure ``s``, the ratio
    between the most and the least likely item (their ``exp(−log(s) · rank / N)`` differs by the
    constant factor and a ratio of ``s^((N−1)/N)`` instead of ``s``). Ties share their mid-rank,
    so e.g. all unseen items (tied at the prior) get one common priority.
  - ``"softmax"``: ``p = exp((estimate − max) / temperature)``, ``max`` the largest estimate.

  Exact ranks every step would cost O(N log N). Instead :meth:`LossTable.refresh` (the caller
  runs it every so many steps) sorts all estimates once and keeps a sorted snapshot of at most
  ``snapshot_size`` evenly spaced order statistics (all N when N is small); a rank is then a
  binary search against the snapshot, O(log K) per item. With K order statistics the relative
  rank is within about 1/K of the exact one: with the default K = 65,536 and ``s = 100`` a
  priority is off by a factor of at most ``100^(1/65536) ≈ 1.00007``.
* Floors keep every item reachable: priorities are clipped to ``[floor, 1]``, where 1 is the
  priority of an item at the snapshot's top estimate (so ``floor`` is relative to the largest
  priority). Rank priorities never go below ``1 / pressure`` anyway.

Reads never mutate; :meth:`LossTable.update`, :meth:`LossTable.refresh` and
:meth:`LossTable.load_state_dict` do, after validating everything.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from reweight._checks import from_tensor, is_int, is_real

__all__ = ["PRIORITY_METHODS", "LossTable", "check_priority_params", "check_table_params"]

_STATE_VERSION = 2  # 2 added "min_last_seen"; version 1 states load with it recounted
_CHUNK = 1 << 22
_INT32_MAX = int(np.iinfo(np.int32).max)
_F32_MAX = float(np.finfo(np.float32).max)
_EXP_MIN = -148  # smallest np.frexp exponent of a nonzero float32 (2^-149 = 0.5 · 2^-148)
DEFAULT_SNAPSHOT_SIZE = 1 << 16
PRIORITY_METHODS = ("rank", "softmax")
"""Names accepted by :meth:`LossTable.priorities` ``method``."""


# ---------------------------------------------------------------- input checks


def _number(name: str, value: Any) -> float:
    """``value`` as a float (NaN and infinities pass: the caller's range check explains the
    range); TypeError for a bool or a non-number."""
    if not is_real(value):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__}).")
    return float(value)


def check_table_params(
    decay: Any, prior: Any, relax_steps: Any, *, prefix: str = ""
) -> tuple[float, str | float, float | None]:
    """Validates :class:`LossTable`'s ``decay``, ``prior`` and ``relax_steps``.

    Returns them as ``(float, "mean" or float, float or None)``. ``prefix`` goes in front of
    each name in errors (e.g. ``"LossPriority."``).

    Example:
        >>> check_table_params(0.9, "mean", None)
        (0.9, 'mean', None)
    """
    value = _number(f"{prefix}decay", decay)
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"{prefix}decay must lie in [0, 1) (the EMA decay; 0 keeps the latest loss), "
            f"got {decay!r}."
        )
    if isinstance(prior, str):
        if prior != "mean":
            raise ValueError(f"{prefix}prior must be 'mean' or a finite number, got {prior!r}.")
        estimate: str | float = prior
    else:
        if not is_real(prior):
            raise TypeError(
                f"{prefix}prior must be 'mean' or a finite number, got {prior!r} "
                f"({type(prior).__name__})."
            )
        if not math.isfinite(float(prior)):
            raise ValueError(f"{prefix}prior must be 'mean' or a finite number, got {prior!r}.")
        estimate = float(prior)
    relax: float | None = None
    if relax_steps is not None:
        relax = _number(f"{prefix}relax_steps", relax_steps)
        if not (math.isfinite(relax) and relax > 0):
            raise ValueError(
                f"{prefix}relax_steps must be None (no relaxation) or a finite number > 0, "
                f"got {relax_steps!r}."
            )
    return value, estimate, relax


def check_priority_params(
    method: Any, pressure: Any, temperature: Any, floor: Any, *, prefix: str = ""
) -> tuple[str, float, float, float]:
    """Validates the priority parameters of :meth:`LossTable.priorities`.

    ``method`` one of :data:`PRIORITY_METHODS`, ``pressure`` finite >= 1, ``temperature`` > 0
    (``math.inf`` allowed), ``floor`` in [0, 1]. ``prefix`` goes in front of each name in
    errors (e.g. ``"LossPriority."``).

    Example:
        >>> check_priority_params("rank", 100, 1.0, 1e-3)
        ('rank', 100.0, 1.0, 0.001)
    """
    if not isinstance(method, str) or method not in PRIORITY_METHODS:
        raise ValueError(
            f"unknown {prefix}priority method {method!r}; valid names: "
            f"{', '.join(PRIORITY_METHODS)}."
        )
    pressure = _number(f"{prefix}pressure", pressure)
    temperature = _number(f"{prefix}temperature", temperature)
    floor = _number(f"{prefix}floor", floor)
    if not (math.isfinite(pressure) and pressure >= 1.0):
        raise ValueError(
            f"{prefix}pressure must be a finite number >= 1 (the ratio between the most and the "
            f"least likely item; 1: uniform), got {pressure!r}."
        )
    if math.isnan(temperature) or temperature <= 0:
        raise ValueError(
            f"{prefix}temperature must be > 0 (math.inf: uniform), got {temperature!r}."
        )
    if not 0.0 <= floor <= 1.0:
        raise ValueError(
            f"{prefix}floor must lie in [0, 1] (relative to the largest priority, 1), "
            f"got {floor!r}."
        )
    return method, pressure, temperature, floor


def _check_step(step: Any, name: str = "step") -> int:
    if isinstance(step, bool):
        raise TypeError(f"{name} must be an integer (a training step), got {step!r}.")
    try:
        value = operator.index(step)
    except TypeError:
        raise TypeError(f"{name} must be an integer (a training step), got {step!r}.") from None
    if not 0 <= value <= _INT32_MAX:
        raise ValueError(f"{name} must lie in [0, {_INT32_MAX}] (stored as int32), got {value}.")
    return value


# ---------------------------------------------------------------- state checks
#
# Each raises TypeError for a field of the wrong kind and ValueError for a wrong value, naming
# the field ("loss table state: 'ema' ..."), and never mutates anything.

_STATE_WHAT = "loss table state"
_STATE_KEYS = (
    "num_items",
    "decay",
    "prior",
    "relax_steps",
    "step",
    "snapshot_step",
    "num_nonfinite",
    "ema",
    "last_seen",
    "snapshot",
    "min_last_seen",  # version 2
)


def _state_int(
    state: Mapping[str, Any], key: str, low: int, high: int | None, hint: str = ""
) -> int:
    value = state[key]
    if not is_int(value):
        raise TypeError(
            f"{_STATE_WHAT}: {key!r} must be an integer, got {value!r} ({type(value).__name__})."
        )
    value = int(value)
    if value < low or (high is not None and value > high):
        bounds = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{_STATE_WHAT}: {key!r} = {value}, but {key} must lie in {bounds}{hint}.")
    return value


def _state_hyperparameters(state: Mapping[str, Any]) -> None:
    """Checks the saved ``decay``, ``prior`` and ``relax_steps`` (kept for reference only)."""
    decay = state["decay"]
    if not is_real(decay):
        raise TypeError(f"{_STATE_WHAT}: 'decay' must be a real number, got {decay!r}.")
    if not 0.0 <= float(decay) < 1.0:
        raise ValueError(f"{_STATE_WHAT}: 'decay' must lie in [0, 1), got {decay!r}.")
    prior = state["prior"]
    if isinstance(prior, str):
        if prior != "mean":
            raise ValueError(f"{_STATE_WHAT}: 'prior' must be 'mean' or a number, got {prior!r}.")
    elif not is_real(prior):
        raise TypeError(f"{_STATE_WHAT}: 'prior' must be 'mean' or a number, got {prior!r}.")
    elif not math.isfinite(float(prior)):
        raise ValueError(f"{_STATE_WHAT}: 'prior' must be finite, got {prior!r}.")
    relax = state["relax_steps"]
    if relax is None:
        return
    if not is_real(relax):
        raise TypeError(
            f"{_STATE_WHAT}: 'relax_steps' must be None or a number > 0, got {relax!r}."
        )
    if not (math.isfinite(float(relax)) and float(relax) > 0):
        raise ValueError(
            f"{_STATE_WHAT}: 'relax_steps' must be None or a finite number > 0, got {relax!r}."
        )


def _state_array(
    state: Mapping[str, Any], key: str, dtype: Any, size: int, meaning: str
) -> np.ndarray:
    """A numpy copy of a 1-D tensor or array field of exactly ``dtype`` and ``size`` entries."""
    value = state[key]
    want = np.dtype(dtype)
    expected = f"{want.name} of shape ({size},)"
    if isinstance(value, torch.Tensor):
        got_dtype, shape = str(value.dtype).removeprefix("torch."), tuple(value.shape)
        ok_dtype = value.dtype == torch.from_numpy(np.zeros(0, dtype=want)).dtype
    elif isinstance(value, np.ndarray):
        got_dtype, shape = value.dtype.name, value.shape
        ok_dtype = value.dtype == want
    else:
        raise TypeError(
            f"{_STATE_WHAT}: {key!r} must be a tensor or numpy array, {expected} {meaning}; got "
            f"{type(value).__name__}."
        )
    if not ok_dtype or shape != (size,):
        entries = f" ({math.prod(shape)} entries, expected {size})" if shape != (size,) else ""
        raise ValueError(
            f"{_STATE_WHAT}: {key!r} must be {expected}, got {got_dtype} of shape {shape}{entries}."
        )
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().copy()
    return value.copy()


def _chunks(n: int) -> Iterator[slice]:
    for start in range(0, n, _CHUNK):
        yield slice(start, min(start + _CHUNK, n))


def _exact_sum(values: np.ndarray) -> int:
    """Σ of float32 ``values``, exactly, in units of 2^−149 (the float32 quantum): a Python int.

    A running float64 sum of float32 EMAs drifts once they span more than 2^29 in magnitude
    (e.g. 1e-9 and 10), so it would depend on the order of updates and a restored table (which
    recounts) would differ from the uninterrupted one. Exact integers make the sum a function of
    the EMAs alone. Each float32 is m · 2^(e − 24) with an integer |m| < 2^24; the m are summed
    per exponent e (below 2^53 per chunk, so exact in float64), then shifted into place.
    """
    total = 0
    for part in _chunks(values.size):
        mant, exp = np.frexp(values[part].astype(np.float64))
        m = np.ldexp(mant, 24)  # integers, |m| < 2^24
        bucket = exp - _EXP_MIN
        sums = np.bincount(bucket, weights=m, minlength=0)
        for offset in np.flatnonzero(sums).tolist():
            shift = offset + _EXP_MIN - 24 + 149
            s_int = int(sums[offset])
            # exact: every float32 is a multiple of 2^-149, so is each bucket's sum
            total += s_int << shift if shift >= 0 else s_int >> -shift
    return total


def _recount(ema: np.ndarray, last: np.ndarray) -> tuple[int, int, int, int]:
    """(number seen, Σ EMA over seen in units of 2^−149, Σ last_seen over seen, min last_seen
    or −1), exactly."""
    num_seen, sum_ema, sum_last, min_last = 0, 0, 0, -1
    for part in _chunks(last.size):
        seen_last = last[part]
        seen = seen_last >= 0
        count = int(np.count_nonzero(seen))
        if count == 0:
            continue
        seen_last = seen_last[seen]
        num_seen += count
        sum_ema += _exact_sum(ema[part][seen])
        sum_last += int(np.sum(seen_last, dtype=np.int64))
        low = int(seen_last.min())
        min_last = low if min_last < 0 else min(min_last, low)
    return num_seen, sum_ema, sum_last, min_last


class LossTable:
    """Fixed-size per-item loss memory (EMA + last-seen step) and sampling priorities from it.

    Args:
        num_items: N, the number of items (indices 0..N−1).
        decay: EMA decay in ``[0, 1)``; 0 keeps only the latest loss (Loshchilov & Hutter).
        prior: estimate of unseen items, and the value stale ones relax toward: ``"mean"`` (the
            running mean of the seen EMAs; 0 before anything is seen) or a finite number.
        relax_steps: time constant of the relaxation toward the prior, in steps; None: no
            relaxation (an EMA keeps its value however stale).
        snapshot_size: most order statistics kept by :meth:`refresh` for ranking (>= 2); the
            snapshot is exact when N <= snapshot_size.

    Before the first :meth:`refresh` the snapshot is "every item at the initial prior".

    Example:
        >>> table = LossTable(4, decay=0.5)
        >>> table.update(np.array([0, 1, 1]), np.array([2.0, 1.0, 3.0]), step=0)
        0
        >>> table.estimates(np.arange(4), step=0).tolist()  # item 1: mean of 1 and 3
        [2.0, 2.0, 2.0, 2.0]
        >>> table.update(np.array([0, 2]), np.array([4.0, 0.5]), step=1)
        0
        >>> table.estimates(np.arange(4), step=1).tolist()  # unseen item 3: mean of seen EMAs
        [3.0, 2.0, 0.5, 1.8333333333333333]
        >>> table.refresh(step=1)
        >>> table.priorities(np.arange(4), step=1, pressure=8.0).round(6).tolist()
        [1.0, 0.5, 0.125, 0.25]
    """

    def __init__(
        self,
        num_items: int,
        *,
        decay: float = 0.9,
        prior: str | float = "mean",
        relax_steps: float | None = None,
        snapshot_size: int = DEFAULT_SNAPSHOT_SIZE,
    ) -> None:
        if isinstance(num_items, bool) or not isinstance(num_items, (int, np.integer)):
            raise TypeError(f"num_items must be an integer, got {num_items!r}.")
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items}.")
        decay, prior, relax_steps = check_table_params(decay, prior, relax_steps)
        if isinstance(snapshot_size, bool) or not isinstance(snapshot_size, (int, np.integer)):
            raise TypeError(f"snapshot_size must be an integer, got {snapshot_size!r}.")
        if snapshot_size < 2:
            raise ValueError(f"snapshot_size must be >= 2, got {snapshot_size}.")
        self._n = int(num_items)
        self._decay = decay
        self._prior: str | float = prior
        self._relax = relax_steps
        self._snapshot_size = int(snapshot_size)
        self._ema = np.zeros(self._n, dtype=np.float32)
        self._last = np.full(self._n, -1, dtype=np.int32)
        self._step = -1
        self._num_seen = 0
        self._sum_ema = 0  # Σ EMA over seen items, exactly, in units of 2^-149
        self._sum_last = 0
        self._min_last = -1
        self._nonfinite = 0
        initial = 0.0 if isinstance(prior, str) else prior
        self._snapshot = np.full(min(self._n, self._snapshot_size), initial, dtype=np.float32)
        self._snapshot_step = -1

    # ------------------------------------------------------------ properties

    @property
    def num_items(self) -> int:
        """N, the number of items."""
        return self._n

    @property
    def decay(self) -> float:
        """EMA decay."""
        return self._decay

    @property
    def prior(self) -> str | float:
        """``"mean"`` or the constant prior."""
        return self._prior

    @property
    def relax_steps(self) -> float | None:
        """Relaxation time constant in steps (None: no relaxation)."""
        return self._relax

    @property
    def step(self) -> int:
        """Step of the latest :meth:`update` (−1 before the first)."""
        return self._step

    @property
    def snapshot_step(self) -> int:
        """Step of the latest :meth:`refresh` (−1 before the first)."""
        return self._snapshot_step

    @property
    def num_seen(self) -> int:
        """Number of items seen at least once."""
        return self._num_seen

    @property
    def num_nonfinite(self) -> int:
        """Total number of non-finite losses ignored by :meth:`update` so far."""
        return self._nonfinite

    def prior_value(self) -> float:
        """The current prior: the constant, or the mean of the seen EMAs (0 if none seen).

        Example:
            >>> table = LossTable(3)
            >>> _ = table.update([0, 1], [1.0, 2.0], step=0)
            >>> table.prior_value()
            1.5
        """
        if not isinstance(self._prior, str):
            return self._prior
        return self._sum_ema / (self._num_seen << 149) if self._num_seen else 0.0

    def memory_bytes(self) -> int:
        """Bytes held: 8 per item (float32 EMA + int32 step) plus 4 per snapshot entry.

        Example:
            >>> LossTable(1_000_000).memory_bytes()  # 8 MB + a 65,536-entry snapshot
            8262144
        """
        return int(self._ema.nbytes + self._last.nbytes + self._snapshot.nbytes)

    def coverage(self) -> float:
        """Share of items seen at least once.

        Example:
            >>> table = LossTable(4)
            >>> _ = table.update([0, 0, 3], [1.0, 2.0, 3.0], step=0)
            >>> table.coverage()
            0.5
        """
        return self._num_seen / self._n

    def staleness(self, step: int) -> dict[str, float]:
        """Steps since last seen at ``step``, over the seen items: ``{"mean", "max"}``.

        O(1). ``mean`` is exact (the sum of last-seen steps is kept per update). ``max`` uses
        the oldest last-seen step found by the latest :meth:`refresh` (or the first update),
        so between refreshes it is an upper bound. Both are 0 while nothing has been seen.

        Example:
            >>> table = LossTable(4)
            >>> _ = table.update([0, 1], [1.0, 1.0], step=2)
            >>> _ = table.update([1], [1.0], step=6)
            >>> table.staleness(10)
            {'mean': 6.0, 'max': 8.0}
        """
        step = _check_step(step)
        if self._num_seen == 0:
            return {"mean": 0.0, "max": 0.0}
        mean = step - self._sum_last / self._num_seen
        return {"mean": max(mean, 0.0), "max": float(max(step - self._min_last, 0))}

    # ------------------------------------------------------------ validation

    def _index(self, index: Any) -> np.ndarray:
        idx = np.asarray(from_tensor(index))
        if idx.ndim != 1:
            raise ValueError(f"index must be 1-D, got shape {idx.shape}.")
        if idx.size == 0:
            return np.zeros(0, dtype=np.int64)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"index must hold integers (item indices), got dtype {idx.dtype}.")
        idx = idx.astype(np.int64, copy=False)
        bad = (idx < 0) | (idx >= self._n)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"index out of range: index[{first}] = {int(idx[first])}, but the table holds "
                f"items 0..{self._n - 1}; build the table with the data set's length."
            )
        return idx

    def _losses(self, losses: Any, size: int) -> np.ndarray:
        values = np.asarray(from_tensor(losses))
        if values.dtype == np.bool_ or values.dtype.kind == "c":
            raise TypeError(f"losses must be real numbers, got dtype {values.dtype}.")
        values = values.astype(np.float64, copy=False)
        if values.shape != (size,):
            raise ValueError(
                f"losses have shape {values.shape} but index has {size} entries; "
                "give one loss per index."
            )
        return values

    # ------------------------------------------------------------ updates

    def _parse_update(
        self, index: Any, losses: Any, step: Any
    ) -> tuple[np.ndarray, np.ndarray, int]:
        idx = self._index(index)
        values = self._losses(losses, idx.size)
        step = _check_step(step)
        if step < self._step:
            raise ValueError(
                f"step {step} is earlier than the latest update's step {self._step}; steps must "
                "not go backwards (restore the table's state together with the step counter)."
            )
        return idx, values, step

    def check_update(self, index: Any, losses: Any, step: int) -> None:
        """Raises exactly what :meth:`update` would raise for these arguments, changing nothing.

        Example:
            >>> table = LossTable(3)
            >>> try:
            ...     table.check_update([3], [1.0], step=0)
            ... except ValueError as error:
            ...     print(str(error)[:40])
            index out of range: index[0] = 3, but th
            >>> table.step  # unchanged
            -1
        """
        self._parse_update(index, losses, step)

    def update(self, index: Any, losses: Any, step: int) -> int:
        """Folds one (global) batch of per-item losses into the table.

        First sighting: ``EMA = loss``; later: ``EMA ← decay · EMA + (1 − decay) · loss``; the
        item's last-seen step becomes ``step``. An index repeated within the batch counts as
        one observation of the mean of its finite losses (deterministic, order-free).
        Non-finite losses are ignored, counted in :attr:`num_nonfinite` and returned. Finite
        losses beyond the float32 range are clipped to it. O(B log B) for a batch of B.

        Args:
            index: 1-D integer item indices.
            losses: 1-D losses, one per index.
            step: the training step, an integer >= 0 and >= the previous update's step
                (several updates at one step are fine, e.g. gradient accumulation).

        Returns:
            the number of non-finite losses ignored in this batch.

        Example:
            >>> table = LossTable(3, decay=0.9)
            >>> table.update([0, 1], [1.0, float("nan")], step=0)
            1
            >>> _ = table.update([0], [2.0], step=1)
            >>> round(float(table.estimates([0], step=1)[0]), 6)  # 0.9 · 1 + 0.1 · 2
            1.1
        """
        idx, values, step = self._parse_update(index, losses, step)
        finite = np.isfinite(values)
        num_bad = int(values.size - np.count_nonzero(finite))
        if num_bad:
            idx, values = idx[finite], values[finite]
        if idx.size:
            items, inverse = np.unique(idx, return_inverse=True)
            values = np.clip(values, -_F32_MAX, _F32_MAX)  # sums of these cannot overflow
            counts = np.bincount(inverse, minlength=items.size)
            mean = np.bincount(inverse, weights=values, minlength=items.size) / counts
            old_last = self._last[items]
            seen = old_last >= 0
            old = self._ema[items].astype(np.float64)
            new = np.where(seen, self._decay * old + (1.0 - self._decay) * mean, mean)
            new32 = np.clip(new, -_F32_MAX, _F32_MAX).astype(np.float32)
            num_new = int(items.size - np.count_nonzero(seen))
            self._sum_ema += _exact_sum(new32) - _exact_sum(self._ema[items][seen])
            self._sum_last += step * int(items.size) - int(np.sum(old_last[seen], dtype=np.int64))
            if self._num_seen == 0:
                self._min_last = step
            self._num_seen += num_new
            self._ema[items] = new32
            self._last[items] = step
        self._step = step
        self._nonfinite += num_bad
        return num_bad

    # ------------------------------------------------------------ estimates

    def _estimate(self, ema: np.ndarray, last: np.ndarray, step: int) -> np.ndarray:
        prior = self.prior_value()
        est = ema.astype(np.float64)
        if self._relax is not None:
            age = np.maximum(step - last.astype(np.int64), 0)
            est = prior + (est - prior) * np.exp(-age / self._relax)
        return np.where(last >= 0, est, prior)

    def estimates(self, index: Any, step: int) -> np.ndarray:
        """Loss estimates (float64) of the given items at ``step``.

        Unseen items: the prior. Seen items: their EMA, or with ``relax_steps``
        ``prior + (EMA − prior) · exp(−max(step − last_seen, 0) / relax_steps)``.

        Example:
            >>> table = LossTable(2, prior=0.0, relax_steps=10)
            >>> _ = table.update([0], [1.0], step=0)
            >>> table.estimates([0, 1], step=10).round(4).tolist()  # e^(−1), and the prior
            [0.3679, 0.0]
        """
        idx = self._index(index)
        step = _check_step(step)
        return self._estimate(self._ema[idx], self._last[idx], step)

    def refresh(self, step: int) -> None:
        """Re-sorts all estimates at ``step`` into the ranking snapshot: O(N log N).

        Also recomputes the oldest last-seen step used by :meth:`staleness` (the running sums
        are exact already). Call it every so many steps, then push
        :meth:`all_priorities` to the sampler.

        Example:
            >>> table = LossTable(3, decay=0.0)
            >>> _ = table.update([0, 1, 2], [3.0, 1.0, 2.0], step=0)
            >>> table.refresh(step=0)
            >>> table.snapshot_step
            0
        """
        step = _check_step(step)
        num_seen, sum_ema, sum_last, min_last = _recount(self._ema, self._last)
        self._num_seen, self._sum_ema, self._sum_last, self._min_last = (
            num_seen,
            sum_ema,
            sum_last,
            min_last,
        )
        values = np.empty(self._n, dtype=np.float32)
        for part in _chunks(self._n):
            values[part] = self._estimate(self._ema[part], self._last[part], step)
        values.sort()
        size = min(self._n, self._snapshot_size)
        if size < self._n:
            picks = np.round(np.linspace(0.0, self._n - 1.0, size)).astype(np.int64)
            values = values[picks]
        self._snapshot = values
        self._snapshot_step = step

    # ------------------------------------------------------------ priorities

    def _check_priority_args(
        self, method: str, pressure: float, temperature: float, floor: float
    ) -> tuple[str, float, float, float]:
        return check_priority_params(method, pressure, temperature, floor)

    def _priority(
        self, est: np.ndarray, method: str, pressure: float, temperature: float, floor: float
    ) -> np.ndarray:
        snapshot = self._snapshot
        if method == "rank":
            size = snapshot.size
            if size < 2 or pressure == 1.0:
                p = np.ones(est.size, dtype=np.float64)
            else:
                query = est.astype(np.float32)
                low = np.searchsorted(snapshot, query, side="left")
                high = np.searchsorted(snapshot, query, side="right")
                # mid-rank position from the bottom; 0 = lowest, size − 1 = highest
                position = (low + high - 1) / 2.0
                from_top = 1.0 - np.clip(position / (size - 1), 0.0, 1.0)
                p = np.power(pressure, -from_top)
        elif math.isinf(temperature):
            p = np.ones(est.size, dtype=np.float64)
        else:
            top = float(snapshot[-1])
            p = np.exp(np.minimum((est - top) / temperature, 0.0))
        return np.clip(p, floor, 1.0)

    def priorities(
        self,
        index: Any,
        step: int,
        *,
        method: str = "rank",
        pressure: float = 100.0,
        temperature: float = 1.0,
        floor: float = 1e-6,
    ) -> np.ndarray:
        """Sampling priorities (float64, finite, in ``[floor, 1]``) of the given items.

        Each item's :meth:`estimates` at ``step`` is placed against the snapshot of the
        latest :meth:`refresh`. ``"rank"``: ``pressure^(−u)`` with ``u ∈ [0, 1]`` the item's
        relative mid-rank from the top (0: highest estimate, 1: lowest), so distinct items
        span exactly ``[1/pressure, 1]``. ``"softmax"``: ``exp((estimate − max) / temperature)``
        with ``max`` the snapshot's top, capped at 1. Both are clipped below at ``floor``.

        Args:
            index: 1-D integer item indices.
            step: the step to estimate at.
            method: ``"rank"`` or ``"softmax"``.
            pressure: selection pressure s >= 1 (Loshchilov & Hutter; 1: uniform).
            temperature: softmax temperature > 0 (``math.inf``: uniform).
            floor: smallest priority, relative to the largest (1); 0 allows underflow to 0.

        Example:
            >>> table = LossTable(3, decay=0.0)
            >>> _ = table.update([0, 1, 2], [3.0, 1.0, 2.0], step=0)
            >>> table.refresh(step=0)
            >>> table.priorities([0, 1, 2], step=0, pressure=100.0).tolist()
            [1.0, 0.01, 0.1]
            >>> table.priorities([0, 1, 2], step=0, method="softmax").round(4).tolist()
            [1.0, 0.1353, 0.3679]
        """
        method, pressure, temperature, floor = self._check_priority_args(
            method, pressure, temperature, floor
        )
        est = self.estimates(index, step)
        return self._priority(est, method, pressure, temperature, floor)

    def all_priorities(
        self,
        step: int,
        *,
        method: str = "rank",
        pressure: float = 100.0,
        temperature: float = 1.0,
        floor: float = 1e-6,
        dtype: Any = np.float64,
    ) -> np.ndarray:
        """:meth:`priorities` of all N items (same snapshot, same values), computed in chunks.

        Args:
            dtype: output dtype, float64 or float32 (half the memory for a large N).

        Example:
            >>> table = LossTable(3, decay=0.0)
            >>> _ = table.update([0, 1, 2], [3.0, 1.0, 2.0], step=0)
            >>> table.refresh(step=0)
            >>> table.all_priorities(step=0, pressure=4.0).tolist()
            [1.0, 0.25, 0.5]
        """
        method, pressure, temperature, floor = self._check_priority_args(
            method, pressure, temperature, floor
        )
        step = _check_step(step)
        out_dtype = np.dtype(dtype)
        if out_dtype not in (np.dtype(np.float64), np.dtype(np.float32)):
            raise ValueError(f"dtype must be float64 or float32, got {out_dtype}.")
        out = np.empty(self._n, dtype=out_dtype)
        for part in _chunks(self._n):
            est = self._estimate(self._ema[part], self._last[part], step)
            out[part] = self._priority(est, method, pressure, temperature, floor)
        return out

    # ------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Versioned state: the per-item arrays and the snapshot (as CPU tensors, copies).

        Hyper-parameters are saved for reference; :meth:`load_state_dict` keeps this table's.
        ``min_last_seen`` is the oldest last-seen step as :meth:`staleness` knows it (exact at
        the latest :meth:`refresh`, a lower bound between refreshes), so a restored table
        reports the same staleness as the uninterrupted one.

        Example:
            >>> state = LossTable(3).state_dict()
            >>> state["version"], state["num_items"], state["ema"].dtype
            (2, 3, torch.float32)
        """
        return {
            "version": _STATE_VERSION,
            "num_items": self._n,
            "decay": self._decay,
            "prior": self._prior,
            "relax_steps": self._relax,
            "step": self._step,
            "snapshot_step": self._snapshot_step,
            "num_nonfinite": self._nonfinite,
            "min_last_seen": self._min_last,
            "ema": torch.from_numpy(self._ema.copy()),
            "last_seen": torch.from_numpy(self._last.copy()),
            "snapshot": torch.from_numpy(self._snapshot.copy()),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict` (tensors or numpy arrays); validates all before changing.

        Checked, each error naming the field: a mapping with every key of :meth:`state_dict`;
        ``version`` is 2 (or 1, which lacks ``min_last_seen``); ``num_items`` is this table's
        N; ``decay``, ``prior`` and ``relax_steps`` are well-formed (this table keeps its own);
        ``step`` and ``snapshot_step`` are integers in ``[-1, 2^31 − 1]``; ``num_nonfinite``
        an integer >= 0; ``ema`` float32 of shape (N,), finite; ``last_seen`` int32 of shape
        (N,) in ``[-1, step]``; ``snapshot`` float32 of shape (min(N, snapshot_size),),
        finite and sorted ascending; ``min_last_seen`` −1 while no item is seen, else an
        integer in ``[0, oldest last_seen]``.

        Raises:
            TypeError: not a mapping, or a field of the wrong kind (e.g. a float step).
            ValueError: another version, another ``num_items``, a missing key, or a malformed
                value; the table is left unchanged.

        Example:
            >>> table = LossTable(3)
            >>> _ = table.update([1], [2.0], step=4)
            >>> other = LossTable(3)
            >>> other.load_state_dict(table.state_dict())
            >>> other.estimates([1], step=4).tolist(), other.step
            ([2.0], 4)
            >>> broken = {**table.state_dict(), "ema": np.zeros(2, dtype=np.float32)}
            >>> other.load_state_dict(broken)
            Traceback (most recent call last):
            ...
            ValueError: loss table state: 'ema' must be float32 of shape (3,), got float32 of shape (2,) (2 entries, expected 3).
        """  # noqa: E501
        if not isinstance(state, Mapping):
            raise TypeError(
                f"not a LossTable state: expected a mapping from state_dict(), got "
                f"{type(state).__name__}."
            )
        if "version" not in state:
            raise ValueError("not a LossTable state (expected a mapping with a 'version' key).")
        version = state["version"]
        if not is_int(version) or version not in (1, _STATE_VERSION):
            raise ValueError(
                f"LossTable state version {version!r} is not supported ({_STATE_WHAT}: "
                f"'version' must be 1 or {_STATE_VERSION}); re-create the state with a matching "
                "reweight version."
            )
        keys = _STATE_KEYS if version == _STATE_VERSION else _STATE_KEYS[:-1]
        missing = [key for key in keys if key not in state]
        if missing:
            raise ValueError(f"LossTable state lacks key(s): {', '.join(missing)}.")
        num_items = state["num_items"]
        if not is_int(num_items) or num_items != self._n:
            raise ValueError(
                f"this checkpoint's loss table has num_items={num_items!r} but this table has "
                f"{self._n}; resume with the same data set, or start a fresh table."
            )
        _state_hyperparameters(state)
        step = _state_int(state, "step", -1, _INT32_MAX, " (-1: before the first update)")
        snapshot_step = _state_int(
            state, "snapshot_step", -1, _INT32_MAX, " (-1: before the first refresh)"
        )
        nonfinite = _state_int(state, "num_nonfinite", 0, None, " (a count)")
        size = min(self._n, self._snapshot_size)
        ema = _state_array(state, "ema", np.float32, self._n, "(num_items)")
        last = _state_array(state, "last_seen", np.int32, self._n, "(num_items)")
        snapshot = _state_array(
            state, "snapshot", np.float32, size, "(min(num_items, snapshot_size))"
        )
        for part in _chunks(self._n):
            bad = ~np.isfinite(ema[part])
            if bad.any():
                first = part.start + int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"{_STATE_WHAT}: 'ema' holds non-finite values: entry {first} is "
                    f"{float(ema[first])!r}; every EMA must be finite."
                )
            chunk = last[part]
            low, high = int(chunk.min()), int(chunk.max())
            if low < -1 or high > step:
                raise ValueError(
                    f"{_STATE_WHAT}: 'last_seen' must lie in [-1, step={step}] (-1: never seen; "
                    f"no item is seen after the latest update), got values in [{low}, {high}]."
                )
        if not np.isfinite(snapshot).all():
            raise ValueError(f"{_STATE_WHAT}: 'snapshot' must be finite and sorted ascending.")
        if bool(np.any(snapshot[1:] < snapshot[:-1])):
            first = int(np.flatnonzero(snapshot[1:] < snapshot[:-1])[0])
            raise ValueError(
                f"{_STATE_WHAT}: 'snapshot' must be finite and sorted ascending; entry "
                f"{first + 1} ({float(snapshot[first + 1])!r}) is below entry {first} "
                f"({float(snapshot[first])!r})."
            )
        num_seen, sum_ema, sum_last, min_last = _recount(ema, last)
        if version == _STATE_VERSION:
            low, high = (-1, -1) if num_seen == 0 else (0, min_last)
            saved = _state_int(
                state,
                "min_last_seen",
                low,
                high,
                " (-1 while no item is seen, else at most the oldest 'last_seen')",
            )
            min_last = saved
        self._ema = ema
        self._last = last
        self._snapshot = snapshot
        self._step = step
        self._snapshot_step = snapshot_step
        self._nonfinite = nonfinite
        self._num_seen, self._sum_ema, self._sum_last, self._min_last = (
            num_seen,
            sum_ema,
            sum_last,
            min_last,
        )

    def __repr__(self) -> str:
        return (
            f"LossTable(num_items={self._n}, decay={self._decay}, prior={self._prior!r}, "
            f"relax_steps={self._relax}, seen={self._num_seen}, step={self._step})"
        )
