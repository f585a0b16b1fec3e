"""Compiled inner loops of ReweightSampler (numba): the sum tree's draw, update and rebuild.

Item factors live in ``factors``, a float32 array of shape (blocks, 2, width): row 0 holds the
static factor a and row 1 the dynamic factor b of the ``width`` item slots of a block, so one
block's data is contiguous (one memory fetch per block). An item's weight is a·b, summed in
float64.

The tree is one flat float64 array. Level 0 holds one sum per block; level k + 1 holds the sums
of groups of ``width`` nodes of level k; every level is padded with zeros to whole groups and
the top level is a single group. ``level_offsets[k]`` is where level k starts.

Loops run level by level over a whole batch, so the memory accesses of different draws or
updates are independent and overlap.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["draw_positions", "prefix_sums", "range_sums", "rebuild", "write_items"]


@njit(cache=True)
def _block_stats(
    factors: np.ndarray,
    block: int,
    tree: np.ndarray,
    sumsq: np.ndarray,
    bmax: np.ndarray,
    bmin: np.ndarray,
) -> None:
    total = 0.0
    squares = 0.0
    largest = 0.0
    smallest = np.inf
    for c in range(factors.shape[2]):
        w = np.float64(factors[block, 0, c]) * np.float64(factors[block, 1, c])
        total += w
        squares += w * w
        if w > 0:
            largest = max(largest, w)
            smallest = min(smallest, w)
    tree[block] = total
    sumsq[block] = squares
    bmax[block] = largest
    bmin[block] = smallest


@njit(cache=True)
def _refresh_level(
    tree: np.ndarray, level_offsets: np.ndarray, width: int, level: int, nodes: np.ndarray
) -> None:
    """Recomputes the level-``level`` parents of ``nodes`` (indices into level - 1), in place."""
    below, here = level_offsets[level - 1], level_offsets[level]
    for k in range(nodes.size):
        node = nodes[k] // width
        nodes[k] = node
        start = below + node * width
        total = 0.0
        for j in range(width):
            total += tree[start + j]
        tree[here + node] = total


@njit(cache=True)
def rebuild(
    factors: np.ndarray,
    tree: np.ndarray,
    level_offsets: np.ndarray,
    sumsq: np.ndarray,
    bmax: np.ndarray,
    bmin: np.ndarray,
) -> None:
    """Recomputes every block's statistics and every tree level: O(N)."""
    width = factors.shape[2]
    tree[:] = 0.0
    for block in range(factors.shape[0]):
        _block_stats(factors, block, tree, sumsq, bmax, bmin)
    for level in range(1, level_offsets.size):
        count = (level_offsets[level] - level_offsets[level - 1]) // width
        _refresh_level(tree, level_offsets, width, level, np.arange(count) * width)


@njit(cache=True)
def write_items(
    factors: np.ndarray,
    row: int,
    positions: np.ndarray,
    values: np.ndarray,
    tree: np.ndarray,
    level_offsets: np.ndarray,
    sumsq: np.ndarray,
    bmax: np.ndarray,
    bmin: np.ndarray,
    position_domain_starts: np.ndarray,
    positive_items: np.ndarray,
) -> None:
    """Sets factor ``row`` (0 static, 1 dynamic) of each position, in order (the last
    duplicate wins), and refreshes the tree; keeps ``positive_items[d]`` (items of domain d
    with a positive weight) up to date.
    """
    width = factors.shape[2]
    blocks = positions // width
    for k in range(positions.size):
        b, c = blocks[k], positions[k] % width
        before = factors[b, 0, c] * factors[b, 1, c] > 0
        factors[b, row, c] = values[k]
        after = factors[b, 0, c] * factors[b, 1, c] > 0
        if before != after:
            d = np.searchsorted(position_domain_starts, positions[k], side="right") - 1
            positive_items[d] += 1 if after else -1
    for k in range(blocks.size):
        _block_stats(factors, blocks[k], tree, sumsq, bmax, bmin)
    for level in range(1, level_offsets.size):
        _refresh_level(tree, level_offsets, width, level, blocks)


