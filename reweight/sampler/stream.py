"""The draw stream: one global sequence of draw positions, shared by all ranks, drawn on demand.

Position p of the global sequence is drawn from two uniforms that are a pure function of
(seed, p) (``reweight.sampler._kernels.position_uniforms``) and the weights in force when it is
drawn. Rank r of W takes the positions ``W·j + r`` for its local counter j = 0, 1, 2, ...: ranks
never build index lists and never leave the one sequence, whatever the world size or batch size.

*On demand* means an update of the weights reaches every draw not yet handed to the DataLoader:
draws are made in small blocks when the loader asks for them, and any change of the weights
discards the block's draws not yet handed out (they are drawn again, from the new weights, when
asked for). The block size adapts to what the loader asks for between two updates (about one
batch), so the cost of a draw stays that of a batched draw.

Every rank draws the positions of every rank (W times the draws of its own slice, still a small
cost next to a training step), so each holds the *records* of the global sequence: item and
probability q at draw time of every position handed out and not yet trained on. This gives

* the draw-time q of every item of the global batch, for the importance correction p/q
  (:meth:`DrawStream.match` finds a batch's records, :meth:`DrawStream.commit` consumes them);
* a checkpoint written by any one rank that holds every rank's position and the draws in
  flight, replayed first after a restore, so a resumed run continues the uninterrupted one;
* a new iterator (a new epoch, a new DataLoader iterator, a restarted run) that starts at the
  first draw not yet trained on: draws handed out but dropped with an abandoned iterator (a
  prefetching loader at the end of an epoch) are replayed, never lost and never redrawn.

Epochs are fixed ranges of local counters: epoch e is ``[e·S, (e+1)·S)`` with S draws per rank
per epoch; an iterator ends at the end of the epoch it starts in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from reweight._checks import read_state_int, read_state_vector

__all__ = ["DrawMatch", "DrawStream"]

_WHAT = "draw stream state"  # how errors name a bad state

_MIN_BLOCK = 8  # local draws per block at first and after an update
_MAX_GLOBAL_BLOCK = 8192  # global draws per block when nothing changes the weights
_ENDLESS = 1 << 62  # the end of an infinite stream's iterator
_UNTRACKED_WINDOW = 1 << 16  # records kept behind the position until training reports use

DrawFn = Callable[[int, int], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class DrawMatch:
    """The records of one global batch: q at draw time, the step each was drawn at, and the
    consumption counters to commit once the batch has been used."""

    q: np.ndarray
    clock: np.ndarray
    consumed: np.ndarray


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


class _Records:
    """Item, draw-time q and draw step of consecutive global positions from ``start``, in
    growable arrays (appending and forgetting the oldest cost O(new), not O(held))."""

    def __init__(self, start: int = 0) -> None:
        self.start = start
        self._off = 0
        self._len = 0
        self._items = np.empty(64, dtype=np.int64)
        self._q = np.empty(64, dtype=np.float64)
        self._clock = np.empty(64, dtype=np.int64)

    @property
    def size(self) -> int:
        return self._len

    @property
    def end(self) -> int:
        """Global position after the last record."""
        return self.start + self._len

    @property
    def items(self) -> np.ndarray:
        return self._items[self._off : self._off + self._len]

    @property
    def q(self) -> np.ndarray:
        return self._q[self._off : self._off + self._len]

    @property
    def clock(self) -> np.ndarray:
        return self._clock[self._off : self._off + self._len]

    def append(self, items: np.ndarray, q: np.ndarray, clock: int) -> None:
        n = items.size
        if self._off + self._len + n > self._items.size:
            capacity = max(64, _next_pow2(2 * (self._len + n)))
            for name in ("_items", "_q", "_clock"):
                old = getattr(self, name)
                new = np.empty(capacity, dtype=old.dtype)
                new[: self._len] = old[self._off : self._off + self._len]
                setattr(self, name, new)
            self._off = 0
        at = self._off + self._len
        self._items[at : at + n] = items
        self._q[at : at + n] = q
        self._clock[at : at + n] = clock
        self._len += n

    def truncate(self, keep: int) -> None:
        """Keeps the first ``keep`` records."""
        self._len = min(self._len, max(0, keep))

    def drop(self, n: int) -> None:
        """Forgets the first ``n`` records."""
        n = min(max(0, n), self._len)
        self._off += n
        self._len -= n
        self.start += n

    def replace(self, start: int, items: np.ndarray, q: np.ndarray, clock: np.ndarray) -> None:
        self.start, self._off, self._len = start, 0, 0
        self.append(items, q, 0)
        self._clock[: items.size] = clock


class DrawStream:
    """Hands out this rank's slice of one global draw sequence and remembers the draws in
    flight (see the module docstring).

    Args:
        draw: ``draw(first, count) -> (items, q)`` draws global positions
            ``first .. first + count - 1`` from the current weights.
        num_items: items in the data set (records outside ``[0, num_items)`` are rejected).

    Example:
        >>> import numpy as np
        >>> def draw(first, count):  # position p draws item p % 5, with q = 0.2
        ...     return np.arange(first, first + count) % 5, np.full(count, 0.2)
        >>> stream = DrawStream(draw, num_items=5)
        >>> it = stream.iterate()
        >>> [next(it) for _ in range(7)], stream.yielded
        ([0, 1, 2, 3, 4, 0, 1], 7)
    """

    def __init__(self, draw: DrawFn, num_items: int) -> None:
        self._draw = draw
        self.num_items = int(num_items)
        self.rank = 0
        self.world_size = 1
        self.samples_per_rank: int | None = None  # None: infinite
        self.clock = 0
        self._generation = 0
        # Called before each draw is handed out while set (see ReweightSampler.before_draw).
        self.before_draw: Callable[[], None] | None = None
        self._reset(yielded=0, consumed=np.zeros(1, dtype=np.int64), tracking=False)

    # ------------------------------------------------------------------ bookkeeping

    def _reset(self, yielded: int, consumed: np.ndarray, tracking: bool) -> None:
        self._yielded = int(yielded)  # this rank's local counter of draws handed out
        self._consumed = consumed.astype(np.int64)  # every rank's counter of draws trained on
        self._tracking = tracking  # whether training reports what it consumed (match/commit)
        floor = int(self._consumed.min()) if tracking else self._yielded
        self._records = _Records(self.world_size * floor)
        self._queue: deque[int] = deque()  # this rank's drawn items from local counter _yielded
        self._block = _MIN_BLOCK
        self._mark = self._yielded  # local counter at the last invalidation
        self._high = self._yielded  # highest local counter handed out (before a replay)
        self._iter_end = _ENDLESS

    @property
    def _drawn_end(self) -> int:
        """Global position after the last record."""
        return self._records.end

    @property
    def _handed_end(self) -> int:
        """Local counter below which every draw has been handed out at some time (they are
        kept whatever the weights do; the draws above it may be drawn again)."""
        return max(self._yielded, self._high)

    @property
    def yielded(self) -> int:
        """This rank's local counter: draws handed out so far."""
        return self._yielded

    @property
    def consumed(self) -> int:
        """This rank's draws trained on (reported by :meth:`commit`; untracked: handed out)."""
        return int(self._consumed[self.rank]) if self._tracking else self._yielded

    @property
    def in_flight(self) -> int:
        """Global draws handed out to the loaders and not trained on yet (the loader's prefetch)."""
        if not self._tracking:
            return 0
        return int(np.sum(np.maximum(self._yielded - self._consumed, 0)))

    def set_world(self, rank: int, world_size: int) -> None:
        """Moves to another rank / world size, keeping the global position consumed."""
        if (rank, world_size) == (self.rank, self.world_size):
            return
        if world_size != self.world_size:
            position = self.world_size * self.consumed
            if position % world_size or self.in_flight:
                raise ValueError(
                    f"cannot move the draw stream from {self.world_size} to {world_size} ranks "
                    f"at global position {position} with {self.in_flight} draws in flight; "
                    "change the world size only at a position it divides, with no draws in "
                    "flight (or start a new stream)."
                )
            local = position // world_size
            self.rank, self.world_size = int(rank), int(world_size)
            self._reset(local, np.full(world_size, local, dtype=np.int64), self._tracking)
            return
        self.rank = int(rank)
        self._truncate(self.world_size * self._handed_end)
        self._rebuild_queue()

    def invalidate(self) -> None:
        """Drops the draws not yet handed out (the weights changed: they are drawn again)."""
        handed_out = self._yielded - self._mark
        if handed_out > 0:
            # About one batch per rank is asked for between two updates: draw that many.
            self._block = max(_MIN_BLOCK, _next_pow2(handed_out))
        self._mark = self._yielded
        if self._drawn_end > self.world_size * self._handed_end or self._queue:
            self._truncate(self.world_size * self._handed_end)
            self._rebuild_queue()

    def _truncate(self, end: int) -> None:
        """Drops the records from global position ``end`` on, and this rank's queue."""
        self._queue.clear()
        self._records.truncate(end - self._records.start)

    def _rebuild_queue(self) -> None:
        """This rank's records from its local counter on, as the queue to hand out."""
        self._queue.clear()
        first = self.world_size * self._yielded + self.rank - self._records.start
        if first >= 0:
            self._queue.extend(self._records.items[first :: self.world_size].tolist())

    def _extend(self) -> None:
        """Draws the next block of global positions (every rank's)."""
        world = self.world_size
        if not self._tracking:
            self._trim_records(self.world_size * self._yielded - _UNTRACKED_WINDOW)
        local_end = self._drawn_end // world
        limit = _MAX_GLOBAL_BLOCK // world or 1
        count = min(self._block, limit)
        count = max(1, min(count, self._iter_end - local_end))
        items, q = self._draw(self._drawn_end, count * world)
        self._records.append(items, q, self.clock)
        self._queue.extend(items[self.rank :: world].tolist())
        if count == self._block:
            self._block = min(2 * self._block, limit)

    def _trim_records(self, floor: int | None = None) -> None:
        """Forgets records before global position ``floor`` (default: those every rank has
        trained on)."""
        if floor is None:
            consumed = int(self._consumed.min()) if self._tracking else self._yielded
            floor = self.world_size * consumed
        self._records.drop(floor - self._records.start)

    # ------------------------------------------------------------------ iteration

    def iterate(self) -> Iterator[int]:
        """A new iterator: from the first draw not trained on to the end of its epoch.

        An older iterator of the same stream stops (the DataLoader dropped it)."""
        self._generation += 1
        if self._tracking and self._yielded != self.consumed:
            self._high = self._handed_end
            self._yielded = self._mark = self.consumed  # replay what was not trained on
            self._rebuild_queue()
        start = self._yielded
        spr = self.samples_per_rank
        if spr is None:
            self._iter_end = _ENDLESS
        else:
            self._iter_end = (start // spr + 1) * spr
        return self._items(self._generation)

    def _items(self, generation: int) -> Iterator[int]:
        queue = self._queue  # one deque, cleared and refilled in place
        while self._generation == generation and self._yielded < self._iter_end:
            hook = self.before_draw
            if hook is not None:  # may change the weights, which empties the queue
                hook()
            if not queue:
                self._extend()
            self._yielded += 1
            yield queue.popleft()

    @property
    def epoch(self) -> int:
        """The epoch of the next draw this rank hands out (0 when infinite)."""
        if self.samples_per_rank is None:
            return 0
        return self._yielded // self.samples_per_rank

    # ------------------------------------------------------------------ consumption

    def match(self, items: np.ndarray, ranks: np.ndarray) -> DrawMatch | None:
        """The records of a global batch (rank-major: each rank's items in its order), or None
        when the batch is not the next draws of every rank (a batch that did not come from
        this stream). Draws a rank skipped (a batch never passed to training) are passed over.
        Changes nothing."""
        world = self.world_size
        if items.size == 0 or ranks.size != items.size:
            return None
        if ranks.min() < 0 or ranks.max() >= world:
            return None
        consumed = self._consumed.copy() if self._tracking else np.full(world, self._yielded)
        fast = self._match_next(items, ranks, consumed)
        if fast is not None:
            return fast
        first = self._first_unconsumed()
        q = np.empty(items.size, dtype=np.float64)
        clock = np.empty(items.size, dtype=np.int64)
        for r in range(world):
            rows = np.flatnonzero(ranks == r)
            if rows.size == 0:
                continue
            first_local = int(first[r])
            # Ranks hand out draws in step: none holds draws beyond this rank's counter.
            if self._handed_end - first_local < rows.size:
                return None
            # This rank's records from its first unconsumed draw on.
            offset = world * first_local + r - self._records.start
            if offset < 0:
                return None
            records = self._records
            mine = records.items[offset : world * self._handed_end - records.start : world]
            want = items[rows]
            start = self._find_run(mine, want)
            if start is None:
                return None
            picks = offset + world * (start + np.arange(rows.size))
            q[rows] = records.q[picks]
            clock[rows] = records.clock[picks]
            consumed[r] = first_local + start + rows.size
        return DrawMatch(q=q, clock=clock, consumed=consumed)

    def _match_next(
        self, items: np.ndarray, ranks: np.ndarray, consumed: np.ndarray
    ) -> DrawMatch | None:
        """The common case in one vectorised pass: every rank's batch is exactly its next
        draws (None otherwise; :meth:`match` then searches rank by rank)."""
        nxt = self.next_draws(ranks, consumed)
        if nxt is None or not np.array_equal(nxt[0], items):
            return None
        return nxt[1]

    def next_draws(
        self, ranks: np.ndarray, consumed: np.ndarray | None = None
    ) -> tuple[np.ndarray, DrawMatch] | None:
        """The items and records of the global batch made of every rank's next draws not
        trained on (``ranks``: the rank of each row, rank-major), or None when they have not
        all been handed out. Changes nothing."""
        world, records = self.world_size, self._records
        if consumed is None:
            consumed = self._consumed.copy() if self._tracking else np.full(world, self._yielded)
        if ranks.size == 0 or ranks.min() < 0 or ranks.max() >= world:
            return None
        counts = np.bincount(ranks, minlength=world)
        first = self._first_unconsumed()
        order = np.argsort(ranks, kind="stable")
        within = np.empty(ranks.size, dtype=np.int64)  # each row's place in its rank's batch
        within[order] = np.arange(ranks.size) - (np.cumsum(counts) - counts)[ranks[order]]
        rows = world * (first[ranks] + within) + ranks - records.start
        if rows.min() < 0 or rows.max() >= world * self._handed_end - records.start:
            return None
        present = counts > 0
        consumed = consumed.copy()
        consumed[present] = first[present] + counts[present]
        match = DrawMatch(q=records.q[rows], clock=records.clock[rows], consumed=consumed)
        return records.items[rows], match

    def _first_unconsumed(self) -> np.ndarray:
        """Every rank's first local counter not trained on (untracked until now: the first one
        this stream still holds a record of)."""
        if self._tracking:
            return self._consumed
        ranks = np.arange(self.world_size)
        return np.maximum(0, -(-(self._records.start - ranks) // self.world_size))

    @staticmethod
    def _find_run(records: np.ndarray, want: np.ndarray) -> int | None:
        """The first offset at which ``want`` appears in ``records`` (in order), or None."""
        n = want.size
        if records.size >= n and np.array_equal(records[:n], want):
            return 0
        for start in np.flatnonzero(records[: records.size - n + 1] == want[0]).tolist():
            if np.array_equal(records[start : start + n], want):
                return int(start)
        return None

    def commit(self, match: DrawMatch) -> None:
        """Marks a matched batch as trained on (its records are forgotten once every rank has)."""
        self._consumed = match.consumed.astype(np.int64)
        self._tracking = True
        self._trim_records()

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Every rank's position and the records of the draws in flight (not the block drawn
        ahead: it is drawn again, identically, from the same weights; nor the block size, which
        only changes how many positions are drawn at a time, never what they are)."""
        world = self.world_size
        consumed = self._consumed if self._tracking else np.full(world, self._yielded)
        yielded = max(self._handed_end, int(consumed.max()))
        records = self._records
        first = max(records.start, world * int(consumed.min()))
        end = max(first, min(world * yielded, self._drawn_end))
        rows = slice(first - records.start, end - records.start)
        return {
            "world_size": world,
            "yielded": yielded,
            "consumed": torch.from_numpy(consumed.astype(np.int64).copy()),
            "tracking": self._tracking,
            "records_start": first,
            "items": torch.from_numpy(records.items[rows].copy()),
            "q": torch.from_numpy(records.q[rows].copy()),
            "clock": torch.from_numpy(records.clock[rows].copy()),
        }

    def parse_state(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """Validates a :meth:`state_dict` (every field) and returns it as arrays; changes
        nothing. Raises ValueError naming the bad field."""
        fields = ("world_size", "yielded", "consumed", "tracking", "records_start", "items")
        for key in (*fields, "q", "clock"):
            if key not in state:
                raise ValueError(
                    f"draw stream state: missing field {key!r}; the state is truncated."
                )
        world = read_state_int(_WHAT, "world_size", state["world_size"], minimum=1)
        yielded = read_state_int(_WHAT, "yielded", state["yielded"], minimum=0)
        start = read_state_int(_WHAT, "records_start", state["records_start"], minimum=0)
        tracking = state["tracking"]
        if not isinstance(tracking, (bool, np.bool_)):
            raise ValueError(f"draw stream state: 'tracking' must be a bool, got {tracking!r}.")
        consumed = read_state_vector(_WHAT, "consumed", state["consumed"], np.int64)
        items = read_state_vector(_WHAT, "items", state["items"], np.int64)
        q = read_state_vector(_WHAT, "q", state["q"], np.float64)
        clock = read_state_vector(_WHAT, "clock", state["clock"], np.int64)
        if consumed.shape != (world,):
            raise ValueError(
                f"draw stream state: 'consumed' has {consumed.size} entries for world_size "
                f"{world}; the state is corrupt."
            )
        if consumed.size and (consumed.min() < 0 or consumed.max() > yielded):
            raise ValueError(
                f"draw stream state: 'consumed' {consumed.tolist()} must lie in [0, yielded="
                f"{yielded}]; the state is corrupt."
            )
        if not (items.size == q.size == clock.size):
            raise ValueError(
                f"draw stream state: 'items', 'q' and 'clock' have {items.size}, {q.size} and "
                f"{clock.size} entries; they must match (the state is corrupt)."
            )
        floor = world * int(consumed.min()) if tracking else world * yielded
        if start > floor or start + items.size < world * yielded:
            raise ValueError(
                f"draw stream state: records cover positions [{start}, {start + items.size}) "
                f"but the draws in flight are [{floor}, {world * yielded}); the state is corrupt."
            )
        if items.size and (items.min() < 0 or items.max() >= self.num_items):
            bad = items[(items < 0) | (items >= self.num_items)][0]
            raise ValueError(
                f"draw stream state: 'items' holds item {int(bad)}, outside [0, {self.num_items})"
                "; the state comes from another data set or is corrupt."
            )
        if q.size and not (np.all(np.isfinite(q)) and q.min() > 0 and q.max() <= 1):
            raise ValueError(
                "draw stream state: 'q' (draw-time probabilities) must be finite and in (0, 1]; "
                "the state is corrupt."
            )
        if clock.size and clock.min() < 0:
            raise ValueError("draw stream state: 'clock' has negative steps; the state is corrupt.")
        return {
            "world_size": world,
            "yielded": yielded,
            "consumed": consumed,
            "tracking": bool(tracking),
            "records_start": start,
            "items": items,
            "q": q,
            "clock": clock,
        }

    def apply_state(self, parsed: Mapping[str, Any]) -> None:
        """Applies a state returned by :meth:`parse_state`."""
        if parsed["world_size"] != self.world_size:
            raise ValueError(  # checked by the sampler before anything is applied
                f"the draw stream state was written by {parsed['world_size']} ranks, this run "
                f"has {self.world_size}."
            )
        self._generation += 1  # iterators of the old stream stop
        self._reset(parsed["yielded"], parsed["consumed"], parsed["tracking"])
        self._records.replace(
            parsed["records_start"], parsed["items"], parsed["q"], parsed["clock"]
        )
        self._trim_records()
        self._rebuild_queue()
