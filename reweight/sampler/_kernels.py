"""Compiled inner loops of ReweightSampler (numba): layout, lookups, draws, updates, statistics.

The kernels take their arrays in three named structures: :class:`Layout` (where each item
sits), :class:`Pyramid` (the item factors, their float64 sum pyramid and what is derived from
them) and :class:`Domains` (π and each domain's place in the pyramid, as a draw needs them).
Callers pass each one as a plain tuple of its fields (:data:`Fields`), ``tuple(layout)``, and
the kernel names them again on entry (``Layout(*layout)``, free in compiled code): numba
dispatches a call with a plain tuple of arrays about as fast as one with the arrays as separate
arguments, but a ``NamedTuple`` several times slower (about 3 µs per structure and call), which
the draw stream would pay on every batch. Private helpers take the named structures.

Item factors live in ``Pyramid.factors``, a float32 array of shape (blocks, 2, width): row 0
holds the static factor a and row 1 the dynamic factor b of the ``width`` item slots of a
block, so one block's data is contiguous. An item's weight is a·b, always computed in float64
(the product of two float32 values never overflows or underflows float64). An item is
*positive* when a > 0 and b > 0.

The tree (``Pyramid.tree``) is one flat float64 array. Level 0 holds one sum per block; level
k + 1 holds the sums of groups of ``width`` nodes of level k; every level is padded with zeros
to whole groups and the top level is a single group. ``level_offsets[k]`` is where level k
starts. Every node is recomputed from its children in one fixed order (never updated by
differences), so the tree is a pure function of the factors: a rebuilt tree equals an
incrementally updated one bit for bit. Above level 0, ``prefix`` mirrors the tree with the
running sums within each group of siblings, so that a draw compares its target with a whole
group at once (vectorised) instead of adding the siblings one by one; level 0 (16 times larger)
is scanned by adding.

Positions and items: each domain's items occupy consecutive positions from
``Layout.position_offsets[d]`` in ascending item order (padded to whole blocks). In the
*contiguous* layout (domain ids non-decreasing) position and item differ by a per-domain offset
and the layout's per-item arrays are empty. Otherwise ``perm`` maps positions to items and the
way back is a rank within the domain: the low ``low_bits`` bits of the rank are stored per item
(``rank_low``), the high bits are the number of the domain's *marks* (the items at ranks that
are multiples of 2**low_bits) that are <= the item — a binary search in a small, cache-resident
table.

Loops run over whole batches (draws go in tiles of ``_TILE``), so the memory accesses of
different draws or updates are independent and overlap; inner loops are branch-free where the
branch would be unpredictable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, cast

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = [
    "Domains",
    "Layout",
    "Pyramid",
    "build_layout",
    "check_and_locate",
    "count_positive",
    "domain_bounds",
    "domain_stats",
    "draw_items",
    "draw_positions",
    "init_factors",
    "locate",
    "position_uniforms",
    "rebuild",
    "scatter_row",
    "stream_key",
    "write_items",
]


Fields = tuple[Any, ...]
"""The type of a kernel's ``layout``, ``pyramid`` or ``domains`` argument: that structure as a
plain tuple of its fields, ``tuple(layout)``; the kernel names it again on entry."""


class Layout(NamedTuple):
    """Where each item sits: per-domain offsets and, for an interleaved layout, the maps
    between items and positions (the per-item arrays are empty in a contiguous layout)."""

    item_offsets: np.ndarray
    """int64 (K + 1,): cumulative item counts (in a contiguous layout, each domain's first
    item)."""
    position_offsets: np.ndarray
    """int64 (K + 1,): each domain's first position (domains are padded to whole blocks)."""
    block_offsets: np.ndarray
    """int64 (K + 1,): each domain's first block (``position_offsets // width``)."""
    perm: np.ndarray
    """positions → items (int32, int64 past 2^31 items; -1 on padding); empty if contiguous."""
    item_domain: np.ndarray
    """items → domain id (the smallest unsigned type that holds K - 1); empty if contiguous."""
    rank_low: np.ndarray
    """items → the low ``low_bits`` bits of the item's rank in its domain (uint16 or uint8)."""
    low_bits: int
    """16 while domain ids fit in a byte, else 8 (3 bytes per item up to 65,536 domains)."""
    marks: np.ndarray
    """The items at ranks k · 2**low_bits (k >= 1) of each domain, domain by domain."""
    mark_offsets: np.ndarray
    """int64 (K + 1,): where each domain's marks start in ``marks``."""