@njit(cache=True)
def prefix_sums(
    tree: np.ndarray, level_offsets: np.ndarray, width: int, blocks: np.ndarray
) -> np.ndarray:
    """Σ of the block sums before each given block (a walk up the tree)."""
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
def range_sums(
    tree: np.ndarray, level_offsets: np.ndarray, width: int, block_offsets: np.ndarray
) -> np.ndarray:
    """Σ of the block sums of each domain [block_offsets[d], block_offsets[d + 1]), adding only
    tree nodes inside the range (no cancellation against other domains' mass)."""
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


@njit(cache=True)
def _draw_in_domain(goal: float, first_block: int, last_block: int, factors: np.ndarray) -> int:
    """Exact linear walk over one domain's items (the rare fallback); -1 if it has no mass."""
    width = factors.shape[2]
    chosen = -1
    for block in range(first_block, last_block):
        for c in range(width):
            w = np.float64(factors[block, 0, c]) * np.float64(factors[block, 1, c])
            if w > 0:
                chosen = block * width + c
                if goal < w:
                    return chosen
                goal -= w
    return chosen


@njit(cache=True)
def draw_positions(
    u_domain: np.ndarray,
    u_item: np.ndarray,
    cumulative_probs: np.ndarray,
    domain_starts: np.ndarray,
    domain_masses: np.ndarray,
    block_offsets: np.ndarray,
    factors: np.ndarray,
    tree: np.ndarray,
    level_offsets: np.ndarray,
    out: np.ndarray,
) -> int:
    """Inverse-CDF draws: a domain from π, then an item of that domain ∝ its weight.

    Writes positions to ``out``; returns how many draws needed the exact fallback (rounding
    pushed the walk outside the chosen domain).
    """
    n = u_domain.size
    width = factors.shape[2]
    num_domains = cumulative_probs.size
    domain = np.empty(n, dtype=np.int64)
    target = np.empty(n)
    node = np.zeros(n, dtype=np.int64)
    # A domain much lighter than the mass before it loses precision in the global walk
    # (start + u * mass rounds at the scale of start): such domains take the exact walk.
    exact = domain_starts * 2.0**-20 > domain_masses
    for k in range(n):
        d = min(np.searchsorted(cumulative_probs, u_domain[k], side="right"), num_domains - 1)
        domain[k] = d
        target[k] = domain_starts[d] + u_item[k] * domain_masses[d]
    for level in range(level_offsets.size - 1, -1, -1):
        base = level_offsets[level]
        for k in range(n):
            start = base + node[k] * width
            t = target[k]
            chosen = width - 1
            for c in range(width):
                v = tree[start + c]
                if t < v:
                    chosen = c
                    break
                t -= v
            else:  # rounding ran past the last child: take the last positive one
                while chosen > 0 and tree[start + chosen] <= 0:
                    chosen -= 1
                t = tree[start + chosen] * 0.5
            target[k] = t
            node[k] = node[k] * width + chosen
    fallbacks = 0
    for k in range(n):
        d = domain[k]
        block = node[k]
        if not exact[d] and block_offsets[d] <= block < block_offsets[d + 1]:
            t = target[k]
            chosen = -1
            last_positive = -1
            for c in range(width):
                w = np.float64(factors[block, 0, c]) * np.float64(factors[block, 1, c])
                if w > 0:
                    if t < w:
                        chosen = c
                        break
                    last_positive = c
                t -= w
            if chosen < 0:
                chosen = last_positive
            if chosen >= 0:
                out[k] = block * width + chosen
                continue
        fallbacks += 0 if exact[d] else 1
        out[k] = _draw_in_domain(
            u_item[k] * domain_masses[d], block_offsets[d], block_offsets[d + 1], factors
        )
    return fallbacks
