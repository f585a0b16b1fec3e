"""The built-in corpus: CPython's own text, split into heavily imbalanced domains, as bytes.

Every CPython installation ships megabytes of text: the standard library's source, its test
suite, the codec tables, the help topics that ``help("assert")`` prints, and the docstrings of
the built-in functions. :func:`build_corpus` assembles them into a multi-domain corpus of
fixed-size byte documents (tokens 0..255, so there is no tokenizer and nothing is downloaded):

============  =================================================================  ==============
domain        text                                                               present
============  =================================================================  ==============
code          standard-library Python source (no tests, no separately            always
              packaged parts such as idlelib, tkinter, lib2to3, distutils)
tests         the test suite's Python source (``Lib/test``, ``*/tests``)          when shipped
encodings     the codec modules and charmap tables of ``Lib/encodings``          always
docs          the bundled help topics (``pydoc_data.topics``)                    almost always
docstrings    module docstrings of the standard library                          always
builtins      docstrings of the built-in functions and types                     always
============  =================================================================  ==============

A domain is the concatenation of its texts (files in sorted path order, separated by a blank
line) cut into ``seq_len``-byte documents. With ``seq_len=256`` a full CPython 3.11 install
gives roughly 71k ``tests``, 35k ``code``, 5.5k ``encodings``, 1.8k ``docs``, 1k ``docstrings``
and 100 ``builtins`` documents: a 600:1 imbalance. Distributions that strip ``Lib/test``
(Debian) lose that domain and keep five; the build guarantees at least 4 domains and a
``min_ratio`` (100) between the largest and the smallest domain, deterministically
thinning the smallest one if an install (or ``max_docs_per_domain``) leaves the ratio short.

The result is cached under ``cache_dir`` (``$REWEIGHT_CACHE/corpus``, else
``~/.cache/reweight/corpus``) as ``tokens.npy`` (uint8, documents × seq_len), ``domains.npy``
(int64) and ``manifest.json`` (domain names and sizes, Python version, build parameters, a
fingerprint of the source files and a sha256 content hash). A later build with the same
parameters on the same install loads the cache; any mismatch (or a corrupted file) rebuilds it.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

import numpy as np

from recipes.data.cache import entry_path, fingerprint, load_cached, save_cached
from recipes.data.corpus import Corpus
from recipes.data.documents import check_cap, check_seq_len, chunk, short, spread, stack
from recipes.data.stdlib import DOMAINS, domain_texts, help_topics, scan_stdlib, stdlib_root

__all__ = ["FORMAT_VERSION", "MIN_DOMAINS", "build_corpus"]

#: The fewest domains the built-in corpus may have (else the build fails with a clear error).
MIN_DOMAINS = 4
#: Version of the cached layout; part of the cache key, so bumping it invalidates old caches.
FORMAT_VERSION = 1


def _assemble(
    pieces: dict[str, list[bytes]],
    seq_len: int,
    cap: int | None,
    min_ratio: float | None,
) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, Any]]:
    """Cut, cap, drop (fewer than 2 documents) and thin (``min_ratio``) the domains' pieces;
    returns ``(tokens, domains, names, {"dropped": ..., "thinned_from": ...})``."""
    blocks: dict[str, np.ndarray] = {}
    dropped: dict[str, str] = {}
    for name, parts in pieces.items():
        docs = chunk(parts, seq_len, cap)
        if len(docs) < 2:
            dropped[name] = f"{len(docs)} documents (not shipped by this install)"
            continue
        blocks[name] = docs
    if len(blocks) < MIN_DOMAINS:
        raise RuntimeError(
            f"this Python installation ships too little text for the built-in corpus: only "
            f"{sorted(blocks)} have 2+ documents of {seq_len} bytes (dropped: {dropped}), and "
            f"{MIN_DOMAINS} domains are needed. Lower seq_len, or use your own data "
            "(data=jsonl / data=parquet)."
        )
    thinned: dict[str, int] = {}
    if min_ratio is not None:
        sizes = {name: len(docs) for name, docs in blocks.items()}
        largest = max(sizes.values())
        smallest = min(sizes, key=lambda n: sizes[n])
        if largest / sizes[smallest] < min_ratio:
            keep = int(largest // min_ratio)
            if keep < 2:
                raise ValueError(
                    f"a {min_ratio:g}:1 imbalance needs the largest domain to have at least "
                    f"{2 * min_ratio:g} documents, but it has {largest} (max_docs_per_domain="
                    f"{cap}). Raise max_docs_per_domain, or pass min_ratio=None."
                )
            thinned[smallest] = sizes[smallest]
            blocks[smallest] = blocks[smallest][spread(sizes[smallest], keep)]
    names = list(blocks)
    tokens, domains = stack([blocks[n] for n in names])
    info = {"dropped": dropped, "thinned_from": thinned}
    return tokens, domains, names, info


def build_corpus(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    seq_len: int = 256,
    max_docs_per_domain: int | None = None,
    min_ratio: float | None = 100.0,
    cache: bool = True,
    stdlib: str | os.PathLike[str] | None = None,
) -> Corpus:
    """The built-in corpus: CPython's own text as imbalanced domains of byte documents.

    See the module docstring for the domains. The build is deterministic for a given install
    and parameters (files are read in sorted path order); it takes about a second and is cached.

    Args:
        cache_dir: Cache directory (None = :func:`recipes.data.cache.default_cache_dir`).
        seq_len: Bytes per document.
        max_docs_per_domain: Keep at most this many documents per domain, spread evenly over
            the domain (None = all).
        min_ratio: Guaranteed largest/smallest domain size; if the install or the cap leaves
            it short, the smallest domain is thinned evenly until it holds. None = natural sizes.
        cache: Read and write the cache (False = always build, never write).
        stdlib: Directory to read the standard library from (None = this interpreter's).

    Returns:
        The :class:`Corpus`; ``corpus.cache_hit`` says whether it came from the cache and
        ``corpus.manifest`` records the build.

    Raises:
        ValueError: For invalid parameters, or a cap too small for ``min_ratio``.
        RuntimeError: If the install ships fewer than 4 domains' worth of text.

    Example:
        >>> from recipes.data import build_corpus
        >>> corpus = build_corpus(cache=False, max_docs_per_domain=1000)
        >>> corpus.num_domains >= 4 and corpus.imbalance >= 100
        True
        >>> "docs" in corpus.domain_names and corpus.seq_len
        256
    """
    seq_len = check_seq_len(seq_len)
    cap = check_cap(max_docs_per_domain)
    if min_ratio is not None:
        if isinstance(min_ratio, bool) or not isinstance(min_ratio, int | float):
            raise TypeError(f"min_ratio must be None or a number, got {short(min_ratio)}.")
        if not 1.0 <= float(min_ratio) < float("inf"):
            raise ValueError(f"min_ratio must be None or a finite number >= 1, got {min_ratio}.")
        min_ratio = float(min_ratio)
    root = stdlib_root(stdlib)
    files = scan_stdlib(root)
    topics, topics_file = help_topics()
    source_files = [(kind, rel, p) for kind, fs in files.items() for rel, p in fs]
    if topics_file is not None:
        source_files.append(("docs", "pydoc_data/topics", topics_file))
    key: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "source": "cpython",
        "python_version": platform.python_version(),
        "implementation": sys.implementation.name,
        "stdlib": str(root) if root is not None else None,
        "seq_len": seq_len,
        "max_docs_per_domain": cap,
        "min_ratio": min_ratio,
        "fingerprint": fingerprint(source_files),
    }
    path = None
    if cache:
        path = entry_path(cache_dir, f"cpython{platform.python_version()}-L{seq_len}", key)
        cached = load_cached(path, key)
        if cached is not None:
            return cached
    pieces, counts = domain_texts(files, topics)
    tokens, domains, names, info = _assemble(pieces, seq_len, cap, min_ratio)
    sizes = np.bincount(domains, minlength=len(names))
    manifest = {
        "key": key,
        "format": FORMAT_VERSION,
        "python_version": platform.python_version(),
        "domain_names": names,
        "sizes": {n: int(s) for n, s in zip(names, sizes, strict=True)},
        "num_docs": int(tokens.shape[0]),
        "seq_len": seq_len,
        "sources": {n: counts[n] for n in names},
        "descriptions": {n: DOMAINS[n] for n in names},
        **info,
    }
    corpus = Corpus(tokens, domains, names, manifest=manifest)
    if path is not None and save_cached(path, corpus):
        corpus.cache_path = path
    return corpus