class Pyramid(NamedTuple):
    """The item factors and everything derived from them (all rewritten by the kernels)."""

    factors: np.ndarray
    """float32 (blocks, 2, width): static factor a (row 0) and dynamic factor b (row 1)."""
    tree: np.ndarray
    """float64: block sums (level 0) and the sum pyramid above them, level by level."""
    level_offsets: np.ndarray
    """int64: where each tree level starts."""
    prefix: np.ndarray
    """float64: running sums within each group of siblings, for the tree above level 0."""
    level_marks: np.ndarray
    """uint8, one per tree node above level 0: scratch space of :func:`write_items` (all 0)."""
    positive_items: np.ndarray
    """int64 (K,): positive items (a > 0 and b > 0) of each domain."""
    node_stats: np.ndarray
    """float64 (groups, 3): cached (Σ w², max w, min positive w) per group of ``width``
    blocks."""
    node_dirty: np.ndarray
    """uint8 (groups,): the groups whose ``node_stats`` are out of date."""


class Domains(NamedTuple):
    """π and each domain's place in the pyramid, as :func:`draw_items` needs them."""

    probs: np.ndarray
    """float64 (K,): the domain probabilities π actually drawn from."""
    cumulative: np.ndarray
    """float64 (K,): Σ π up to each domain, exactly 1 from the last positive π on."""
    guide: np.ndarray
    """int64 (T + 1,), T a power of two: domains with ``cumulative <= i / T``."""
    starts: np.ndarray
    """float64 (K,): the pyramid's mass before each domain."""
    masses: np.ndarray
    """float64 (K,): each domain's mass (0 without a positive item)."""
    exact: np.ndarray
    """bool (K,): domains far lighter than the mass before them (drawn by an exact walk)."""


_TILE = 256  # draws processed together, level by level (their working set stays in L1)
_AHEAD = 8  # how many iterations ahead the loops prefetch
_F32_MAX = float(np.finfo(np.float32).max)
_F32_TINY = float(np.finfo(np.float32).tiny)


def _prefetch_intrinsic(typingctx: Any, array: Any, index: Any) -> Any:
    """Hints the CPU to fetch ``array.flat[index]`` into cache (``llvm.prefetch``; no effect
    on results). Loops use it a few iterations ahead for random accesses into arrays far
    larger than the caches, so that several memory fetches are in flight at once."""
    if not isinstance(array, types.Array) or not isinstance(index, types.Integer):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        pointer = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        function = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(ir.VoidType(), [pointer.type, i32, i32, i32]),
            "llvm.prefetch.p0",
        )
        # read, high temporal locality, data cache. LLVM versions with typed pointers (numba
        # 0.59's LLVM 14) rename the intrinsic to its mangled form (llvm.prefetch.p0i8).
        builder.call(
            function, [pointer, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)]
        )
        return context.get_dummy_value()

    return types.void(array, index), codegen


_prefetch = cast(Callable[[np.ndarray, int], None], intrinsic(_prefetch_intrinsic))


# ---------------------------------------------------------------------- layout


@njit(cache=True)
def build_layout(domains: np.ndarray, layout: Fields) -> None:
    """Fills the layout's ``perm`` (pre-filled with -1), ``rank_low`` and ``marks`` from the
    per-item ``domains``, in one pass over items."""
    layout = Layout(*layout)
    position_offsets, perm, rank_low = layout.position_offsets, layout.perm, layout.rank_low
    marks, mark_offsets, low_bits = layout.marks, layout.mark_offsets, layout.low_bits
    counters = np.zeros(position_offsets.size - 1, dtype=np.int64)
    mask = (1 << low_bits) - 1
    for i in range(domains.size):
        d = np.int64(domains[i])
        r = counters[d]
        counters[d] = r + 1
        perm[position_offsets[d] + r] = i
        rank_low[i] = r & mask
        if r > 0 and (r & mask) == 0:
            marks[mark_offsets[d] + (r >> low_bits) - 1] = i


