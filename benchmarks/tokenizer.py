"""Speed cost of the Unicode-aware word tokens of ``reweight.static`` (combining marks and
joiners stay in their word), against the previous tokenizer (NLTK's ``\\w+|[^\\w\\s]+``).

Corpora (built here, no download):

- **ascii**: the running Python's standard library ``.py`` files in sorted order, non-ASCII
  characters dropped, cut into documents of ~1,000 characters, up to ``--ascii-mb`` (20) MB;
- **mixed**: ``--mixed-mb`` (5) MB of seeded pseudo-text mixing English words, French and
  Vietnamese-like words in NFD form (letters + combining accents), Devanagari words (consonants,
  viramas, vowel signs), Russian, Greek, Arabic with harakat, CJK and a little punctuation.

Both tokenizers run the same compiled loop (UTF-8 decode, character class table, FNV-1a n-gram
hashing of unigrams + bigrams into 10,000 buckets, bucket counts): ``after`` is the library's
kernel (``reweight.static._hashing.add_counts``), ``before`` a copy of the previous kernel kept
in this file (no mark class, no word-token count). Documents are lower-cased and UTF-8 encoded
once, outside the timings (``encode_s`` reports that shared cost). Each measurement alternates
before / after ``--repeats`` times and keeps the median; ``ratio`` = after seconds / before
seconds (1.0 = no cost). ``checks.ascii_counts_identical`` confirms that ASCII text gets the
same bucket counts from both.

Usage::

    PYTHONPATH=. python benchmarks/tokenizer.py            # table
    PYTHONPATH=. python benchmarks/tokenizer.py --json     # one JSON object on stdout
    PYTHONPATH=. python benchmarks/tokenizer.py --quick    # 2 MB + 0.5 MB smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import sysconfig
import time
import unicodedata
from pathlib import Path
from typing import Any

import numba
import numpy as np

from reweight.static import _hashing
from reweight.static.features import encode_documents

NUM_BUCKETS = 10_000
NGRAMS = 2
DOC_CHARS = 1000


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- corpora


def ascii_corpus(megabytes: float) -> list[str]:
    """~1,000-character ASCII documents from the standard library's sources."""
    budget = int(megabytes * 1e6)
    docs: list[str] = []
    size = 0
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8", errors="ignore")
        except OSError:
            continue
        text = text.encode("ascii", "ignore").decode("ascii")
        for start in range(0, len(text), DOC_CHARS):
            piece = text[start : start + DOC_CHARS]
            if piece.strip():
                docs.append(piece)
                size += len(piece)
                if size >= budget:
                    return docs
    return docs


_LATIN = "abcdefghijklmnopqrstuvwxyz"
_ACCENTS = "\u0300\u0301\u0302\u0303\u0308\u0323\u0309\u031b"  # grave .. horn
_DEVA_CONSONANTS = [chr(c) for c in range(0x0915, 0x0939)]
_DEVA_SIGNS = ["\u093e", "\u093f", "\u0940", "\u0941", "\u0947", "\u094b", "\u0902", "\u094d"]
_CYRILLIC = [chr(c) for c in range(0x0430, 0x0450)]
_GREEK = [chr(c) for c in range(0x03B1, 0x03CA)]
_ARABIC = [chr(c) for c in range(0x0628, 0x063B)]
_HARAKAT = ["\u064e", "\u064f", "\u0650", "\u0651", "\u0652"]
_CJK = [chr(c) for c in range(0x4E00, 0x4E00 + 500)]
_PUNCT = [".", ",", "!", "?", ";", ":", "—", "(", ")"]


