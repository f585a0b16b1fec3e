"""ReweightSampler: the ``DistributedSampler`` that composes the weight tree and the draw stream.

See :mod:`reweight.sampler` for the weight formula, the layout and the memory per item.
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from reweight import distributed
from reweight.sampler import _kernels
from reweight.sampler.stream import DrawMatch, DrawStream, state_array, state_scalar

__all__ = ["ReweightSampler"]

_STATE_VERSION = 3  # 3: the on-demand draw stream (versions 1 and 2 drew in fixed chunks)
_F32_MAX = float(np.finfo(np.float32).max)
_F32_TINY = float(np.finfo(np.float32).tiny)

ArrayLike = Any


def _as_float_array(name: str, values: ArrayLike, length: int | None = None) -> np.ndarray:
    """Returns ``values`` as a 1-D float64 array after checking it is finite and non-negative."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if length is not None and array.shape[0] != length:
        raise ValueError(
            f"{name} has {array.shape[0]} entries but {length} were expected; "
            f"pass one value per item (or per domain for domain probabilities)."
        )
    bad = ~np.isfinite(array)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} contains {int(bad.sum())} non-finite value(s) (first at position {first}: "
            f"{array[first]!r}); weights must be finite — mask or clip them before passing them."
        )
    out_of_range = (array > _F32_MAX) | ((array > 0) & (array < _F32_TINY))
    if out_of_range.any():
        first = int(np.flatnonzero(out_of_range)[0])
        raise ValueError(
            f"{name} has {int(out_of_range.sum())} value(s) outside float32's normal range "
            f"(first at position {first}: {array[first]!r}); weights are stored as float32 — "
            "rescale them (only ratios matter) into [1.2e-38, 3.4e38] or use 0."
        )
    negative = array < 0
    if negative.any():
        first = int(np.flatnonzero(negative)[0])
        raise ValueError(
            f"{name} contains {int(negative.sum())} negative value(s) (first at position {first}: "
            f"{array[first]!r}); weights must be >= 0 (use 0 to exclude an item)."
        )
    return array


def _as_index_array(indices: ArrayLike, num_items: int) -> np.ndarray:
    """Returns ``indices`` as a 1-D int64 array after checking type and range."""
    array = _index_input(indices)
    if array.size and (array.min() < 0 or array.max() >= num_items):
        bad = array[(array < 0) | (array >= num_items)]
        raise ValueError(
            f"item index {int(bad[0])} is out of range for {num_items} items "
            f"({bad.size} bad indices); indices must lie in [0, {num_items})."
        )
    return array


def _index_input(indices: ArrayLike) -> np.ndarray:
    """``indices`` as a contiguous 1-D int64 array (no copy when it already is one); checks
    the type, not the range."""
    if isinstance(indices, torch.Tensor):
        indices = indices.detach().cpu().numpy()
    array = np.asarray(indices).reshape(-1)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(
            f"item indices must be integers, got dtype {array.dtype}; pass item ids such as "
            "batch['index']."
        )
    return np.ascontiguousarray(array, dtype=np.int64)


