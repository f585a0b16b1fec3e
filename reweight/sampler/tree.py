"""WeightTree: the item layout, the float64 sum pyramid of the item factors, and π.

Everything :class:`reweight.sampler.ReweightSampler` knows about the weights lives here, in
NumPy arrays handed to the compiled kernels of :mod:`reweight.sampler._kernels` as three named
structures: the :class:`~reweight.sampler._kernels.Layout` of items in positions (built once),
the :class:`~reweight.sampler._kernels.Pyramid` of factors and sums (rewritten by every update)
and the :class:`~reweight.sampler._kernels.Domains` a draw needs (π and each domain's mass).
No torch sampler, no ranks, no stream: the tree draws items from uniforms it is given, and calls
``on_change`` whenever a draw made now could differ from one made before.
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from reweight._checks import (
    CHUNK,
    check_factors,
    check_indices,
    chunks,
    from_tensor,
    index_array,
    item_state,
    read_state_array,
    value_array,
)
from reweight.sampler import _kernels
from reweight.sampler._kernels import Domains, Fields, Layout, Pyramid

__all__ = ["WeightTree"]

ArrayLike = Any
ItemParts = Callable[[slice], np.ndarray]  # the values of a slice of items

# Warnings point at the caller of the sampler's public method (the sampler adds one frame).
_WARN_STACKLEVEL = 5


class WeightTree:
    """Per-item factors a (static) and b (dynamic) and domain probabilities π, laid out for
    O(log N) updates and draws of q(i) = π(d)·a_i·b_i / Σ_{j∈d} a_j·b_j.

    Args:
        num_items: number of items N (may be omitted when ``domains`` is given).
        domains: per-item domain ids in ``0..K-1`` (None: a single domain).
        num_domains: K; defaults to ``max(domains) + 1``. Every domain must have items.
        block_size: items per block at the bottom of the sum pyramid (also its fan-out).

    π starts as the natural proportions; all factors start at 1. ``on_change`` (a callable,
    default a no-op) is called after every change that can change a draw.

    Example:
        >>> tree = WeightTree(domains=[0, 0, 1])
        >>> tree.update([1], [3.0])
        >>> tree.probabilities([0, 1, 2]).tolist()
        [0.16666666666666666, 0.5, 0.3333333333333333]
    """

    def __init__(
        self,
        num_items: int | None = None,
        *,
        domains: ArrayLike | None = None,
        num_domains: int | None = None,
        block_size: int = 16,
    ) -> None:
        if block_size < 2 or block_size > 255:
            raise ValueError(
                f"block_size must be in [2, 255] (it is also the tree's fan-out), got {block_size}."
            )
        self.on_change: Callable[[], None] = lambda: None
        self.block_size = int(block_size)
        self._build_layout(num_items, domains, num_domains)
        # Row 0: static factor a, row 1: dynamic factor b; padding slots have a = 0.
        self._factors = np.empty((self._num_blocks, 2, self.block_size), dtype=np.float32)
        _kernels.init_factors(self._factors, self._layout)
        self.dynamic_used = False
        self._build_tree()
        self._warned_domains: set[int] = set()
        self._probs = self.natural_probs()
        self._refresh_effective_probs()

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
            dom = np.asarray(from_tensor(domains)).reshape(-1)
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
        item_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        blocks = -(-counts // self.block_size)
        block_offsets = np.concatenate([[0], np.cumsum(blocks)]).astype(np.int64)
        self._num_blocks = int(block_offsets[-1])
        position_offsets = block_offsets * self.block_size
        if contiguous or dom is None:
            # Empty per-item arrays of the usual dtypes select the contiguous branch of the kernels.
            item_domain, low_bits, index_dtype = np.empty(0, dtype=np.uint8), 16, np.int32
            num_positions, mark_offsets = 0, np.zeros(self.num_domains + 1, dtype=np.int64)
        else:
            # The smallest unsigned type for ids up to K - 1; with the low bits of the rank it
            # takes 3 bytes per item for up to 65,536 domains.
            item_domain = dom.astype(np.min_scalar_type(self.num_domains - 1))
            low_bits = 16 if item_domain.dtype == np.uint8 else 8
            index_dtype = np.int32 if self.num_items < 2**31 else np.int64
            num_positions = self._num_blocks * self.block_size
            per_domain = (counts - 1) >> low_bits
            mark_offsets = np.concatenate([[0], np.cumsum(per_domain)]).astype(np.int64)
        self.layout = Layout(
            item_offsets=item_offsets,
            position_offsets=position_offsets,
            block_offsets=block_offsets,
            perm=np.full(num_positions, -1, dtype=index_dtype),
            item_domain=item_domain,
            rank_low=np.empty(item_domain.size, dtype=np.uint16 if low_bits == 16 else np.uint8),
            low_bits=low_bits,
            marks=np.empty(int(mark_offsets[-1]), dtype=index_dtype),
            mark_offsets=mark_offsets,
        )
        self._layout = tuple(self.layout)  # as the kernels take it (see _kernels.Fields)
        if item_domain.size:
            _kernels.build_layout(item_domain, self._layout)
        layout_hash = zlib.crc32(counts.tobytes())
        if dom is not None and not contiguous:
            layout_hash = zlib.crc32(np.ascontiguousarray(dom).tobytes(), layout_hash)
        self.layout_hash = int(layout_hash)

    def _positions_of(self, items: np.ndarray) -> np.ndarray:
        """Maps (validated) global item ids to positions in the layout."""
        return _kernels.locate(np.ascontiguousarray(items, dtype=np.int64), self._layout)

    def item_domains(self, items: ArrayLike) -> np.ndarray:
        """Domain id of each item (int64 array)."""
        idx = check_indices(items, self.num_items)
        if self.layout.item_domain.size:
            return self.layout.item_domain[idx].astype(np.int64)
        return np.searchsorted(self.layout.item_offsets, idx, side="right") - 1

    @property
    def domain_sizes(self) -> np.ndarray:
        """Number of items per domain (int64 array of length K)."""
        return self._counts.copy()

    def natural_probs(self) -> np.ndarray:
        """Each domain's share of the items, n_d / N."""
        return self._counts / float(self.num_items)

    # ------------------------------------------------------------------ pyramid

    def _factor(self, row: int) -> np.ndarray:
        """Factor row 0 (static) or 1 (dynamic) of every position, as a flat copy."""
        return self._factors[:, row, :].reshape(-1)

    def _factor_at(self, row: int, positions: np.ndarray) -> np.ndarray:
        return self._factors[positions // self.block_size, row, positions % self.block_size]

    def _build_tree(self) -> None:
        """Recomputes the sum pyramid and the per-domain counts of positive items: O(N).

        The tree has fan-out ``block_size``: level 0 holds block sums, level k + 1 the sums of
        groups of ``block_size`` nodes of level k (see :mod:`reweight.sampler._kernels`).
        """
        nb, width = self._num_blocks, self.block_size
        sizes = [-(-nb // width) * width]
        while sizes[-1] > width:
            sizes.append(-(-(sizes[-1] // width) // width) * width)
        groups = -(-nb // width)
        old = getattr(self, "pyramid", None)
        if old is None:  # allocated once; a rebuild rewrites these arrays in place
            old = Pyramid(
                factors=self._factors,
                tree=np.zeros(int(sum(sizes)), dtype=np.float64),
                level_offsets=np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64),
                prefix=np.zeros(int(sum(sizes[1:])), dtype=np.float64),
                level_marks=np.zeros(int(sum(sizes[1:])), dtype=np.uint8),
                positive_items=np.zeros(0, dtype=np.int64),
                node_stats=np.zeros((groups, 3), dtype=np.float64),
                node_dirty=np.ones(groups, dtype=np.uint8),
            )
        old.node_stats.fill(0.0)
        old.node_dirty.fill(1)
        self.pyramid = old._replace(
            positive_items=_kernels.count_positive(self._factors, self._layout)
        )
        self._pyramid = tuple(self.pyramid)
        _kernels.rebuild(self._pyramid)
        self._bounds: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._domains: Fields | None = None
        self.on_change()

    @property
    def _domain_has_mass(self) -> np.ndarray:
        return self.pyramid.positive_items > 0

    def _domain_bounds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(start mass, mass, exact) of every domain in the tree's cumulative order.

        ``exact`` flags domains much lighter than the mass before them: ``start + u · mass``
        would round at the scale of ``start``, so their draws take an exact walk instead.
        """
        if self._bounds is None:
            self._bounds = _kernels.domain_bounds(self._pyramid, self._layout)
        return self._bounds

    def _draw_domains(self) -> Fields:
        """π and the domain bounds, as the draw kernels take them (a plain tuple)."""
        if self._domains is None:
            pi = (self._effective, self._cumulative_probs, self._guide)
            self._domains = tuple(Domains(*pi, *self._domain_bounds()))
        return self._domains

    # ------------------------------------------------------------------ weights

    def _write(self, row: int, positions: np.ndarray, values: np.ndarray) -> bool:
        crossed = _kernels.write_items(self._pyramid, self._layout, row, positions, values)
        self.dynamic_used |= row == 1
        self._bounds = self._domains = None
        self.on_change()
        return bool(crossed)

    def _apply(self, row: int, name: str, items: ArrayLike, values: ArrayLike) -> None:
        """Writes factor ``row`` for some items in O(log N) each; nothing changes if it fails.

        The batch is validated and located in one compiled pass; only when it is bad do the
        (slower) NumPy validators run, to raise an error that names the problem.
        """
        idx = index_array(items)
        vals = value_array(values)
        if vals.size != idx.size:
            raise ValueError(
                f"{name} has {vals.size} entries but {idx.size} were expected; "
                "pass one value per item."
            )
        if idx.size == 0:
            return
        positions = np.empty(idx.size, dtype=np.int64)
        values32 = np.empty(idx.size, dtype=np.float32)
        status, zeros = _kernels.check_and_locate(idx, vals, self._layout, positions, values32)
        if status != 0:
            check_indices(idx, self.num_items)
            check_factors(name, vals, idx.size)
            raise ValueError(f"{name}: invalid batch (status {status}).")  # pragma: no cover
        # Only a zero can remove mass; keep the old values for an undo only then.
        old_values = self._factor_at(row, positions) if zeros else None
        was_used = self.dynamic_used
        crossed = self._write(row, positions, values32)
        if old_values is not None:
            try:
                self._check_total_mass(self._domain_has_mass)
            except ValueError:
                self._write(row, positions[::-1].copy(), old_values[::-1].copy())
                self.dynamic_used = was_used
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
        """Sets the static factor a for all items (``items=None``) or for the given items."""
        if items is None:
            self._set_all(0, "static factor", values)
        else:
            self._apply(0, "static factor", items, values)

    def update(self, items: ArrayLike, values: ArrayLike) -> None:
        """Sets the dynamic factor b of some items: O(log N) each."""
        self._apply(1, "dynamic factor", items, values)

    def set_dynamic(self, values: ArrayLike) -> None:
        """Sets the dynamic factor b of every item at once (O(N))."""
        self._set_all(1, "dynamic factor", values)

    def _set_all(self, row: int, name: str, values: ArrayLike | ItemParts) -> None:
        """Checks all values, then writes factor ``row`` of every item in place, one chunk at a
        time. ``values`` is an array (checked whole, no copy when float32) or a function of a
        slice of items (read twice, chunk by chunk: to check, then to write)."""
        n = self.num_items
        if callable(values):
            read, whole = values, None
        else:
            whole = check_factors(name, values, n, keep_float32=True)
            read = whole.__getitem__
        has_mass = np.zeros(self.num_domains, dtype=bool)
        for write in (False, True):
            counters = self.layout.position_offsets[:-1].copy()
            for part in chunks(n):
                piece = read(part)
                if whole is None and not write:
                    where = name if n <= CHUNK else f"{name} (items {part.start}..{part.stop - 1})"
                    piece = check_factors(where, piece, part.stop - part.start, keep_float32=True)
                found = _kernels.scatter_row(
                    piece, part.start, counters, self._layout, self._factors, row, write
                )
                has_mass |= found
            if not write:
                self._check_total_mass(has_mass)
        if row == 1:
            self.dynamic_used = True
        self._build_tree()
        self._refresh_effective_probs()

    def parse_probs(self, probs: ArrayLike) -> np.ndarray:
        """Validated, normalised π (no check against the items' mass)."""
        array = check_factors("domain_probs", probs, self.num_domains)
        total = array.sum()
        if total <= 0:
            raise ValueError(
                f"domain_probs {array.tolist()} sum to 0; give at least one domain a positive "
                "probability."
            )
        return array / total

    def set_domain_probs(self, probs: ArrayLike) -> None:
        """Sets π from relative per-domain weights (normalised here): O(K)."""
        array = self.parse_probs(probs)
        self._check_drawable(array, self._domain_has_mass)
        self._refresh_effective_probs(array)

    @staticmethod
    def _check_drawable(probs: np.ndarray, has_mass: np.ndarray) -> None:
        if not (has_mass & (probs > 0)).any():
            raise ValueError(
                f"domain_probs {probs.tolist()} put all their mass on domains whose items all "
                "have weight 0; nothing could be drawn (nothing was changed)."
            )

    def request_probs(self, probs: np.ndarray) -> None:
        """Takes ``probs`` (from :meth:`parse_probs`) as the requested π without applying it:
        the next change of the weights applies it."""
        self._probs = probs

    def _refresh_effective_probs(self, probs: np.ndarray | None = None) -> None:
        """Sets π (default: keeps it) restricted to domains that have mass. Warns once per
        excluded domain, before anything changes (an error filter leaves the tree as it was).
        """
        probs = self._probs if probs is None else probs
        excluded = self._warn_excluded(probs, self._domain_has_mass)
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
        self._domains = None
        self.on_change()

    def _warn_excluded(self, probs: np.ndarray, has_mass: np.ndarray) -> np.ndarray:
        """Warns once per domain with π > 0 whose items all have weight 0; returns them."""
        excluded = (probs > 0) & ~has_mass
        fresh = [int(d) for d in np.flatnonzero(excluded) if int(d) not in self._warned_domains]
        for d in fresh:
            warnings.warn(
                f"domain {d} has probability {probs[d]:.4g} but all its items have weight 0; "
                "it is excluded from sampling and π is renormalised over the other domains.",
                RuntimeWarning,
                stacklevel=_WARN_STACKLEVEL + 1,
            )
        self._warned_domains.update(fresh)
        return excluded

    @property
    def domain_probs(self) -> np.ndarray:
        """The π actually sampled: requested π without zero-mass domains, renormalised."""
        return self._effective.copy()

    def factors(self, items: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """The static factor a and the dynamic factor b of the given items (float64 arrays)."""
        positions = self._positions_of(check_indices(items, self.num_items))
        return (
            self._factor_at(0, positions).astype(np.float64),
            self._factor_at(1, positions).astype(np.float64),
        )

    def probabilities(self, items: ArrayLike) -> np.ndarray:
        """q(i) for the given items under the current weights (float64)."""
        weights, masses, d = self._weights_in_domain(items)
        live = masses > 0
        safe = np.where(live, masses, 1.0)
        return np.where(live, self._effective[d] * weights / safe, 0.0)

    def item_shares(self, items: ArrayLike) -> np.ndarray:
        """Each item's share of its domain's weight, a·b / Σ_{j∈d} a_j·b_j (0 in a domain
        without weight)."""
        weights, masses, _ = self._weights_in_domain(items)
        live = masses > 0
        return np.where(live, weights / np.where(live, masses, 1.0), 0.0)

    def _weights_in_domain(self, items: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(a·b, the mass of the item's domain, the domain) of each item, in float64."""
        idx = check_indices(items, self.num_items)
        positions = self._positions_of(idx)
        weights = self._factor_at(0, positions).astype(np.float64)
        weights *= self._factor_at(1, positions)
        d = self.item_domains(idx)
        _, masses, _ = self._domain_bounds()
        return weights, masses[d], d

    # ------------------------------------------------------------------ drawing

    def draw(
        self, u_domain: np.ndarray, u_item: np.ndarray, q: np.ndarray | None = None
    ) -> np.ndarray:
        """Inverse-CDF draws of item ids: domain from π, then an item within it (their
        probabilities go to ``q`` when given)."""
        out = np.empty(u_domain.size, dtype=np.int64)
        q = np.empty(0) if q is None else q
        _kernels.draw_items(
            u_domain, u_item, self._draw_domains(), self._layout, self._pyramid, out, q
        )
        return out

    def draw_positions(
        self, key: np.uint64, first: int, count: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Items and their probabilities q at positions ``first .. first + count - 1`` of the
        draw stream ``key`` (see :func:`reweight.sampler._kernels.position_uniforms`)."""
        out = np.empty(count, dtype=np.int64)
        q = np.empty(count)
        domains = self._draw_domains()
        _kernels.draw_positions(key, first, domains, self._layout, self._pyramid, out, q)
        return out, q

    # ------------------------------------------------------------------ state

    def fingerprint(self) -> dict[str, Any]:
        """What a saved state must match: sizes, layout and domain assignment."""
        return {
            "num_items": self.num_items,
            "num_domains": self.num_domains,
            "block_size": self.block_size,
            "layout_hash": self.layout_hash,
        }

    def state_dict(self) -> dict[str, Any]:
        """π as requested and both factor rows, in position order (the dynamic row is None
        while no dynamic factor was ever set)."""
        return {
            "domain_probs": torch.from_numpy(self._probs.copy()),
            "static": item_state(self._factors[:, 0, :]),
            "dynamic": item_state(self._factors[:, 1, :]) if self.dynamic_used else None,
        }

    def parse_state(
        self, state: Mapping[str, Any], next_probs: np.ndarray | None = None
    ) -> dict[str, Any]:
        """Validates the fields of :meth:`state_dict` in a sampler state, one chunk at a time,
        and returns them (the factor rows as views of the state's arrays, not copies); changes
        nothing. ``next_probs``, π to be set right after (e.g. by the Reweighter), is checked
        against the saved factors too. Raises ValueError naming the bad field."""
        probs = read_state_array("sampler state", "domain_probs", state["domain_probs"])
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
        static = self._parse_factor("static", state["static"])
        dynamic = (
            None if state["dynamic"] is None else self._parse_factor("dynamic", state["dynamic"])
        )
        offsets = self.layout.position_offsets
        has_mass = np.zeros(self.num_domains, dtype=bool)
        for d in range(self.num_domains):  # padding is 0; a positive a·b, one chunk at a time
            first, count = int(offsets[d]), int(self._counts[d])
            for part in chunks(int(offsets[d + 1]) - first - count):
                if np.any(static[first + count + part.start : first + count + part.stop] != 0):
                    raise ValueError(
                        "sampler state: 'static' factor is non-zero on padding slots; the "
                        "state is corrupt."
                    )
            for part in chunks(count):
                if has_mass[d]:
                    break
                span = slice(first + part.start, first + part.stop)
                positive = static[span] > 0
                if dynamic is not None:
                    positive &= dynamic[span] > 0
                has_mass[d] = bool(positive.any())
        if not np.any(has_mass & (probs > 0)):
            raise ValueError(
                "sampler state: no domain with positive 'domain_probs' has an item of positive "
                "weight; nothing could be drawn (the state is corrupt)."
            )
        warn_probs = [probs]  # what apply_state warns about before it changes anything
        if next_probs is not None:
            warn_probs.append(self.parse_probs(next_probs))
            self._check_drawable(warn_probs[-1], has_mass)
        return {
            "static": static,
            "dynamic": dynamic,
            "domain_probs": probs,
            "has_mass": has_mass,
            "warn_probs": warn_probs,
        }

    def _parse_factor(self, name: str, value: Any) -> np.ndarray:
        """A factor row of a saved state: float32, one per position, finite and >= 0 (checked
        one chunk at a time; returned as it is, not copied)."""
        n_positions = self._num_blocks * self.block_size
        array = read_state_array("sampler state", name, value)
        if array.shape != (n_positions,) or array.dtype != np.float32:
            raise ValueError(
                f"sampler state: {name!r} factor has shape {tuple(array.shape)} and dtype "
                f"{array.dtype}, expected ({n_positions},) float32; the state comes from "
                "another configuration or is corrupt."
            )
        for part in chunks(n_positions):
            piece = array[part]
            if not (np.all(np.isfinite(piece)) and np.all(piece >= 0)):
                raise ValueError(
                    f"sampler state: {name!r} factor has negative or non-finite values; the "
                    "state is corrupt (nothing was changed)."
                )
        return array

    def apply_state(self, parsed: Mapping[str, Any]) -> None:
        """Applies the weights returned by :meth:`parse_state`: warns first (so an error filter
        changes nothing), then copies the factor rows into this tree's arrays in place."""
        for probs in parsed["warn_probs"]:
            self._warn_excluded(probs, parsed["has_mass"])
        rows = self._factors.shape[0], self.block_size
        self._factors[:, 0, :] = parsed["static"].reshape(rows)
        dynamic = parsed["dynamic"]
        self._factors[:, 1, :] = 1.0 if dynamic is None else dynamic.reshape(rows)
        self.dynamic_used = dynamic is not None
        self._build_tree()
        self._refresh_effective_probs(parsed["domain_probs"])

    # ------------------------------------------------------------------ diagnostics

    def stats(self) -> dict[str, Any]:
        """Diagnostics of q: ESS, entropy, max/min ratio, per-domain shares (see
        :meth:`reweight.sampler.ReweightSampler.stats`)."""
        per_domain = _kernels.domain_stats(self._pyramid, self._layout)
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
            "reachable_items": int(np.sum(self.pyramid.positive_items[live])),
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
                self.layout.position_offsets[:-1],
            )
            pi, m = self._effective[live], mass[live]
            terms = pi * (np.log(pi) - np.log(m) + wlogw[live] / m)
            return float(-np.sum(terms)), True
        rng = np.random.default_rng(0x5EED)
        draws = self.draw(rng.random(1 << 16), rng.random(1 << 16))
        return float(-np.mean(np.log(self.probabilities(draws)))), False

    def memory_bytes(self) -> int:
        """Bytes held in per-item and per-block arrays (what grows with N)."""
        layout, pyramid = self.layout, self.pyramid
        arrays: Sequence[np.ndarray] = [
            self._factors,
            layout.perm,
            layout.item_domain,
            layout.rank_low,
            layout.marks,
            pyramid.tree,
            pyramid.prefix,
            pyramid.level_marks,
            pyramid.node_stats,
            pyramid.node_dirty,
        ]
        return int(sum(a.nbytes for a in arrays))
