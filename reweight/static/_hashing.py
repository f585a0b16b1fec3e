"""Numba kernels of the hashed n-gram featurizer, and the pure-Python hash they must match.

Documents arrive as one UTF-8 byte buffer plus offsets (document i is
``data[offsets[i]:offsets[i + 1]]``). Each kernel decodes code points, classifies them with a
table built from Python's own ``re`` module and ``unicodedata`` (``\\w`` word characters,
``\\s`` whitespace, combining marks and joiners that extend a word, anything else
punctuation), cuts tokens exactly like :func:`reweight.static.features.token_pattern`, and
hashes every n-gram's UTF-8 bytes (tokens joined by one space) with 64-bit FNV-1a followed by
the murmur3 ``fmix64`` finaliser; the bucket is Lemire's multiply-shift reduction of the top
32 bits, ``((h >> 32) * num_buckets) >> 32`` (uniform, and no division). Nothing depends on
``PYTHONHASHSEED``, the process, the platform or the run. Each token is hashed while it is cut
(one pass); a bigram continues the first token's FNV state with a space and the second token.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import numba
import numpy as np

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
_FMIX_1 = 0xFF51AFD7ED558CCD
_FMIX_2 = 0xC4CEB9FE1A85EC53
_MASK = (1 << 64) - 1

_U_OFFSET = np.uint64(FNV_OFFSET)
_U_PRIME = np.uint64(FNV_PRIME)
_U_FMIX_1 = np.uint64(_FMIX_1)
_U_FMIX_2 = np.uint64(_FMIX_2)
_U_33 = np.uint64(33)
_U_32 = np.uint64(32)
_U_SPACE = np.uint64(0x20)

SPACE, WORD, PUNCT, EXTEND = 0, 1, 2, 3  # character classes in the table
JOINERS = (0x200C, 0x200D)  # zero-width non-joiner and joiner: part of a word, like marks


def bucket_of(data: bytes, num_buckets: int) -> int:
    """The bucket of an n-gram's UTF-8 bytes, in pure Python (the kernels' specification):
    ``((stable_hash64(data) >> 32) * num_buckets) >> 32``.

    Example:
        >>> bucket_of(b"hello", 10_000)
        9131
    """
    return ((stable_hash64(data) >> 32) * num_buckets) >> 32


def stable_hash64(data: bytes) -> int:
    """fmix64(FNV-1a-64(data)): the n-gram hash, in pure Python (the kernels' specification).

    Example:
        >>> hex(stable_hash64(b"hello"))
        '0xe9c562c0fdb23244'
    """
    h = FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * FNV_PRIME) & _MASK
    h ^= h >> 33
    h = (h * _FMIX_1) & _MASK
    h ^= h >> 33
    h = (h * _FMIX_2) & _MASK
    h ^= h >> 33
    return h


@lru_cache(maxsize=1)
def word_extenders() -> tuple[int, ...]:
    """Code points that continue a word token but cannot start one: every combining mark
    (Unicode category M*: Mn, Mc, Me) and the zero-width (non-)joiners U+200C, U+200D.

    Example:
        >>> extenders = word_extenders()
        >>> 0x0301 in extenders, 0x094D in extenders, ord("a") in extenders
        (True, True, False)
    """
    category = unicodedata.category
    marks = [c for c in range(0x110000) if category(chr(c))[0] == "M"]
    return tuple(sorted({*marks, *JOINERS}))


@lru_cache(maxsize=1)
def char_classes() -> np.ndarray:
    """uint8 class of every code point (0 whitespace, 1 word, 2 punctuation, 3 extender).

    Built once per process (~0.3 s) from the running Python's ``re`` (``\\w``, ``\\s``) and
    ``unicodedata`` (:func:`word_extenders`, none of which is ``\\w`` or ``\\s``), so the
    kernels tokenise exactly like :func:`reweight.static.features.token_pattern`. An extender
    continues a word token and is punctuation anywhere else.
    """
    everything = "".join(map(chr, range(0x110000)))
    table = np.full(0x110000, PUNCT, dtype=np.uint8)
    for pattern, cls in ((r"\w+", WORD), (r"\s+", SPACE)):
        for match in re.finditer(pattern, everything):
            table[match.start() : match.end()] = cls
    extenders = np.asarray(word_extenders(), dtype=np.int64)
    table[extenders[table[extenders] == PUNCT]] = EXTEND
    table.setflags(write=False)
    return table


@numba.njit(cache=True, nogil=True, inline="always")
def _fmix(k: np.uint64) -> np.uint64:
    k ^= k >> _U_33
    k *= _U_FMIX_1
    k ^= k >> _U_33
    k *= _U_FMIX_2
    k ^= k >> _U_33
    return k


@numba.njit(cache=True, nogil=True, inline="always")
def _fnv(h: np.uint64, data: np.ndarray, start: int, end: int) -> np.uint64:
    for j in range(start, end):
        h = (h ^ np.uint64(data[j])) * _U_PRIME
    return h


@numba.njit(cache=True, nogil=True, inline="always")
def _bucket(h: np.uint64, num_buckets: np.uint64) -> np.int64:
    """Lemire's multiply-shift range reduction of the top 32 bits of fmix64(h)."""
    return np.int64(((_fmix(h) >> _U_32) * num_buckets) >> _U_32)


@numba.njit(cache=True, nogil=True)
def _tokenize(
    data: np.ndarray,
    start: int,
    end: int,
    table: np.ndarray,
    ts: np.ndarray,
    te: np.ndarray,
    th: np.ndarray,
) -> tuple[int, int]:
    """Token byte spans [ts[k], te[k]) of data[start:end] and each token's FNV-1a state th[k]
    (one pass); returns (token count, word-token count)."""
    ntok = 0
    nword = 0
    prev = SPACE
    h = _U_OFFSET
    i = start
    while i < end:
        b = np.int64(data[i])
        if b < 0x80:  # ASCII: no combining marks
            cls = table[b]
            width = 1
        else:
            if b < 0xE0:
                cp = ((b & 0x1F) << 6) | (np.int64(data[i + 1]) & 0x3F)
                width = 2
            elif b < 0xF0:
                cp = (
                    ((b & 0x0F) << 12)
                    | ((np.int64(data[i + 1]) & 0x3F) << 6)
                    | (np.int64(data[i + 2]) & 0x3F)
                )
                width = 3
            else:
                cp = (
                    ((b & 0x07) << 18)
                    | ((np.int64(data[i + 1]) & 0x3F) << 12)
                    | ((np.int64(data[i + 2]) & 0x3F) << 6)
                    | (np.int64(data[i + 3]) & 0x3F)
                )
                width = 4
            cls = table[cp]
            if cls == EXTEND:  # a combining mark or joiner: part of a word, else punctuation
                cls = WORD if prev == WORD else PUNCT
        if cls == SPACE:
            if prev != SPACE:
                th[ntok - 1] = h
            prev = SPACE
        else:
            if cls != prev:  # a new token starts here
                if prev != SPACE:
                    th[ntok - 1] = h
                ts[ntok] = i
                ntok += 1
                if cls == WORD:
                    nword += 1
                prev = cls
                h = _U_OFFSET
            te[ntok - 1] = i + width
            h = _fnv(h, data, i, i + width)
        i += width
    if prev != SPACE:
        th[ntok - 1] = h
    return ntok, nword


@numba.njit(cache=True, nogil=True)
def _doc_buckets(
    data: np.ndarray,
    start: int,
    end: int,
    table: np.ndarray,
    n: int,
    num_buckets: int,
    ts: np.ndarray,
    te: np.ndarray,
    th: np.ndarray,
    out: np.ndarray,
) -> tuple[int, int]:
    """Bucket ids of every n-gram of one document, position-major: for each token t, the
    n-grams starting at t in increasing order (unigram, bigram, ...). Returns (n-grams, word
    tokens)."""
    ntok, nword = _tokenize(data, start, end, table, ts, te, th)
    buckets = np.uint64(num_buckets)
    count = 0
    for t in range(ntok):
        h = th[t]
        out[count] = _bucket(h, buckets)
        count += 1
        for order in range(1, n):
            if t + order >= ntok:
                break
            h = (h ^ _U_SPACE) * _U_PRIME
            h = _fnv(h, data, ts[t + order], te[t + order])
            out[count] = _bucket(h, buckets)
            count += 1
    return count, nword


@numba.njit(cache=True, nogil=True)
def _scratch(offsets: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    longest = 0
    for i in range(offsets.size - 1):
        longest = max(longest, offsets[i + 1] - offsets[i])
    size = max(longest, 1)
    return (
        np.empty(size, np.int64),
        np.empty(size, np.int64),
        np.empty(size, np.uint64),
        np.empty(size * n, np.int64),
    )


@numba.njit(cache=True, nogil=True)
def bucket_ids(
    data: np.ndarray, offsets: np.ndarray, table: np.ndarray, n: int, num_buckets: int
) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32, id_offsets int64): the n-gram buckets of every document, concatenated."""
    ndocs = offsets.size - 1
    ts, te, th, out = _scratch(offsets, n)
    ids = np.empty(max(data.size * n, 1), np.int32)
    id_offsets = np.zeros(ndocs + 1, np.int64)
    total = 0
    for i in range(ndocs):
        count, _ = _doc_buckets(
            data, offsets[i], offsets[i + 1], table, n, num_buckets, ts, te, th, out
        )
        for j in range(count):
            ids[total + j] = out[j]
        total += count
        id_offsets[i + 1] = total
    return ids[:total].copy(), id_offsets


@numba.njit(cache=True, nogil=True)
def add_counts(
    data: np.ndarray,
    offsets: np.ndarray,
    table: np.ndarray,
    n: int,
    num_buckets: int,
    counts: np.ndarray,
) -> int:
    """Adds every document's n-gram bucket counts into ``counts``; returns the n-gram total."""
    ts, te, th, out = _scratch(offsets, n)
    total = 0
    for i in range(offsets.size - 1):
        count, _ = _doc_buckets(
            data, offsets[i], offsets[i + 1], table, n, num_buckets, ts, te, th, out
        )
        for j in range(count):
            counts[out[j]] += 1
        total += count
    return total


@numba.njit(cache=True, nogil=True)
def log_weights(
    data: np.ndarray,
    offsets: np.ndarray,
    table: np.ndarray,
    n: int,
    num_buckets: int,
    log_ratio: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(log w(x) = Σ over the document's n-grams of log_ratio[bucket], word-token count), per
    document."""
    ts, te, th, out = _scratch(offsets, n)
    ndocs = offsets.size - 1
    result = np.zeros(ndocs, np.float64)
    tokens = np.zeros(ndocs, np.int64)
    for i in range(ndocs):
        count, nword = _doc_buckets(
            data, offsets[i], offsets[i + 1], table, n, num_buckets, ts, te, th, out
        )
        acc = 0.0
        for j in range(count):
            acc += log_ratio[out[j]]
        result[i] = acc
        tokens[i] = nword
    return result, tokens