def _word(rng: random.Random) -> str:
    kind = rng.random()
    n = rng.randint(2, 9)
    if kind < 0.25:  # English
        return "".join(rng.choices(_LATIN, k=n))
    if kind < 0.45:  # French / Vietnamese-like, NFD: letters followed by combining accents
        return "".join(c + (rng.choice(_ACCENTS) if rng.random() < 0.4 else "") for c in
                       rng.choices(_LATIN, k=n))  # fmt: skip
    if kind < 0.65:  # Devanagari: consonant + vowel sign / virama / anusvara
        return "".join(c + (rng.choice(_DEVA_SIGNS) if rng.random() < 0.6 else "") for c in
                       rng.choices(_DEVA_CONSONANTS, k=max(2, n // 2)))  # fmt: skip
    if kind < 0.75:
        return "".join(rng.choices(_CYRILLIC, k=n))
    if kind < 0.82:
        return "".join(rng.choices(_GREEK, k=n))
    if kind < 0.92:  # Arabic with harakat (combining marks)
        return "".join(c + (rng.choice(_HARAKAT) if rng.random() < 0.5 else "") for c in
                       rng.choices(_ARABIC, k=n))  # fmt: skip
    return "".join(rng.choices(_CJK, k=max(1, n // 3)))


def mixed_corpus(megabytes: float, seed: int) -> list[str]:
    """Seeded multilingual pseudo-text (UTF-8 size ~``megabytes``), with combining marks."""
    rng = random.Random(seed)
    budget = int(megabytes * 1e6)
    docs: list[str] = []
    size = 0
    while size < budget:
        parts: list[str] = []
        length = 0
        while length < DOC_CHARS:
            word = _word(rng)
            if rng.random() < 0.1:
                word += rng.choice(_PUNCT)
            parts.append(word)
            length += len(word) + 1
        doc = " ".join(parts)
        docs.append(doc)
        size += len(doc.encode("utf-8"))
    return docs


# ----------------------------------------------------------------------------- before: kernel


def legacy_table() -> np.ndarray:
    """The previous character table: combining marks and joiners are punctuation."""
    table = np.array(_hashing.char_classes())
    table[table == _hashing.EXTEND] = _hashing.PUNCT
    return table


@numba.njit(nogil=True)
def _legacy_tokenize(data, start, end, table, ts, te, th):
    """The previous tokenizer loop, verbatim apart from names (returns the token count)."""
    ntok = 0
    prev = 0
    h = np.uint64(_hashing.FNV_OFFSET)
    i = start
    while i < end:
        b = np.int64(data[i])
        if b < 0x80:
            cp = b
            width = 1
        elif b < 0xE0:
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
        if cls == 0:
            if prev != 0:
                th[ntok - 1] = h
            prev = 0
        else:
            if cls != prev:
                if prev != 0:
                    th[ntok - 1] = h
                ts[ntok] = i
                ntok += 1
                prev = cls
                h = np.uint64(_hashing.FNV_OFFSET)
            te[ntok - 1] = i + width
            h = _hashing._fnv(h, data, i, i + width)
        i += width
    if prev != 0:
        th[ntok - 1] = h
    return ntok


@numba.njit(nogil=True)
def legacy_add_counts(data, offsets, table, n, num_buckets, counts):
    """The previous ``add_counts``: bucket counts of every n-gram of every document."""
    ts, te, th, _ = _hashing._scratch(offsets, n)
    buckets = np.uint64(num_buckets)
    space = np.uint64(0x20)
    prime = np.uint64(_hashing.FNV_PRIME)
    total = 0
    for i in range(offsets.size - 1):
        ntok = _legacy_tokenize(data, offsets[i], offsets[i + 1], table, ts, te, th)
        for t in range(ntok):
            h = th[t]
            counts[_hashing._bucket(h, buckets)] += 1
            total += 1
            for order in range(1, n):
                if t + order >= ntok:
                    break
                h = (h ^ space) * prime
                h = _hashing._fnv(h, data, ts[t + order], te[t + order])
                counts[_hashing._bucket(h, buckets)] += 1
                total += 1
    return total


# ----------------------------------------------------------------------------- measurement


def measure(docs: list[str], repeats: int) -> dict[str, Any]:
    """Median seconds of the before / after kernels on the encoded documents, alternated."""
    t0 = time.perf_counter()
    data, offsets = encode_documents(docs)
    encode_s = time.perf_counter() - t0
    new_table, old_table = _hashing.char_classes(), legacy_table()
    before_counts = np.zeros(NUM_BUCKETS, np.int64)
    after_counts = np.zeros(NUM_BUCKETS, np.int64)
    ngrams_before = legacy_add_counts(data, offsets, old_table, NGRAMS, NUM_BUCKETS, before_counts)
    ngrams_after = _hashing.add_counts(data, offsets, new_table, NGRAMS, NUM_BUCKETS, after_counts)
    times: dict[str, list[float]] = {"before": [], "after": []}
    scratch = np.zeros(NUM_BUCKETS, np.int64)
    for _ in range(repeats):
        t0 = time.perf_counter()
        legacy_add_counts(data, offsets, old_table, NGRAMS, NUM_BUCKETS, scratch)
        times["before"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _hashing.add_counts(data, offsets, new_table, NGRAMS, NUM_BUCKETS, scratch)
        times["after"].append(time.perf_counter() - t0)
    before = statistics.median(times["before"])
    after = statistics.median(times["after"])
    mb = data.size / 1e6
    return {
        "docs": len(docs),
        "utf8_mb": round(mb, 3),
        "encode_s": encode_s,
        "before_s": before,
        "after_s": after,
        "before_mb_per_s": mb / before,
        "after_mb_per_s": mb / after,
        "ratio": after / before,
        "ratio_with_encode": (after + encode_s) / (before + encode_s),
        "ngrams_before": int(ngrams_before),
        "ngrams_after": int(ngrams_after),
        "counts_identical": bool(np.array_equal(before_counts, after_counts)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--quick", action="store_true", help="2 MB ASCII + 0.5 MB mixed, 3 runs")
    parser.add_argument("--ascii-mb", type=float, default=None, help="ASCII corpus (default 20)")
    parser.add_argument("--mixed-mb", type=float, default=None, help="mixed corpus (default 5)")
    parser.add_argument("--repeats", type=int, default=None, help="alternated runs (default 7)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mixed corpus")
    args = parser.parse_args(argv)
    ascii_mb = args.ascii_mb or (2.0 if args.quick else 20.0)
    mixed_mb = args.mixed_mb or (0.5 if args.quick else 5.0)
    repeats = args.repeats or (3 if args.quick else 7)

    log("building corpora ...")
    corpora = {"ascii": ascii_corpus(ascii_mb), "mixed": mixed_corpus(mixed_mb, args.seed)}
    log("compiling kernels ...")
    t0 = time.perf_counter()
    data, offsets = encode_documents(["warm up", "cafe\u0301"])
    counts = np.zeros(NUM_BUCKETS, np.int64)
    legacy_add_counts(data, offsets, legacy_table(), NGRAMS, NUM_BUCKETS, counts)
    _hashing.add_counts(data, offsets, _hashing.char_classes(), NGRAMS, NUM_BUCKETS, counts)
    warmup_s = time.perf_counter() - t0
    results: dict[str, dict[str, Any]] = {}
    for name, docs in corpora.items():
        log(f"measuring {name} ({len(docs)} documents) ...")
        results[name] = measure(docs, repeats)
    report: dict[str, Any] = {
        "benchmark": "tokenizer",
        "config": {
            "ascii_mb": ascii_mb,
            "mixed_mb": mixed_mb,
            "repeats": repeats,
            "seed": args.seed,
            "num_buckets": NUM_BUCKETS,
            "ngrams": NGRAMS,
        },
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numba": numba.__version__,
            "unicode": unicodedata.unidata_version,
        },
        "warmup_s": warmup_s,
        "results": results,
        "checks": {"ascii_counts_identical": results["ascii"]["counts_identical"]},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"machine: {report['machine']['platform']} | Python {report['machine']['python']}")
    print(f"median of {repeats} alternated runs; kernel only (encode_s shared, shown apart)")
    header = (
        f"{'corpus':<7} {'MB':>6} {'docs':>7} {'before MB/s':>12} {'after MB/s':>11} "
        f"{'ratio':>6} {'w/ encode':>9} {'encode s':>9} {'n-grams before→after':>24}"
    )
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        grams = f"{r['ngrams_before']}→{r['ngrams_after']}"
        print(
            f"{name:<7} {r['utf8_mb']:>6.1f} {r['docs']:>7} {r['before_mb_per_s']:>12.1f} "
            f"{r['after_mb_per_s']:>11.1f} {r['ratio']:>6.3f} {r['ratio_with_encode']:>9.3f} "
            f"{r['encode_s']:>9.3f} {grams:>24}"
        )
    same = results["ascii"]["counts_identical"]
    print(f"ASCII bucket counts identical before/after: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