def _value_input(values: ArrayLike) -> np.ndarray:
    """``values`` as a contiguous 1-D float64 array (no copy when it already is one)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(values, dtype=np.float64).reshape(-1))


def _smallest_int_dtype(max_value: int) -> np.dtype:
    for dtype in (np.uint8, np.uint16, np.uint32):
        if max_value <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


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
        if block_size < 2 or block_size > 255:
            raise ValueError(
                f"block_size must be in [2, 255] (it is also the tree's fan-out), got {block_size}."
            )
        self.seed = int(seed)
        self._key = np.uint64(_kernels.stream_key(np.uint64(self.seed & 0xFFFFFFFFFFFFFFFF)))
        self.block_size = int(block_size)
        self.infinite = bool(infinite)
        self.shuffle = True
        self.drop_last = False
        self.dataset = None  # type: ignore[assignment]
        self._build_layout(num_items, domains, num_domains)
        if num_samples is None:
            num_samples = self.num_items
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        self.num_samples = int(num_samples)
        self._stream = DrawStream(self._draw_positions, self.num_items)
        self._explicit_rank = rank
        self._explicit_world = world_size
        self.rank = 0 if rank is None else int(rank)
        self.num_replicas = 1 if world_size is None else int(world_size)
        self._check_rank()
        self._sync_stream()

        # Row 0: static factor a, row 1: dynamic factor b; padding slots have a = 0.
        self._factors = np.empty((self._num_blocks, 2, self.block_size), dtype=np.float32)
        _kernels.init_factors(self._factors, self._position_offsets, self._counts)
        self._dynamic_used = False
        self._build_tree()
        self._warned_domains: set[int] = set()
        # The requested π is in force before the static factor is applied, so that a domain
        # with zero mass *and* zero requested probability is not reported as excluded.
        self._probs = (
            self.natural_probs() if domain_probs is None else self._parse_probs(domain_probs)
        )
        if static_factor is not None:
            self.set_static(static_factor)
        elif domain_probs is not None:
            self.set_domain_probs(self._probs)
        else:
            self._refresh_effective_probs()
        self._requested_epoch = 0

    # ------------------------------------------------------------------ layout

    def _build_layout(
        self, num_items: int | None, domains: ArrayLike | None, num_domains: int | None
    ) -> None:
        if domains is None:
            if num_items is None:
                raise ValueError("give num_items or per-item domains.")
            if num_items < 1:
                raise ValueError(f"num_items must be >= 1, got {num_items}.")
            self.num_items = int(num_items)
            self.num_domains = 1
            counts = np.array([self.num_items], dtype=np.int64)
            dom = None
            contiguous = True
        else:
            if isinstance(domains, torch.Tensor):
                domains = domains.detach().cpu().numpy()
            dom = np.asarray(domains).reshape(-1)
            if dom.size == 0:
                raise ValueError("domains is empty; the sampler needs at least one item.")
            if not np.issubdtype(dom.dtype, np.integer):
                raise TypeError(
                    f"domains must be integer ids 0..K-1, got dtype {dom.dtype}; map names to "
                    "ids first (IndexedDataset does this for you)."
                )
            if num_items is not None and num_items != dom.size:
                raise ValueError(
                    f"num_items={num_items} but domains has {dom.size} entries; they must match."
                )
            self.num_items = int(dom.size)
            low, high = int(dom.min()), int(dom.max())
            if low < 0:
                raise ValueError(f"domain ids must be >= 0, found {low}.")
            k = high + 1 if num_domains is None else int(num_domains)
            if high >= k:
                raise ValueError(
                    f"domain id {high} is out of range for num_domains={k}; ids must be 0..{k - 1}."
                )
            self.num_domains = k
            counts = np.bincount(dom, minlength=k).astype(np.int64)
            contiguous = bool(np.all(dom[1:] >= dom[:-1]))
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            raise ValueError(
                f"domain(s) {empty.tolist()} have no items; every domain id in 0..K-1 needs at "
                "least one item (drop the empty domains or renumber the ids)."
            )
        self._counts = counts
        self._item_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        blocks = -(-counts // self.block_size)
        self._block_offsets = np.concatenate([[0], np.cumsum(blocks)]).astype(np.int64)
        self._num_blocks = int(self._block_offsets[-1])
        self._position_offsets = self._block_offsets * self.block_size
        self._contiguous = contiguous
        index_dtype = np.int32 if self.num_items < 2**31 else np.int64
        if contiguous:
            # Empty arrays of the usual dtypes select the contiguous branch of the kernels.
            self._perm = np.empty(0, dtype=np.int32)
            self._item_domain = np.empty(0, dtype=np.uint8)
            self._rank_low: np.ndarray = np.empty(0, dtype=np.uint16)
            self._low_bits = 16
            self._marks = np.empty(0, dtype=np.int32)
            self._mark_offsets = np.zeros(self.num_domains + 1, dtype=np.int64)
        else:
            if dom is None:  # pragma: no cover - contiguous when there are no domains
                raise RuntimeError("unreachable")
            self._item_domain = dom.astype(_smallest_int_dtype(self.num_domains - 1))
            # Domain id + low rank bits take 3 bytes per item for up to 65,536 domains.
            self._low_bits = 16 if self._item_domain.dtype == np.uint8 else 8
            self._rank_low = np.empty(
                self.num_items, dtype=np.uint16 if self._low_bits == 16 else np.uint8
            )
            per_domain = (counts - 1) >> self._low_bits
            self._mark_offsets = np.concatenate([[0], np.cumsum(per_domain)]).astype(np.int64)
            self._marks = np.empty(int(self._mark_offsets[-1]), dtype=index_dtype)
            self._perm = np.full(self._num_blocks * self.block_size, -1, dtype=index_dtype)
            _kernels.build_layout(
                self._item_domain,
                self._position_offsets,
                self._low_bits,
                self._perm,
                self._rank_low,
                self._marks,
                self._mark_offsets,
            )
        layout_hash = zlib.crc32(counts.tobytes())
        if dom is not None and not contiguous:
            layout_hash = zlib.crc32(np.ascontiguousarray(dom).tobytes(), layout_hash)
        self._layout_hash = int(layout_hash)

    def _layout_args(self) -> tuple[Any, ...]:
        """The arrays the item → position kernels need, in their argument order."""
        return (
            self._item_offsets,
            self._position_offsets,
            self._item_domain,
            self._rank_low,
            self._low_bits,
            self._marks,
            self._mark_offsets,
        )

    def _positions_of(self, items: np.ndarray) -> np.ndarray:
        """Maps (validated) global item ids to positions in the layout."""
        return _kernels.locate(np.ascontiguousarray(items, dtype=np.int64), *self._layout_args())

    def item_domains(self, items: ArrayLike) -> np.ndarray:
        """Domain id of each item (int64 array).

        Example:
            >>> ReweightSampler(domains=[0, 1, 1]).item_domains([2, 0]).tolist()
            [1, 0]
        """
        idx = _as_index_array(items, self.num_items)
        if self._item_domain.size:
            return self._item_domain[idx].astype(np.int64)
        return np.searchsorted(self._item_offsets, idx, side="right") - 1

    @property
    def domain_sizes(self) -> np.ndarray:
        """Number of items per domain (int64 array of length K)."""
        return self._counts.copy()

    def natural_probs(self) -> np.ndarray:
        """Each domain's share of the items, n_d / N."""
        return self._counts / float(self.num_items)

    # ------------------------------------------------------------------ tree

    def _factor(self, row: int) -> np.ndarray:
        """Factor row 0 (static) or 1 (dynamic) of every position, as a flat copy."""
        return self._factors[:, row, :].reshape(-1)

    def _factor_at(self, row: int, positions: np.ndarray) -> np.ndarray:
        return self._factors[positions // self.block_size, row, positions % self.block_size]

    def _build_tree(self) -> None:
        """Recomputes the sum pyramid and the per-domain counts of positive items: O(N).

        The tree has fan-out ``block_size``: level 0 holds block sums, level k + 1 the sums of
        groups of ``block_size`` nodes of level k (see ``reweight.sampler._kernels``).
        """
        nb, width = self._num_blocks, self.block_size
        sizes = [-(-nb // width) * width]
        while sizes[-1] > width:
            sizes.append(-(-(sizes[-1] // width) // width) * width)
        self._level_offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self._tree = np.zeros(int(sum(sizes)), dtype=np.float64)
        self._level_marks = np.zeros(int(sum(sizes[1:])), dtype=np.uint8)
        self._prefix = np.zeros(int(sum(sizes[1:])), dtype=np.float64)
        groups = -(-nb // width)
        self._node_stats = np.zeros((groups, 3), dtype=np.float64)
        self._node_dirty = np.ones(groups, dtype=np.uint8)
        _kernels.rebuild(self._factors, self._tree, self._level_offsets, self._prefix)
        self._positive_items = _kernels.count_positive(self._factors, self._block_offsets)
        self._domain_bounds_cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._stream.invalidate()

    @property
    def _domain_has_mass(self) -> np.ndarray:
        return self._positive_items > 0

    def _domain_bounds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(start mass, mass, exact) of every domain in the tree's cumulative order.

        ``exact`` flags domains much lighter than the mass before them: ``start + u · mass``
        would round at the scale of ``start``, so their draws take an exact walk instead.
        """
        if self._domain_bounds_cache is None:
            prefix = _kernels.prefix_sums(
                self._tree, self._level_offsets, self.block_size, self._block_offsets
            )
            starts = prefix[:-1]
            masses = _kernels.range_sums(
                self._tree, self._level_offsets, self.block_size, self._block_offsets
            )
            masses[~self._domain_has_mass] = 0.0
            exact = starts * 2.0**-20 > masses
            self._domain_bounds_cache = (starts, masses, exact)
        return self._domain_bounds_cache

    # ------------------------------------------------------------------ weights

    def _write(self, row: int, positions: np.ndarray, values: np.ndarray) -> bool:
        crossed = _kernels.write_items(
            self._factors,
            row,
            positions,
            values,
            self._tree,
            self._level_offsets,
            self._prefix,
            self._position_offsets,
            self._positive_items,
            self._node_dirty,
            self._level_marks,
        )
        self._dynamic_used |= row == 1
        self._domain_bounds_cache = None
        self._stream.invalidate()
        return bool(crossed)

    def _apply(self, row: int, name: str, items: ArrayLike, values: ArrayLike) -> None:
        """Writes factor ``row`` for some items in O(log N) each; nothing changes if it fails.

        The batch is validated and located in one compiled pass; only when it is bad do the
        (slower) NumPy validators run, to raise an error that names the problem.
        """
        idx = _index_input(items)
        vals = _value_input(values)
        if vals.size != idx.size:
            raise ValueError(
                f"{name} has {vals.size} entries but {idx.size} were expected; "
                "pass one value per item."
            )
        if idx.size == 0:
            return
        positions = np.empty(idx.size, dtype=np.int64)
        values32 = np.empty(idx.size, dtype=np.float32)
        status, zeros = _kernels.check_and_locate(
            idx,
            vals,
            self.num_items,
            self._item_offsets,
            self._position_offsets,
            self._item_domain,
            self._rank_low,
            self._low_bits,
            self._marks,
            self._mark_offsets,
            positions,
            values32,
        )
        if status != 0:
            _as_index_array(idx, self.num_items)
            _as_float_array(name, vals, idx.size)
            raise ValueError(f"{name}: invalid batch (status {status}).")  # pragma: no cover
        # Only a zero can remove mass; keep the old values for an undo only then.
        old_values = self._factor_at(row, positions) if zeros else None
        was_used = self._dynamic_used
        crossed = self._write(row, positions, values32)
        if old_values is not None:
            try:
                self._check_total_mass(self._domain_has_mass)
            except ValueError:
                self._write(row, positions[::-1].copy(), old_values[::-1].copy())
                self._dynamic_used = was_used
                raise
        if crossed:
            self._refresh_effective_probs()

    def _check_total_mass(self, has_mass: np.ndarray) -> None:
        if not has_mass.any():
            raise ValueError(
                "this change would give every item weight 0, leaving nothing to sample; "
                "keep at least one item with a positive weight (nothing was changed)."
            )
        if not (has_mass & (self._probs > 0)).any():
            raise ValueError(
                "every domain with positive probability would have weight 0 on all its items; "
                "give some of those items a positive weight or change domain_probs "
                "(nothing was changed)."
            )

    def set_static(self, values: ArrayLike, items: ArrayLike | None = None) -> None:
        """Sets the static factor a for all items (``items=None``) or for the given items.

        Example:
            >>> sampler = ReweightSampler(4)
            >>> sampler.set_static([1.0, 1.0, 0.0, 2.0])
            >>> sampler.probabilities([0, 2, 3]).tolist()
            [0.25, 0.0, 0.5]
        """
        if items is None:
            array = _as_float_array("static factor", values, self.num_items)
            self._set_all(0, array)
        else:
            self._apply(0, "static factor", items, values)

    def update(self, items: ArrayLike, values: ArrayLike) -> None:
        """Sets the dynamic factor b of some items: O(log N) each; reaches the next draw.

        Duplicated items take their last value. A bad batch raises and changes nothing.

        Example:
            >>> sampler = ReweightSampler(3)
            >>> sampler.update([2], [2.0])
            >>> sampler.probabilities([0, 1, 2]).tolist()
            [0.25, 0.25, 0.5]
        """
        self._apply(1, "dynamic factor", items, values)

    def set_dynamic(self, values: ArrayLike) -> None:
        """Sets the dynamic factor b of every item at once (O(N))."""
        self._set_all(1, _as_float_array("dynamic factor", values, self.num_items))

    def _set_all(self, row: int, values: np.ndarray) -> None:
        new = np.zeros(self._num_blocks * self.block_size, dtype=np.float32)
        _kernels.scatter_items(
            values, self._item_domain, self._item_offsets, self._position_offsets, new
        )
        has_mass = _kernels.domains_with_mass(new, self._factors, 1 - row, self._position_offsets)
        self._check_total_mass(has_mass)
        if row == 1:
            self._dynamic_used = True
        self._factors[:, row, :] = new.reshape(-1, self.block_size)
        del new
        self._build_tree()
        self._refresh_effective_probs()

    def _parse_probs(self, probs: ArrayLike) -> np.ndarray:
        """Validated, normalised π (no check against the items' mass)."""
        array = _as_float_array("domain_probs", probs, self.num_domains)
        total = array.sum()
        if total <= 0:
            raise ValueError(
                f"domain_probs {array.tolist()} sum to 0; give at least one domain a positive "
                "probability."
            )
        return array / total

    def set_domain_probs(self, probs: ArrayLike) -> None:
        """Sets π from relative per-domain weights (normalised here): O(K).

        Example:
            >>> sampler = ReweightSampler(domains=[0, 1, 1, 1])
            >>> sampler.set_domain_probs([3, 1])
            >>> sampler.probabilities([0, 1]).tolist()
            [0.75, 0.08333333333333333]
        """
        array = self._parse_probs(probs)
        if not (self._domain_has_mass & (array > 0)).any():
            raise ValueError(
                f"domain_probs {array.tolist()} put all their mass on domains whose items all "
                "have weight 0; nothing could be drawn (nothing was changed)."
            )
        self._refresh_effective_probs(array)

    def _refresh_effective_probs(self, probs: np.ndarray | None = None) -> None:
        """Sets π (default: keeps it) restricted to domains that have mass. Warns once per
        excluded domain, before anything changes (an error filter leaves the sampler as it was).
        """
        probs = self._probs if probs is None else probs
        excluded = (probs > 0) & ~self._domain_has_mass
        fresh = [int(d) for d in np.flatnonzero(excluded) if int(d) not in self._warned_domains]
        for d in fresh:
            warnings.warn(
                f"domain {d} has probability {probs[d]:.4g} but all its items have weight 0; "
                "it is excluded from sampling and π is renormalised over the other domains.",
                RuntimeWarning,
                stacklevel=4,
            )
        self._warned_domains.update(fresh)
        self._probs = probs
        effective = np.where(excluded, 0.0, probs)
        self._effective = effective / effective.sum()
        cumulative = np.cumsum(self._effective)
        # From the last domain with positive π on, the cumulative sum is exactly 1, so that
        # rounding can never pick a trailing domain with π = 0.
        cumulative[int(np.flatnonzero(self._effective > 0)[-1]) :] = 1.0
        self._cumulative_probs = cumulative
        buckets = 1 << int(np.clip(math.ceil(math.log2(4 * self.num_domains)), 8, 16))
        self._guide = np.searchsorted(cumulative, np.arange(buckets + 1) / buckets, side="right")
        self._stream.invalidate()

    @property
    def domain_probs(self) -> np.ndarray:
        """The π actually sampled: requested π without zero-mass domains, renormalised."""
        return self._effective.copy()

    def factors(self, items: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """The static factor a and the dynamic factor b of the given items (float64 arrays).

        Example:
            >>> sampler = ReweightSampler(3)
            >>> sampler.update([1], [4.0])
            >>> [f.tolist() for f in sampler.factors([0, 1])]
            [[1.0, 1.0], [1.0, 4.0]]
        """
        idx = _as_index_array(items, self.num_items)
        positions = self._positions_of(idx)
        return (
            self._factor_at(0, positions).astype(np.float64),
            self._factor_at(1, positions).astype(np.float64),
        )

    def probabilities(self, items: ArrayLike) -> np.ndarray:
        """q(i) for the given items under the current weights (float64).

        Example:
            >>> ReweightSampler(domains=[0, 1, 1]).probabilities([0, 1]).tolist()
            [0.3333333333333333, 0.3333333333333333]
        """
        weights, masses, d = self._weights_in_domain(items)
        live = masses > 0
        safe = np.where(live, masses, 1.0)
        return np.where(live, self._effective[d] * weights / safe, 0.0)

    def item_shares(self, items: ArrayLike) -> np.ndarray:
        """Each item's share of its domain's weight, a·b / Σ_{j∈d} a_j·b_j (float64; 0 in a
        domain without weight): q(i) = π(d) · share(i).

        Example:
            >>> ReweightSampler(domains=[0, 1, 1]).item_shares([0, 1]).tolist()
            [1.0, 0.5]
        """
        weights, masses, _ = self._weights_in_domain(items)
        live = masses > 0
        return np.where(live, weights / np.where(live, masses, 1.0), 0.0)

    def _weights_in_domain(self, items: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(a·b, the mass of the item's domain, the domain) of each item, in float64."""
        idx = _as_index_array(items, self.num_items)
        positions = self._positions_of(idx)
        weights = self._factor_at(0, positions).astype(np.float64)
        weights *= self._factor_at(1, positions)
        d = self.item_domains(idx)
        _, masses, _ = self._domain_bounds()
        return weights, masses[d], d

    # ------------------------------------------------------------------ drawing

    def _draw(
        self, u_domain: np.ndarray, u_item: np.ndarray, q: np.ndarray | None = None
    ) -> np.ndarray:
        """Inverse-CDF draws of item ids: domain from π, then an item within it (their
        probabilities go to ``q`` when given)."""
        starts, masses, exact = self._domain_bounds()
        out = np.empty(u_domain.size, dtype=np.int64)
        _kernels.draw_items(
            u_domain,
            u_item,
            self._cumulative_probs,
            self._guide,
            starts,
            masses,
            exact,
            self._block_offsets,
            self._position_offsets,
            self._item_offsets,
            self._perm,
            self._factors,
            self._tree,
            self._level_offsets,
            self._prefix,
            out,
            self._effective,
            np.empty(0) if q is None else q,
        )
        return out

    def sample(self, n: int, seed: int | None = None) -> np.ndarray:
        """Draws n item ids i.i.d. from the current q without touching the epoch stream.

        Example:
            >>> ReweightSampler(5).sample(3, seed=0).shape
            (3,)
        """
        rng = np.random.default_rng(seed)
        return self._draw(rng.random(n), rng.random(n))

    def _draw_positions(self, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Items and their probabilities q at global positions ``first .. first + count - 1``
        of the draw stream, from the current weights."""
        u_domain = np.empty(count)
        u_item = np.empty(count)
        _kernels.position_uniforms(self._key, first, u_domain, u_item)
        q = np.empty(count)
        return self._draw(u_domain, u_item, q), q

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
        idx = _index_input(items)
        rank_ids = _index_input(ranks)
        if rank_ids.size != idx.size:
            raise ValueError(
                f"match_draws got {idx.size} items and {rank_ids.size} ranks; give one rank per "
                "item."
            )
        return self._stream.match(idx, rank_ids)

    def commit_draws(self, match: DrawMatch) -> None:
        """Marks the draws of a matched batch as trained on (see :meth:`match_draws`)."""
        self._stream.commit(match)

    # ------------------------------------------------------------------ state

    def fingerprint(self) -> dict[str, Any]:
        """What a saved state must match: sizes, layout and domain assignment."""
        return {
            "num_items": self.num_items,
            "num_domains": self.num_domains,
            "block_size": self.block_size,
            "layout_hash": self._layout_hash,
        }

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
            "domain_probs": torch.from_numpy(self._probs.copy()),
            "static": torch.from_numpy(self._factor(0)),
            "dynamic": torch.from_numpy(self._factor(1)) if self._dynamic_used else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores a state from :meth:`state_dict`: every field is validated first, then all of
        it is applied (a bad state raises ValueError naming the field and changes nothing)."""
        parsed = self._parse_state(state)
        self._resolve_distributed()
        if parsed["stream"]["world_size"] != self.num_replicas:
            raise ValueError(
                f"the sampler state was written by a run with {parsed['stream']['world_size']} "
                f"ranks, this one has {self.num_replicas}; resume with the same number of ranks."
            )
        self._factors[:, 0, :] = parsed["static"].reshape(-1, self.block_size)
        dynamic = parsed["dynamic"]
        self._factors[:, 1, :] = 1.0 if dynamic is None else dynamic.reshape(-1, self.block_size)
        self._dynamic_used = dynamic is not None
        self._build_tree()
        self._refresh_effective_probs(parsed["domain_probs"])
        self._stream.apply_state(parsed["stream"])

    def _parse_state(self, state: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(state, Mapping) or "version" not in state:
            raise ValueError("not a ReweightSampler state (no 'version' key).")
        if state_scalar("sampler state", "version", state["version"]) != _STATE_VERSION:
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
            saved = state_scalar("sampler state fingerprint", key, saved_fingerprint.get(key))
            if saved != value:
                mismatched[key] = (saved, value)
        for key in ("seed", "num_samples", "infinite"):
            saved = state_scalar("sampler state", key, state[key])
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
        n_positions = self._factors.shape[0] * self.block_size
        factors: dict[str, np.ndarray | None] = {}
        for name in ("static", "dynamic"):
            value = state[name]
            if value is None and name == "dynamic":
                factors[name] = None
                continue
            array = state_array("sampler state", name, value)
            if array.shape != (n_positions,) or array.dtype != np.float32:
                raise ValueError(
                    f"sampler state: {name!r} factor has shape {tuple(array.shape)} and dtype "
                    f"{array.dtype}, expected ({n_positions},) float32; the state comes from "
                    "another configuration or is corrupt."
                )
            if not (np.all(np.isfinite(array)) and np.all(array >= 0)):
                raise ValueError(
                    f"sampler state: {name!r} factor has negative or non-finite values; the "
                    "state is corrupt (nothing was changed)."
                )
            factors[name] = array.copy()
        static = factors["static"]
        if static is None:  # pragma: no cover - rejected in the loop above
            raise ValueError("sampler state: 'static' factor is missing.")
        padding = np.ones(n_positions, dtype=bool)
        for d in range(self.num_domains):
            first = int(self._position_offsets[d])
            padding[first : first + int(self._counts[d])] = False
        if np.any(static[padding] != 0):
            raise ValueError(
                "sampler state: 'static' factor is non-zero on padding slots; the state is corrupt."
            )
        probs = state_array("sampler state", "domain_probs", state["domain_probs"])
        probs = probs.astype(np.float64)
        if probs.shape != (self.num_domains,):
            raise ValueError(
                f"sampler state: 'domain_probs' has shape {probs.shape}, expected "
                f"({self.num_domains},)."
            )
        if not (np.all(np.isfinite(probs)) and np.all(probs >= 0) and abs(probs.sum() - 1) < 1e-9):
            raise ValueError(
                f"sampler state: 'domain_probs' {probs.tolist()} must be finite, >= 0 and sum "
                "to 1; the state is corrupt."
            )
        weights = static.astype(np.float64)
        if factors["dynamic"] is not None:
            weights = weights * factors["dynamic"]
        has_mass = np.add.reduceat(weights, self._position_offsets[:-1]) > 0
        if not np.any(has_mass & (probs > 0)):
            raise ValueError(
                "sampler state: no domain with positive 'domain_probs' has an item of positive "
                "weight; nothing could be drawn (the state is corrupt)."
            )
        stream = state["stream"]
        if not isinstance(stream, Mapping):
            raise ValueError("sampler state: 'stream' must be a mapping.")
        return {
            "static": factors["static"],
            "dynamic": factors["dynamic"],
            "domain_probs": probs.copy(),
            "stream": self._stream.parse_state(stream),
        }

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
        per_domain = _kernels.domain_stats(
            self._factors, self._block_offsets, self._node_stats, self._node_dirty
        )
        _, mass, _ = self._domain_bounds()
        pi = self._effective
        live = np.flatnonzero((pi > 0) & (mass > 0))
        pi_live, mass_live = pi[live], mass[live]
        sumsq, largest, smallest = per_domain[live, 0], per_domain[live, 1], per_domain[live, 2]
        sum_q2 = float(np.sum(pi_live**2 * (sumsq / mass_live) / mass_live))
        q_max = float(np.max(pi_live * (largest / mass_live)))
        q_min = float(np.min(pi_live * (smallest / mass_live)))
        entropy, entropy_exact = self._entropy(live, mass)
        ess = 1.0 / sum_q2
        return {
            "ess": ess,
            "ess_fraction": ess / self.num_items,
            "entropy": entropy,
            "entropy_exact": entropy_exact,
            "entropy_fraction": entropy / math.log(self.num_items) if self.num_items > 1 else 1.0,
            "max_min_ratio": q_max / q_min if q_min > 0 else math.inf,
            "max_prob": q_max,
            "reachable_items": int(np.sum(self._positive_items[live])),
            "domain_probs": pi.copy(),
        }

    def _entropy(self, live: np.ndarray, mass: np.ndarray) -> tuple[float, bool]:
        """H(q): exact in O(N) up to 2^22 items, else a Monte-Carlo estimate −E_q[log q]
        from 2^16 draws of a fixed private generator (standard error well under 1%)."""
        if self._factors.size // 2 <= 1 << 22:
            weights = self._factor(0).astype(np.float64) * self._factor(1)
            positive = weights > 0
            wlogw = np.add.reduceat(
                np.where(positive, weights * np.log(np.where(positive, weights, 1.0)), 0.0),
                self._position_offsets[:-1],
            )
            pi, m = self._effective[live], mass[live]
            terms = pi * (np.log(pi) - np.log(m) + wlogw[live] / m)
            return float(-np.sum(terms)), True
        rng = np.random.default_rng(0x5EED)
        draws = self._draw(rng.random(1 << 16), rng.random(1 << 16))
        return float(-np.mean(np.log(self.probabilities(draws)))), False

    def memory_bytes(self) -> int:
        """Bytes held in per-item and per-block arrays (what grows with N).

        Example:
            >>> ReweightSampler(1_000_000).memory_bytes() / 1_000_000 < 16
            True
        """
        arrays: Sequence[np.ndarray] = [
            self._factors,
            self._perm,
            self._item_domain,
            self._rank_low,
            self._marks,
            self._tree,
            self._prefix,
            self._level_marks,
            self._node_stats,
            self._node_dirty,
        ]
        return int(sum(a.nbytes for a in arrays))
