"""ReweightSampler: the ``DistributedSampler`` that composes the weight tree and the draw stream.

The weights (item layout, sum pyramid, π) live in a :class:`~reweight.sampler.tree.WeightTree`;
the global draw sequence (positions, epochs, ranks, replay, records) in a
:class:`~reweight.sampler.stream.DrawStream` that draws through the tree. See
:mod:`reweight.sampler` for the weight formula, the layout and the memory per item.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
from torch.utils.data import DistributedSampler

from reweight import distributed
from reweight._checks import index_array, read_state_scalar
from reweight.sampler import _kernels
from reweight.sampler.stream import DrawMatch, DrawStream
from reweight.sampler.tree import WeightTree

__all__ = ["ReweightSampler"]

_STATE_VERSION = 3  # 3: the on-demand draw stream (versions 1 and 2 drew in fixed chunks)

ArrayLike = Any


class ReweightSampler(DistributedSampler):
    """Draws item indices with replacement from q(i) = π(d)·a_i·b_i / Σ_{j∈d} a_j·b_j.

    It subclasses ``DistributedSampler`` only so that Lightning leaves it alone under DDP (Lightning
    wraps any other sampler in ``DistributedSamplerWrapper``, which materialises and reshuffles a
    list of indices per rank). Each rank yields a disjoint stride of one global draw sequence.

    Args:
        num_items: number of items N (may be omitted when ``domains`` is given).
        domains: per-item domain ids in ``0..K-1`` (None: a single domain).
        num_domains: K; defaults to ``max(domains) + 1``. Every domain must have items.
        domain_probs: per-domain probabilities π (relative weights, normalised); default: each
            domain's share of the items (natural proportions).
        static_factor: per-item static factor a (default all 1).
        num_samples: draws per epoch over all ranks (default N); each rank yields
            ``ceil(num_samples / world_size)``.
        infinite: never end an epoch (``len()`` then raises ``TypeError``).
        seed: seed of the draw stream; the item at global position p depends only on (seed,
            p, the weights in force when p is drawn).
        block_size: items per block at the bottom of the sum pyramid.
        rank, world_size: the process's place; by default read from ``torch.distributed`` when
            iteration starts (or set with :meth:`set_distributed`).

    Example:
        >>> import numpy as np
        >>> sampler = ReweightSampler(domains=np.array([0, 0, 0, 1]), domain_probs=[0.5, 0.5])
        >>> draws = sampler.sample(10_000, seed=1)
        >>> round(float(np.mean(draws == 3)), 1)  # domain 1 is item 3 alone, half the draws
        0.5
        >>> sampler.update([0], [0.0])  # item 0's dynamic factor: never drawn again
        >>> bool(np.any(sampler.sample(1_000, seed=2) == 0))
        False
    """

    def __init__(
        self,
        num_items: int | None = None,
        *,
        domains: ArrayLike | None = None,
        num_domains: int | None = None,
        domain_probs: ArrayLike | None = None,
        static_factor: ArrayLike | None = None,
        num_samples: int | None = None,
        infinite: bool = False,
        seed: int = 0,
        block_size: int = 16,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        # DistributedSampler.__init__ is deliberately not called: it needs a data set and a
        # process group, and we keep our own notion of rank, epoch and length.
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an integer, got {seed!r}.")
        tree = WeightTree(
            num_items, domains=domains, num_domains=num_domains, block_size=block_size
        )
        self._tree = tree
        self.seed = int(seed)
        self._key = np.uint64(_kernels.stream_key(np.uint64(self.seed & 0xFFFFFFFFFFFFFFFF)))
        self.block_size = tree.block_size
        self.num_items = tree.num_items
        self.num_domains = tree.num_domains
        self.infinite = bool(infinite)
        self.shuffle = True
        self.drop_last = False
        self.dataset = None  # type: ignore[assignment]
        if num_samples is None:
            num_samples = self.num_items
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        self.num_samples = int(num_samples)
        self._stream = DrawStream(self._draw_positions, self.num_items)
        tree.on_change = self._stream.invalidate  # a change of the weights reaches new draws
        self._explicit_rank = rank
        self._explicit_world = world_size
        self.rank = 0 if rank is None else int(rank)
        self.num_replicas = 1 if world_size is None else int(world_size)
        self._check_rank()
        self._sync_stream()
        # The requested π is in force before the static factor is applied, so that a domain
        # with zero mass *and* zero requested probability is not reported as excluded.
        probs = tree.natural_probs() if domain_probs is None else tree.parse_probs(domain_probs)
        tree.request_probs(probs)
        if static_factor is not None:
            tree.set_static(static_factor)
        elif domain_probs is not None:
            tree.set_domain_probs(probs)
        self._requested_epoch = 0

    # ------------------------------------------------------------------ weights

    def item_domains(self, items: ArrayLike) -> np.ndarray:
        """Domain id of each item (int64 array).

        Example:
            >>> ReweightSampler(domains=[0, 1, 1]).item_domains([2, 0]).tolist()
            [1, 0]
        """
        return self._tree.item_domains(items)

    @property
    def domain_sizes(self) -> np.ndarray:
        """Number of items per domain (int64 array of length K)."""
        return self._tree.domain_sizes

    def natural_probs(self) -> np.ndarray:
        """Each domain's share of the items, n_d / N."""
        return self._tree.natural_probs()

    def set_static(self, values: ArrayLike, items: ArrayLike | None = None) -> None:
        """Sets the static factor a for all items (``items=None``) or for the given items.

        For all items, ``values`` may also be a function returning the factors of a slice of
        items: it is read twice, one chunk at a time (checked, then written), so the factors
        of all items never need to exist at once.

        Example:
            >>> sampler = ReweightSampler(4)
            >>> sampler.set_static([1.0, 1.0, 0.0, 2.0])
            >>> sampler.probabilities([0, 2, 3]).tolist()
            [0.25, 0.0, 0.5]
        """
        self._tree.set_static(values, items)

    def update(self, items: ArrayLike, values: ArrayLike) -> None:
        """Sets the dynamic factor b of some items: O(log N) each; reaches the next draw.

        Duplicated items take their last value. A bad batch raises and changes nothing.

        Example:
            >>> sampler = ReweightSampler(3)
            >>> sampler.update([2], [2.0])
            >>> sampler.probabilities([0, 1, 2]).tolist()
            [0.25, 0.25, 0.5]
        """
        self._tree.update(items, values)

    def set_dynamic(self, values: ArrayLike) -> None:
        """Sets the dynamic factor b of every item at once (O(N))."""
        self._tree.set_dynamic(values)

    def set_domain_probs(self, probs: ArrayLike) -> None:
        """Sets π from relative per-domain weights (normalised here): O(K).

        Example:
            >>> sampler = ReweightSampler(domains=[0, 1, 1, 1])
            >>> sampler.set_domain_probs([3, 1])
            >>> sampler.probabilities([0, 1]).tolist()
            [0.75, 0.08333333333333333]
        """
        self._tree.set_domain_probs(probs)

    @property
    def domain_probs(self) -> np.ndarray:
        """The π actually sampled: requested π without zero-mass domains, renormalised."""
        return self._tree.domain_probs

    def factors(self, items: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """The static factor a and the dynamic factor b of the given items (float64 arrays).

        Example:
            >>> sampler = ReweightSampler(3)
            >>> sampler.update([1], [4.0])
            >>> [f.tolist() for f in sampler.factors([0, 1])]
            [[1.0, 1.0], [1.0, 4.0]]
        """
        return self._tree.factors(items)

    def probabilities(self, items: ArrayLike) -> np.ndarray:
        """q(i) for the given items under the current weights (float64).

        Example:
            >>> ReweightSampler(domains=[0, 1, 1]).probabilities([0, 1]).tolist()
            [0.3333333333333333, 0.3333333333333333]
        """
        return self._tree.probabilities(items)

    def item_shares(self, items: ArrayLike) -> np.ndarray:
        """Each item's share of its domain's weight, a·b / Σ_{j∈d} a_j·b_j (float64; 0 in a
        domain without weight): q(i) = π(d) · share(i).

        Example:
            >>> ReweightSampler(domains=[0, 1, 1]).item_shares([0, 1]).tolist()
            [1.0, 0.5]
        """
        return self._tree.item_shares(items)

    # ------------------------------------------------------------------ drawing

    def sample(self, n: int, seed: int | None = None) -> np.ndarray:
        """Draws n item ids i.i.d. from the current q without touching the epoch stream.

        Example:
            >>> ReweightSampler(5).sample(3, seed=0).shape
            (3,)
        """
        rng = np.random.default_rng(seed)
        return self._tree.draw(rng.random(n), rng.random(n))

    def _draw_positions(self, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Items and their probabilities q at global positions ``first .. first + count - 1``
        of the draw stream, from the current weights."""
        return self._tree.draw_positions(self._key, first, count)

    # ------------------------------------------------------------------ iteration

    def _check_rank(self) -> None:
        if self.num_replicas < 1 or not 0 <= self.rank < self.num_replicas:
            raise ValueError(
                f"rank {self.rank} is not valid for world_size {self.num_replicas}; "
                "need 0 <= rank < world_size."
            )

    def set_distributed(self, rank: int, world_size: int) -> None:
        """Fixes this process's rank and the number of ranks (the callback does this)."""
        rank, world_size = int(rank), int(world_size)
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"rank {rank} is not valid for world_size {world_size}; "
                "need 0 <= rank < world_size."
            )
        self._explicit_rank, self._explicit_world = rank, world_size
        self._resolve_distributed()

    def _resolve_distributed(self) -> None:
        rank = self._explicit_rank if self._explicit_rank is not None else distributed.rank()
        world = (
            self._explicit_world if self._explicit_world is not None else distributed.world_size()
        )
        if (rank, world) != (self.rank, self.num_replicas):
            old = self.rank, self.num_replicas
            self.rank, self.num_replicas = int(rank), int(world)
            try:
                self._check_rank()
                self._sync_stream()
            except ValueError:
                self.rank, self.num_replicas = old
                raise

    def _sync_stream(self) -> None:
        self._stream.set_world(self.rank, self.num_replicas)
        self._stream.samples_per_rank = None if self.infinite else self.samples_per_rank

    @property
    def samples_per_rank(self) -> int:
        """Draws each rank yields per epoch: ceil(num_samples / world_size)."""
        return -(-self.num_samples // self.num_replicas)

    @property
    def total_size(self) -> int:  # type: ignore[override]
        """Global draws per epoch (samples_per_rank × world_size)."""
        return self.samples_per_rank * self.num_replicas

    @property
    def epoch(self) -> int:  # type: ignore[override]
        """The epoch of the next draw this rank hands out (epoch e is this rank's draws
        ``[e·S, (e+1)·S)``, S = :attr:`samples_per_rank`; always 0 when infinite)."""
        return self._stream.epoch

    @property
    def draws_yielded(self) -> int:
        """Draws this rank has handed out since the start of the run (its local counter)."""
        return self._stream.yielded

    @property
    def draws_consumed(self) -> int:
        """Draws of this rank that training has used (reported through :meth:`commit_draws`
        by :meth:`Reweighter.reduce`; until then, the draws handed out)."""
        return self._stream.consumed

    @property
    def draws_in_flight(self) -> int:
        """Global draws handed out to the DataLoaders and not trained on yet: their prefetch,
        the only lag between an update and the draws."""
        return self._stream.in_flight

    @property
    def clock(self) -> int:
        """The step stamped on new draws (the Reweighter sets it to its ``global_step``)."""
        return self._stream.clock

    @clock.setter
    def clock(self, step: int) -> None:
        if int(step) != self._stream.clock:
            self._stream.clock = int(step)
            self._stream.invalidate()  # draws not handed out yet are stamped anew

    def __len__(self) -> int:
        if self.infinite:
            raise TypeError("an infinite ReweightSampler has no length; set max_steps instead.")
        return self.samples_per_rank

    def set_epoch(self, epoch: int) -> None:
        """Accepted for ``DistributedSampler`` compatibility; the stream does not depend on it.

        Epochs are fixed ranges of the draw stream and every iterator starts at the first draw
        not yet trained on, so a loop (or Lightning) calling ``set_epoch`` at every epoch, a
        resumed run whose epoch numbers differ, and an uninterrupted run all draw the same
        sequence.

        Example:
            >>> sampler = ReweightSampler(10, num_samples=4)
            >>> sampler.set_epoch(3)
            >>> sampler.epoch, sampler.draws_yielded
            (0, 0)
        """
        epoch = int(epoch)
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}.")
        self._requested_epoch = epoch

    def __iter__(self) -> Iterator[int]:
        """This rank's draws from the first one not yet trained on to the end of its epoch.

        Draws are made when the DataLoader asks for them, from the weights in force then. A
        new iterator first hands out again the draws an earlier one handed out that training
        did not use (a DataLoader's prefetch, dropped at the end of an epoch or by a restart),
        each with its original item and probability; an earlier iterator stops.
        """
        self._resolve_distributed()
        return self._stream.iterate()

    @property
    def before_draw(self) -> Callable[[], None] | None:
        """While set, called before each draw is handed out (by any iterator, also one made
        before it was set): the Reweighter sets it while the host part of a reduce() is
        deferred (a CUDA step's loss table), so that every draw sees that update, as the
        stream contract says, and clears it once applied. None costs one check per draw."""
        return self._stream.before_draw

    @before_draw.setter
    def before_draw(self, hook: Callable[[], None] | None) -> None:
        self._stream.before_draw = hook

    # ------------------------------------------------------------------ draw records

    def match_draws(self, items: ArrayLike, ranks: ArrayLike) -> DrawMatch | None:
        """The draw records of a global batch: each item's probability q when it was drawn and
        the step it was drawn at, or None if the batch is not the next draws of every rank.

        Args:
            items: the global batch's item ids, rank by rank (each rank's in its order).
            ranks: the rank each item came from.

        Changes nothing; pass the result to :meth:`commit_draws` once the batch is used.

        Example:
            >>> sampler = ReweightSampler(4, seed=3)
            >>> batch = [next(it) for it in [iter(sampler)] for _ in range(2)]
            >>> match = sampler.match_draws(batch, [0, 0])
            >>> match.q.tolist()
            [0.25, 0.25]
            >>> sampler.commit_draws(match)
            >>> sampler.draws_consumed
            2
        """
        idx = index_array(items)
        rank_ids = index_array(ranks)
        if rank_ids.size != idx.size:
            raise ValueError(
                f"match_draws got {idx.size} items and {rank_ids.size} ranks; give one rank per "
                "item."
            )
        return self._stream.match(idx, rank_ids)

    def next_draws(self, count: int) -> tuple[np.ndarray, DrawMatch] | None:
        """The items and draw records of the global batch made of every rank's next ``count``
        draws not trained on (what :meth:`match_draws` returns for that batch), or None when
        they have not all been handed out. Changes nothing.

        Example:
            >>> sampler = ReweightSampler(4, seed=3)
            >>> batch = [next(it) for it in [iter(sampler)] for _ in range(2)]
            >>> items, match = sampler.next_draws(2)
            >>> items.tolist() == batch, match.q.tolist()
            (True, [0.25, 0.25])
        """
        ranks = np.repeat(np.arange(self.num_replicas), int(count))
        return self._stream.next_draws(ranks)

    def commit_draws(self, match: DrawMatch) -> None:
        """Marks the draws of a matched batch as trained on (see :meth:`match_draws`)."""
        self._stream.commit(match)

    # ------------------------------------------------------------------ state

    def fingerprint(self) -> dict[str, Any]:
        """What a saved state must match: sizes, layout and domain assignment."""
        return self._tree.fingerprint()

    def state_dict(self) -> dict[str, Any]:
        """The weights and the draw stream: every rank's position and the draws handed out and
        not trained on yet (with their items and draw-time probabilities), which are handed out
        again first after a restore, so the resumed run sees the same items as an
        uninterrupted one. Any rank's state holds every rank's position.

        Example:
            >>> sampler = ReweightSampler(10, seed=1)
            >>> it = iter(sampler)
            >>> first = [next(it) for _ in range(3)]
            >>> twin = ReweightSampler(10, seed=1)
            >>> twin.load_state_dict(sampler.state_dict())
            >>> [next(iter(twin)) for _ in range(1)] == [next(it)]
            True
        """
        return {
            "version": _STATE_VERSION,
            "fingerprint": self.fingerprint(),
            "seed": self.seed,
            "num_samples": self.num_samples,
            "infinite": self.infinite,
            "stream": self._stream.state_dict(),
            **self._tree.state_dict(),  # domain_probs, static, dynamic
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores a state from :meth:`state_dict`: every field is validated first, then all of
        it is applied (a bad state raises ValueError naming the field and changes nothing)."""
        self.apply_state(self.parse_state(state))

    def apply_state(self, parsed: Mapping[str, Any]) -> None:
        """Applies what :meth:`parse_state` returned (copies the factors into place)."""
        self._tree.apply_state(parsed["weights"])
        self._stream.apply_state(parsed["stream"])

    def parse_state(
        self, state: Mapping[str, Any], next_probs: np.ndarray | None = None
    ) -> dict[str, Any]:
        """Validates a whole :meth:`state_dict` (the factor rows one chunk at a time, kept as
        views, not copied) and returns what :meth:`apply_state` applies; changes nothing.
        ``next_probs``, π to be set right after the restore, is checked against it too."""
        if not isinstance(state, Mapping) or "version" not in state:
            raise ValueError("not a ReweightSampler state (no 'version' key).")
        if read_state_scalar("sampler state", "version", state["version"]) != _STATE_VERSION:
            raise ValueError(
                f"sampler state version {state['version']!r} is not supported (this version "
                f"reads {_STATE_VERSION}); states of versions 1 and 2 come from the chunked "
                "draw stream of earlier reweight versions and cannot continue bitwise — "
                "resume the model and optimizer only and start the reweighter afresh."
            )
        missing = [
            key
            for key in (
                *("fingerprint", "seed", "num_samples", "infinite", "stream"),
                *("domain_probs", "static", "dynamic"),
            )
            if key not in state
        ]
        if missing:
            raise ValueError(f"sampler state: missing field(s) {missing}; the state is truncated.")
        saved_fingerprint = state["fingerprint"]
        if not isinstance(saved_fingerprint, Mapping):
            raise ValueError("sampler state: 'fingerprint' must be a mapping.")
        mismatched = {}
        for key, value in self.fingerprint().items():
            saved = read_state_scalar("sampler state fingerprint", key, saved_fingerprint.get(key))
            if saved != value:
                mismatched[key] = (saved, value)
        for key in ("seed", "num_samples", "infinite"):
            saved = read_state_scalar("sampler state", key, state[key])
            if saved != getattr(self, key) or type(saved) is not type(getattr(self, key)):
                mismatched[key] = (saved, getattr(self, key))
        if mismatched:
            details = ", ".join(
                f"{k}: saved {s!r} vs now {n!r}" for k, (s, n) in mismatched.items()
            )
            raise ValueError(
                f"the sampler state comes from another configuration ({details}); "
                "restore it into a sampler built with the same data and settings."
            )
        weights = self._tree.parse_state(state, next_probs)
        stream = state["stream"]
        if not isinstance(stream, Mapping):
            raise ValueError("sampler state: 'stream' must be a mapping.")
        parsed_stream = self._stream.parse_state(stream)
        self._resolve_distributed()
        if parsed_stream["world_size"] != self.num_replicas:
            raise ValueError(
                f"the sampler state was written by a run with {parsed_stream['world_size']} "
                f"ranks, this one has {self.num_replicas}; resume with the same number of ranks."
            )
        return {"weights": weights, "stream": parsed_stream}

    # ------------------------------------------------------------------ diagnostics

    def stats(self) -> dict[str, Any]:
        """Diagnostics of q: ESS, entropy, max/min ratio, per-domain shares.

        Per-item weights enter in float64 (a·b never overflows there). Σw², max and min come
        from statistics cached per group of ``block_size²`` items, recomputed only for groups
        changed since the last call: O(changed items · block_size + N / block_size²). The
        entropy is exact up to 2^22 items, else a Monte-Carlo estimate (``entropy_exact``).
        Nothing observable changes (only that cache is refreshed).

        Example:
            >>> s = ReweightSampler(4).stats()
            >>> round(s["ess_fraction"], 6), round(s["max_min_ratio"], 6)
            (1.0, 1.0)
        """
        return self._tree.stats()

    def memory_bytes(self) -> int:
        """Bytes held in per-item and per-block arrays (what grows with N).

        Example:
            >>> ReweightSampler(1_000_000).memory_bytes() / 1_000_000 < 16
            True
        """
        return self._tree.memory_bytes()
