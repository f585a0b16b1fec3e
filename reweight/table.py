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
:meth:`LossTable.load_state_dict` do, after validating everything. The parameter checks, the
state format and the exact counts live in :mod:`reweight.table_state` (the checks are
re-exported here).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from reweight._checks import FLOAT32_MAX, from_tensor, item_state
from reweight.table_state import (
    PRIORITY_METHODS,
    STATE_VERSION,
    TableState,
    check_priority_params,
    check_step,
    check_table_params,
    check_track_last_seen,
    chunks,
    exact_sum,
    parse_state,
    recount,
)

__all__ = ["PRIORITY_METHODS", "LossTable", "check_priority_params", "check_table_params"]

DEFAULT_SNAPSHOT_SIZE = 1 << 16


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
        track_last_seen: keep each item's last-seen step (4 bytes per item), which
            ``relax_steps`` and :meth:`staleness` need. False (only with ``relax_steps=None``)
            halves the table to 4 bytes per item — an unseen item's EMA is NaN — with the same
            estimates and priorities; 4 GB less at 10^9 items.

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
        track_last_seen: bool = True,
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
        track_last_seen = check_track_last_seen(track_last_seen, relax_steps)
        # Unseen: last-seen step -1, or, without last-seen steps, a NaN EMA (never stored
        # otherwise: non-finite losses are ignored).
        self._last: np.ndarray | None = (
            np.full(self._n, -1, dtype=np.int32) if track_last_seen else None
        )
        self._ema = np.full(self._n, 0.0 if track_last_seen else np.nan, dtype=np.float32)
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
    def track_last_seen(self) -> bool:
        """Whether each item's last-seen step is kept (see the constructor)."""
        return self._last is not None

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
        """Bytes held: 8 per item (float32 EMA + int32 step; 4 without last-seen steps) plus 4
        per snapshot entry.

        Example:
            >>> LossTable(1_000_000).memory_bytes()  # 8 MB + a 65,536-entry snapshot
            8262144
        """
        last = 0 if self._last is None else self._last.nbytes
        return int(self._ema.nbytes + last + self._snapshot.nbytes)

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
        step = check_step(step)
        if self._last is None:
            raise ValueError(
                "staleness needs each item's last-seen step; build the table with "
                "track_last_seen=True."
            )
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
        step = check_step(step)
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
            values = np.clip(values, -FLOAT32_MAX, FLOAT32_MAX)  # sums of these cannot overflow
            counts = np.bincount(inverse, minlength=items.size)
            mean = np.bincount(inverse, weights=values, minlength=items.size) / counts
            old32 = self._ema[items]
            if self._last is None:
                seen = ~np.isnan(old32)
            else:
                old_last = self._last[items]
                seen = old_last >= 0
            old = old32.astype(np.float64)
            new = np.where(seen, self._decay * old + (1.0 - self._decay) * mean, mean)
            new32 = np.clip(new, -FLOAT32_MAX, FLOAT32_MAX).astype(np.float32)
            num_new = int(items.size - np.count_nonzero(seen))
            self._sum_ema += exact_sum(new32) - exact_sum(old32[seen])
            if self._last is not None:
                seen_last = int(np.sum(old_last[seen], dtype=np.int64))
                self._sum_last += step * int(items.size) - seen_last
                if self._num_seen == 0:
                    self._min_last = step
                self._last[items] = step
            self._num_seen += num_new
            self._ema[items] = new32
        self._step = step
        self._nonfinite += num_bad
        return num_bad

    # ------------------------------------------------------------ estimates

    def _estimate(self, part: Any, step: int) -> np.ndarray:
        """Estimates of the items ``part`` (a slice or an index array) at ``step``."""
        prior = self.prior_value()
        ema = self._ema[part]
        est = ema.astype(np.float64)
        if self._last is None:
            return np.where(np.isnan(ema), prior, est)
        last = self._last[part]
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
        step = check_step(step)
        return self._estimate(idx, step)

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
        step = check_step(step)
        num_seen, sum_ema, sum_last, min_last = recount(self._ema, self._last)
        self._num_seen, self._sum_ema, self._sum_last, self._min_last = (
            num_seen,
            sum_ema,
            sum_last,
            min_last,
        )
        values = np.empty(self._n, dtype=np.float32)
        for part in chunks(self._n):
            values[part] = self._estimate(part, step)
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
        step = check_step(step)
        out_dtype = np.dtype(dtype)
        if out_dtype not in (np.dtype(np.float64), np.dtype(np.float32)):
            raise ValueError(f"dtype must be float64 or float32, got {out_dtype}.")
        out = np.empty(self._n, dtype=out_dtype)
        for part in chunks(self._n):
            est = self._estimate(part, step)
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
            "version": STATE_VERSION,
            "num_items": self._n,
            "decay": self._decay,
            "prior": self._prior,
            "relax_steps": self._relax,
            "step": self._step,
            "snapshot_step": self._snapshot_step,
            "num_nonfinite": self._nonfinite,
            "min_last_seen": self._min_last,
            "ema": item_state(self._ema),
            "last_seen": None if self._last is None else item_state(self._last),
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
        self.apply_state(self.parse_state(state))

    def parse_state(self, state: Mapping[str, Any]) -> TableState:
        """Validates a whole :meth:`state_dict` for this table (the per-item arrays one chunk at
        a time, not copied); changes nothing. Raises as :meth:`load_state_dict`."""
        return parse_state(state, self._n, self._snapshot_size, self._last is not None)

    def apply_state(self, parsed: TableState) -> None:
        """Applies a state validated by :func:`~reweight.table_state.parse_state` (cannot fail):
        the per-item arrays are copied into this table's in place."""
        self._ema[...] = parsed.ema
        if self._last is not None:
            self._last[...] = parsed.last
        self._snapshot = parsed.snapshot.copy()
        self._step, self._snapshot_step = parsed.step, parsed.snapshot_step
        self._nonfinite, self._num_seen = parsed.nonfinite, parsed.num_seen
        self._sum_ema, self._sum_last = parsed.sum_ema, parsed.sum_last
        self._min_last = parsed.min_last

    def __repr__(self) -> str:
        return (
            f"LossTable(num_items={self._n}, decay={self._decay}, prior={self._prior!r}, "
            f"relax_steps={self._relax}, seen={self._num_seen}, step={self._step})"
        )