@njit(cache=True)
def init_factors(factors: np.ndarray, layout: Fields) -> None:
    """Static factor 1 on every item slot, 0 on padding; dynamic factor 1 everywhere."""
    layout = Layout(*layout)
    width = factors.shape[2]
    position_offsets, item_offsets = layout.position_offsets, layout.item_offsets
    factors[:, 0, :] = 0.0
    factors[:, 1, :] = 1.0
    for d in range(position_offsets.size - 1):
        start = position_offsets[d]
        for p in range(start, start + item_offsets[d + 1] - item_offsets[d]):
            factors[p // width, 0, p % width] = 1.0


@njit(cache=True, inline="always")
def _upper_bound(sorted_values: np.ndarray, lo: int, hi: int, x: float) -> int:
    """First index in [lo, hi) whose value is > x (hi if none); branch-free steps."""
    count = hi - lo
    while count > 0:
        half = count >> 1
        right = sorted_values[lo + half] <= x
        lo = lo + half + 1 if right else lo
        count = count - half - 1 if right else half
    return lo


@njit(cache=True, inline="always")
def _position_of(item: int, layout: Layout) -> int:
    if layout.item_domain.size == 0:  # contiguous layout
        item_offsets = layout.item_offsets
        d = _upper_bound(item_offsets, 0, item_offsets.size, item) - 1
        return layout.position_offsets[d] + item - item_offsets[d]
    d = np.int64(layout.item_domain[item])
    mark_offsets = layout.mark_offsets
    m0 = mark_offsets[d]
    high = _upper_bound(layout.marks, m0, mark_offsets[d + 1], item) - m0
    return layout.position_offsets[d] + (high << layout.low_bits) + np.int64(layout.rank_low[item])


@njit(cache=True)
def locate(items: np.ndarray, layout: Fields) -> np.ndarray:
    """Positions of (already validated) item ids."""
    layout = Layout(*layout)
    out = np.empty(items.size, dtype=np.int64)
    for k in range(items.size):
        out[k] = _position_of(items[k], layout)
    return out


@njit(cache=True)
def check_and_locate(
    items: np.ndarray,
    values: np.ndarray,
    layout: Fields,
    positions: np.ndarray,
    values32: np.ndarray,
) -> tuple[int, int]:
    """Validates an update batch and maps it to ``positions``, writing nothing else (the
    values, as float32, go to ``values32``).

    Returns (status, zeros): status 0 when every item id lies in [0, N) and every value is 0
    or a finite float32-normal positive number; 1 for a bad item id; 2 for a bad value.
    ``zeros`` counts the zero values (only a zero can take mass away).
    """
    layout = Layout(*layout)
    num_items = layout.item_offsets[layout.item_offsets.size - 1]
    item_domain, rank_low = layout.item_domain, layout.rank_low
    zeros = 0
    for k in range(items.size):
        item = items[k]
        if item < 0 or item >= num_items:
            return 1, 0
        v = values[k]
        if not (v >= 0.0 and v <= _F32_MAX):  # also catches NaN
            return 2, 0
        if v == 0.0:
            zeros += 1
        elif v < _F32_TINY:
            return 2, 0
        values32[k] = v
    n = items.size
    for k in range(n):
        if item_domain.size and k + _AHEAD < n:
            _prefetch(item_domain, items[k + _AHEAD])
            _prefetch(rank_low, items[k + _AHEAD])
        positions[k] = _position_of(items[k], layout)
    return 0, zeros


@njit(cache=True)
def scatter_row(
    values: np.ndarray,
    first: int,
    counters: np.ndarray,
    layout: Fields,
    factors: np.ndarray,
    row: int,
    write: bool,
) -> np.ndarray:
    """Walks the values of items ``first .. first + values.size − 1`` to their positions in
    factor ``row``; call it on consecutive pieces from item 0, with ``counters`` (int64, one per
    domain) starting as a copy of ``position_offsets[:-1]`` (it tracks the interleaved layout).

    Without ``write``: changes nothing but ``counters`` and returns whether each domain would
    keep a positive item among these (value > 0 and the other row's factor > 0). With
    ``write``: stores the values (as float32), sets the row's padding slots to 0 after the
    last item, and returns all False.
    """
    layout = Layout(*layout)
    item_domain, item_offsets = layout.item_domain, layout.item_offsets
    position_offsets = layout.position_offsets
    width = factors.shape[2]
    other = 1 - row
    num_domains = position_offsets.size - 1
    out = np.zeros(num_domains, dtype=np.bool_)
    d = _upper_bound(item_offsets, 0, item_offsets.size, first) - 1
    for k in range(values.size):
        i = first + k
        if item_domain.size == 0:  # contiguous: positions follow the items within a domain
            while i >= item_offsets[d + 1]:
                d += 1
            p = position_offsets[d] + i - item_offsets[d]
        else:
            d = np.int64(item_domain[i])
            p = counters[d]
            counters[d] = p + 1
        if write:
            factors[p // width, row, p % width] = values[k]
        elif values[k] > 0 and factors[p // width, other, p % width] > 0:
            out[d] = True
    if write and first + values.size == item_offsets[-1]:
        for d in range(num_domains):
            pad = position_offsets[d] + item_offsets[d + 1] - item_offsets[d]
            for p in range(pad, position_offsets[d + 1]):
                factors[p // width, row, p % width] = 0.0
    return out


# ---------------------------------------------------------------------- tree


@njit(cache=True, inline="always")
def _block_sum(factors: np.ndarray, block: int) -> float:
    """Σ a·b over one block, in four interleaved partial sums (a short dependency chain)."""
    a = factors[block, 0]  # row views: no negative-index handling per element
    b = factors[block, 1]
    width = a.size
    s0 = s1 = s2 = s3 = 0.0
    c = 0
    while c + 4 <= width:
        s0 += np.float64(a[c]) * np.float64(b[c])
        s1 += np.float64(a[c + 1]) * np.float64(b[c + 1])
        s2 += np.float64(a[c + 2]) * np.float64(b[c + 2])
        s3 += np.float64(a[c + 3]) * np.float64(b[c + 3])
        c += 4
    while c < width:
        s0 += np.float64(a[c]) * np.float64(b[c])
        c += 1
    return (s0 + s1) + (s2 + s3)


@njit(cache=True, inline="always")
def _group_sum(tree: np.ndarray, start: int, width: int) -> float:
    """Σ tree[start : start + width] in four interleaved partial sums."""
    row = tree[start : start + width]
    s0 = s1 = s2 = s3 = 0.0
    c = 0
    while c + 4 <= width:
        s0 += row[c]
        s1 += row[c + 1]
        s2 += row[c + 2]
        s3 += row[c + 3]
        c += 4
    while c < width:
        s0 += row[c]
        c += 1
    return (s0 + s1) + (s2 + s3)


@njit(cache=True, inline="always")
def _group_prefix(tree: np.ndarray, start: int, prefix: np.ndarray, at: int, width: int) -> None:
    """prefix[at + c] = Σ tree[start : start + c + 1] (left to right, as a scan adds them)."""
    row = tree[start : start + width]
    out = prefix[at : at + width]
    acc = 0.0
    for c in range(width):
        acc += row[c]
        out[c] = acc


@njit(cache=True)
def rebuild(pyramid: Fields) -> None:
    """Recomputes every block sum, every tree level and every level's group prefix sums from
    the factors: O(N).

    ``prefix`` mirrors the tree above level 0 (``prefix[i - level_offsets[1]]`` belongs to
    ``tree[i]``): within each group of ``width`` siblings it holds their running sums, which is
    what a draw compares its target with (all at once instead of one add at a time).
    """
    pyramid = Pyramid(*pyramid)
    factors, tree, level_offsets = pyramid.factors, pyramid.tree, pyramid.level_offsets
    prefix = pyramid.prefix
    width = factors.shape[2]
    tree[:] = 0.0
    for block in range(factors.shape[0]):
        tree[block] = _block_sum(factors, block)
    for level in range(1, level_offsets.size):
        below, here = level_offsets[level - 1], level_offsets[level]
        for node in range((here - below) // width):
            tree[here + node] = _group_sum(tree, below + node * width, width)
    if level_offsets.size > 1:
        shift = level_offsets[1]
        for start in range(shift, tree.size, width):
            _group_prefix(tree, start, prefix, start - shift, width)


@njit(cache=True)
def count_positive(factors: np.ndarray, layout: Fields) -> np.ndarray:
    """Number of positive items (a > 0 and b > 0) per domain."""
    layout = Layout(*layout)
    block_offsets = layout.block_offsets
    width = factors.shape[2]
    out = np.zeros(block_offsets.size - 1, dtype=np.int64)
    for d in range(out.size):
        count = 0
        for block in range(block_offsets[d], block_offsets[d + 1]):
            for c in range(width):
                count += factors[block, 0, c] > 0 and factors[block, 1, c] > 0
        out[d] = count
    return out


@njit(cache=True)
def write_items(
    pyramid: Fields, layout: Fields, row: int, positions: np.ndarray, values: np.ndarray
) -> bool:
    """Sets factor ``row`` (0 static, 1 dynamic) of each position, in order (the last
    duplicate wins), and refreshes the tree above them and the prefix sums of the touched
    groups (see :func:`rebuild`), removing duplicate nodes on levels where they are common.

    Keeps ``positive_items[d]`` (positive items of domain d) up to date, flags the touched
    statistics nodes in ``node_dirty`` and returns whether some domain gained its first or lost
    its last positive item. ``level_marks`` (all 0) is scratch space for removing duplicate
    nodes; it is left all 0.
    """
    pyramid = Pyramid(*pyramid)
    layout = Layout(*layout)
    factors, tree, level_offsets = pyramid.factors, pyramid.tree, pyramid.level_offsets
    prefix, level_marks = pyramid.prefix, pyramid.level_marks
    positive_items, node_dirty = pyramid.positive_items, pyramid.node_dirty
    position_offsets = layout.position_offsets
    width = factors.shape[2]
    n = positions.size
    nodes = np.empty(n, dtype=np.int64)
    crossed = False
    for k in range(n):
        if k + _AHEAD < n:
            ahead = positions[k + _AHEAD] // width
            _prefetch(factors, ahead * 2 * width)
            _prefetch(factors, (ahead * 2 + 1) * width)
            _prefetch(tree, ahead - ahead % width)  # the block's sibling group: 2 lines
            _prefetch(tree, ahead - ahead % width + width - 1)
        p = positions[k]
        block = p // width
        c = p - block * width
        a = factors[block, 0]
        b = factors[block, 1]
        before = a[c] > 0 and b[c] > 0
        factors[block, row, c] = values[k]
        after = a[c] > 0 and b[c] > 0
        if before != after:
            d = _upper_bound(position_offsets, 0, position_offsets.size, p) - 1
            count = positive_items[d]
            if after:
                positive_items[d] = count + 1
                crossed |= count == 0
            else:
                positive_items[d] = count - 1
                crossed |= count == 1
        tree[block] = _block_sum(factors, block)
        node_dirty[block // width] = 1
        nodes[k] = block
    count = n
    for level in range(1, level_offsets.size):
        below, here = level_offsets[level - 1], level_offsets[level]
        marks_base = here - level_offsets[1]
        level_size = (here - below) // width
        unique = 0
        marked = 4 * count >= level_size  # else few duplicates are expected: no marks
        if not marked:
            for k in range(count):
                nodes[k] //= width
            unique = count
        else:
            for k in range(count):
                parent = nodes[k] // width
                if level_marks[marks_base + parent] == 0:
                    level_marks[marks_base + parent] = 1
                    nodes[unique] = parent
                    unique += 1
        for k in range(unique):
            if k + _AHEAD < unique:
                _prefetch(tree, below + nodes[k + _AHEAD] * width)
                _prefetch(tree, below + nodes[k + _AHEAD] * width + width - 1)
            parent = nodes[k]
            if marked:
                level_marks[marks_base + parent] = 0
            tree[here + parent] = _group_sum(tree, below + parent * width, width)
            if level > 1:  # the children's group is final now: its prefix sums too
                start = below + parent * width
                _group_prefix(tree, start, prefix, start - level_offsets[1], width)
        count = unique
    top = level_offsets[level_offsets.size - 1]
    if level_offsets.size > 1:  # the single group at the top
        _group_prefix(tree, top, prefix, top - level_offsets[1], width)
    return crossed


@njit(cache=True)
def domain_bounds(pyramid: Fields, layout: Fields) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, mass, exact) of every domain: the pyramid's mass before the domain, its own mass
    (0 when it has no positive item) and whether it is far lighter than the mass before it
    (``start · 2^-20 > mass``: ``start + u · mass`` would round, its draws take the exact
    walk)."""
    pyramid = Pyramid(*pyramid)
    layout = Layout(*layout)
    starts = _prefix_sums(pyramid, layout.block_offsets[:-1])
    masses = _range_sums(pyramid, layout.block_offsets)
    for d in range(masses.size):
        if pyramid.positive_items[d] == 0:
            masses[d] = 0.0
    return starts, masses, starts * 2.0**-20 > masses


@njit(cache=True)
def _prefix_sums(pyramid: Pyramid, blocks: np.ndarray) -> np.ndarray:
    """Σ of the block sums before each given block (a walk up the tree)."""
    tree, level_offsets = pyramid.tree, pyramid.level_offsets
    width = pyramid.factors.shape[2]
    out = np.zeros(blocks.size)
    top = level_offsets[level_offsets.size - 1]
    for k in range(blocks.size):
        node = blocks[k]
        total = 0.0
        for level in range(level_offsets.size):
            group, column = node // width, node % width
            start = level_offsets[level] + group * width
            for j in range(column):
                total += tree[start + j]
            node = group
        if node > 0:  # past the top group: everything lies before
            for j in range(width):
                total += tree[top + j]
        out[k] = total
    return out


@njit(cache=True)
def _range_sums(pyramid: Pyramid, block_offsets: np.ndarray) -> np.ndarray:
    """Σ of the block sums of each domain [block_offsets[d], block_offsets[d + 1]), adding only
    tree nodes inside the range (no cancellation against other domains' mass)."""
    tree, level_offsets = pyramid.tree, pyramid.level_offsets
    width = pyramid.factors.shape[2]
    out = np.zeros(block_offsets.size - 1)
    for d in range(out.size):
        s, e = block_offsets[d], block_offsets[d + 1]
        total = 0.0
        level = 0
        while s < e and level < level_offsets.size:
            base = level_offsets[level]
            if s // width == (e - 1) // width or level == level_offsets.size - 1:
                for j in range(s, e):
                    total += tree[base + j]
                break
            left_end = (s // width + 1) * width
            right_start = (e // width) * width
            for j in range(s, left_end):
                total += tree[base + j]
            for j in range(right_start, e):
                total += tree[base + j]
            s, e = left_end // width, right_start // width
            level += 1
        out[d] = total
    return out


# ---------------------------------------------------------------------- draws


@njit(cache=True, inline="always")
def _last_positive(tree: np.ndarray, start: int, width: int) -> int:
    """Index of the last positive entry of tree[start : start + width] (0 if none)."""
    chosen = width - 1
    while chosen > 0 and tree[start + chosen] <= 0:
        chosen -= 1
    return chosen


@njit(cache=True, inline="always")
def _pick_child(values: np.ndarray, goal: float) -> tuple[int, float]:
    """First i with goal < Σ values[: i + 1] (subtracting as it goes) and the goal left in
    it; the last positive entry (with half its value) when rounding runs past the end."""
    last = -1
    for i in range(values.size):
        v = values[i]
        if v > 0:
            if goal < v:
                return i, goal
            last = i
        goal -= v
    return last, values[last] * 0.5 if last >= 0 else 0.0


@njit(cache=True)
def _draw_exact(goal: float, first_block: int, last_block: int, pyramid: Pyramid) -> int:
    """The position at mass ``goal`` within blocks [first_block, last_block), without ever
    adding the mass outside that range (exact however light the range is next to the rest).

    The range is split into the tree nodes that lie inside it (at most 2·(width - 1) per level,
    visited in the order :func:`_range_sums` adds them); the goal picks one of them, and the walk
    descends inside it: O(width · log N). -1 if the range has no positive item.
    """
    factors, tree, level_offsets = pyramid.factors, pyramid.tree, pyramid.level_offsets
    width = factors.shape[2]
    top = level_offsets.size - 1
    s, e = first_block, last_block
    level = 0
    chosen = -1
    chosen_level = -1
    last = -1
    last_level = -1
    while s < e and level <= top and chosen < 0:
        base = level_offsets[level]
        whole = s // width == (e - 1) // width or level == top
        left_end = e if whole else (s // width + 1) * width
        right_start = e if whole else (e // width) * width
        for lo, hi in ((s, left_end), (right_start, e)):
            for j in range(lo, hi):
                v = tree[base + j]
                if v > 0:
                    if goal < v:
                        chosen, chosen_level = j, level
                        break
                    last, last_level = j, level
                goal -= v
            if chosen >= 0:
                break
        if whole:
            break
        s, e = left_end // width, right_start // width
        level += 1
    if chosen < 0:  # rounding ran past the range's mass: the last positive node
        if last < 0:
            return -1
        chosen, chosen_level = last, last_level
        goal = tree[level_offsets[last_level] + last] * 0.5
    node = chosen
    for level in range(chosen_level, 0, -1):
        start = level_offsets[level - 1] + node * width
        child, goal = _pick_child(tree[start : start + width], goal)
        node = node * width + max(child, 0)
    a = factors[node, 0]
    b = factors[node, 1]
    last = -1
    for c in range(width):
        w = np.float64(a[c]) * np.float64(b[c])
        if w > 0:
            if goal < w:
                return node * width + c
            last = c
        goal -= w
    return node * width + last if last >= 0 else -1


@njit(cache=True)
def _draw_items(
    u_domain: np.ndarray,
    u_item: np.ndarray,
    domains: Domains,
    layout: Layout,
    pyramid: Pyramid,
    out: np.ndarray,
    q_out: np.ndarray,
) -> int:
    """Inverse-CDF draws: a domain from π, then an item of that domain ∝ its weight.

    The domain is the first d with ``domains.cumulative[d] > u`` (the last domain if none);
    ``guide[i]`` (length T + 1, T a power of two) is the number of domains with
    ``cumulative <= i / T``, which brackets the answer for u in [i/T, (i+1)/T).
    Writes item ids to ``out`` (through ``perm`` when it is not empty, else by the per-domain
    offset); returns how many draws needed the exact fallback because rounding pushed the tree
    walk outside the chosen domain. Domains flagged ``exact`` (far lighter than the mass before
    them, where ``start + u · mass`` loses precision) always take the exact walk. When
    ``q_out`` is not empty it receives each draw's probability q = π(d)·a·b / mass(d), computed
    exactly as :meth:`ReweightSampler.probabilities` computes it.
    """
    cumulative_probs, guide, domain_probs = domains.cumulative, domains.guide, domains.probs
    domain_starts, domain_masses, exact = domains.starts, domains.masses, domains.exact
    block_offsets, position_offsets = layout.block_offsets, layout.position_offsets
    item_offsets, perm = layout.item_offsets, layout.perm
    factors, tree, level_offsets = pyramid.factors, pyramid.tree, pyramid.level_offsets
    prefix = pyramid.prefix
    n = u_domain.size
    want_q = q_out.size > 0
    width = factors.shape[2]
    last_domain = cumulative_probs.size - 1
    buckets = guide.size - 1
    top = level_offsets.size - 1
    domain = np.empty(_TILE, dtype=np.int64)
    target = np.empty(_TILE)
    node = np.empty(_TILE, dtype=np.int64)
    fallbacks = 0
    for first in range(0, n, _TILE):
        m = min(_TILE, n - first)
        for j in range(m):
            u = u_domain[first + j]
            bucket = np.int64(u * buckets)
            d = _upper_bound(
                cumulative_probs, guide[bucket], min(guide[bucket + 1], last_domain), u
            )
            domain[j] = d
            target[j] = domain_starts[d] + u_item[first + j] * domain_masses[d]
            node[j] = 0
        for level in range(top, 0, -1):  # compare with each group's running sums at once
            base = level_offsets[level]
            at = base - level_offsets[1]  # where this level's prefix sums start
            for j in range(m):
                if j + _AHEAD < m:
                    _prefetch(prefix, at + node[j + _AHEAD] * width)
                offset = node[j] * width
                sums = prefix[at + offset : at + offset + width]
                t = target[j]
                count = np.int32(0)  # a 32-bit count lets the compiler vectorise this
                for c in range(width):
                    count += np.int32(sums[c] <= t)
                chosen = np.int64(count)
                if chosen == width:  # rounding ran past the last child: last positive one
                    chosen = _last_positive(tree, base + offset, width)
                    t = tree[base + offset + chosen] * 0.5
                elif chosen > 0:
                    t -= sums[chosen - 1]
                target[j] = t
                node[j] = offset + chosen
        for j in range(m):  # block sums: add them up while comparing, branch-free
            if j + _AHEAD < m:
                _prefetch(tree, node[j + _AHEAD] * width)
            offset = node[j] * width
            row = tree[offset : offset + width]
            t = target[j]
            acc = 0.0
            before = 0.0
            chosen = 0
            for c in range(width):
                acc += row[c]
                inside = acc <= t
                chosen += inside
                before = acc if inside else before
            if chosen == width:
                chosen = _last_positive(tree, offset, width)
                t = row[chosen] * 0.5
            else:
                t -= before
            target[j] = t
            node[j] = offset + chosen
        for j in range(m):  # within the block; ``node`` becomes the position
            if j + _AHEAD < m:
                ahead = node[j + _AHEAD]
                _prefetch(factors, ahead * 2 * width)
                _prefetch(factors, (ahead * 2 + 1) * width)
            d = domain[j]
            block = node[j]
            position = -1
            if not exact[d] and block_offsets[d] <= block and block < block_offsets[d + 1]:
                t = target[j]
                a = factors[block, 0]
                b = factors[block, 1]
                acc = 0.0
                chosen = 0
                for c in range(width):
                    acc += np.float64(a[c]) * np.float64(b[c])
                    chosen += acc <= t
                if chosen == width:  # rounding ran past the last item: last positive one
                    chosen = width - 1
                    while chosen >= 0 and not (a[chosen] > 0 and b[chosen] > 0):
                        chosen -= 1
                if chosen >= 0:
                    position = block * width + chosen
            if position < 0:
                fallbacks += 0 if exact[d] else 1
                position = _draw_exact(
                    u_item[first + j] * domain_masses[d],
                    block_offsets[d],
                    block_offsets[d + 1],
                    pyramid,
                )
            node[j] = position
            if want_q:
                weight = np.float64(factors[position // width, 0, position % width]) * np.float64(
                    factors[position // width, 1, position % width]
                )
                q_out[first + j] = domain_probs[d] * weight / domain_masses[d]
            if perm.size:
                _prefetch(perm, position)
        if perm.size:  # a separate loop: independent random reads overlap
            for j in range(m):
                out[first + j] = perm[node[j]]
        else:
            for j in range(m):
                d = domain[j]
                out[first + j] = node[j] - position_offsets[d] + item_offsets[d]
    return fallbacks


@njit(cache=True)
def draw_items(
    u_domain: np.ndarray,
    u_item: np.ndarray,
    domains: Fields,
    layout: Fields,
    pyramid: Fields,
    out: np.ndarray,
    q_out: np.ndarray,
) -> int:
    """Draws one item per pair of uniforms (``u_domain``, ``u_item``); see
    :func:`_draw_items`."""
    return _draw_items(
        u_domain, u_item, Domains(*domains), Layout(*layout), Pyramid(*pyramid), out, q_out
    )


# ---------------------------------------------------------------------- the draw stream

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True, inline="always")
def _mix64(x: np.uint64) -> np.uint64:
    """SplitMix64's output function: a bijective 64-bit mixer."""
    x = (x ^ (x >> np.uint64(30))) * _MIX_1
    x = (x ^ (x >> np.uint64(27))) * _MIX_2
    return x ^ (x >> np.uint64(31))


@njit(cache=True)
def stream_key(seed: np.uint64) -> np.uint64:
    """The key of a draw stream: the seed, mixed."""
    return _mix64(seed ^ np.uint64(0x5EED5EED5EED5EED))


@njit(cache=True)
def position_uniforms(key: np.uint64, first: int, u_domain: np.ndarray, u_item: np.ndarray) -> None:
    """The two uniforms in [0, 1) of draw positions ``first, first + 1, ...``: SplitMix64
    outputs at counters 2p and 2p + 1 of the stream ``key`` — a pure function of (key,
    position), whatever batches the positions are generated in."""
    for j in range(u_domain.size):
        counter = np.uint64(2 * (first + j))
        a = _mix64(key + counter * _GOLDEN)
        b = _mix64(key + (counter + np.uint64(1)) * _GOLDEN)
        u_domain[j] = np.float64(a >> np.uint64(11)) * 2.0**-53
        u_item[j] = np.float64(b >> np.uint64(11)) * 2.0**-53


@njit(cache=True)
def draw_positions(
    key: np.uint64,
    first: int,
    domains: Fields,
    layout: Fields,
    pyramid: Fields,
    out: np.ndarray,
    q_out: np.ndarray,
) -> int:
    """:func:`draw_items` at the draw positions ``first .. first + out.size - 1`` of the stream
    ``key`` (their uniforms from :func:`position_uniforms`), in one call."""
    u_domain = np.empty(out.size)
    u_item = np.empty(out.size)
    position_uniforms(key, first, u_domain, u_item)
    return _draw_items(
        u_domain, u_item, Domains(*domains), Layout(*layout), Pyramid(*pyramid), out, q_out
    )


# ---------------------------------------------------------------------- statistics


@njit(cache=True)
def _range_stats(factors: np.ndarray, first_block: int, last_block: int) -> tuple:
    """(Σ w², max w, min positive w) over blocks [first_block, last_block), in float64."""
    squares = 0.0
    largest = 0.0
    smallest = np.inf
    for block in range(first_block, last_block):
        for c in range(factors.shape[2]):
            a = factors[block, 0, c]
            b = factors[block, 1, c]
            if a > 0 and b > 0:
                w = np.float64(a) * np.float64(b)
                squares += w * w
                largest = max(largest, w)
                smallest = min(smallest, w)
    return squares, largest, smallest


@njit(cache=True)
def domain_stats(pyramid: Fields, layout: Fields) -> np.ndarray:
    """Per domain (Σ w², max w, min positive w); shape (K, 3).

    ``node_stats`` caches the same three figures per group of ``width`` blocks (a level-1 tree
    node); groups flagged in ``node_dirty`` are recomputed first (and unflagged). Groups that
    straddle a domain boundary are not used: a domain's partial groups at its ends are summed
    from the items directly. The result does not depend on which groups were cached.
    """
    pyramid = Pyramid(*pyramid)
    layout = Layout(*layout)
    factors, node_stats, node_dirty = pyramid.factors, pyramid.node_stats, pyramid.node_dirty
    block_offsets = layout.block_offsets
    width = factors.shape[2]
    num_blocks = factors.shape[0]
    for g in range(node_dirty.size):
        if node_dirty[g]:
            squares, largest, smallest = _range_stats(
                factors, g * width, min((g + 1) * width, num_blocks)
            )
            node_stats[g, 0] = squares
            node_stats[g, 1] = largest
            node_stats[g, 2] = smallest
            node_dirty[g] = 0
    out = np.empty((block_offsets.size - 1, 3))
    for d in range(out.shape[0]):
        first, last = block_offsets[d], block_offsets[d + 1]
        inner_first = (first + width - 1) // width
        inner_last = last // width
        if inner_first < inner_last:
            squares, largest, smallest = _range_stats(factors, first, inner_first * width)
            s2, l2, m2 = _range_stats(factors, inner_last * width, last)
            squares += s2
            largest = max(largest, l2)
            smallest = min(smallest, m2)
            for g in range(inner_first, inner_last):
                squares += node_stats[g, 0]
                largest = max(largest, node_stats[g, 1])
                smallest = min(smallest, node_stats[g, 2])
        else:
            squares, largest, smallest = _range_stats(factors, first, last)
        out[d, 0] = squares
        out[d, 1] = largest
        out[d, 2] = smallest
    return out
