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

Example:
    >>> import numpy as np
    >>> from recipes.data import ByteLMDataset, Corpus
    >>> corpus = Corpus.from_texts({"big": "x" * 4000, "small": "hello world! " * 20}, seq_len=16)
    >>> corpus.domain_sizes
    {'big': 250, 'small': 16}
    >>> train, val = corpus.split(val_fraction=0.1, seed=0)
    >>> sorted(set(corpus.domains[val].tolist()))  # every domain is validated
    [0, 1]
    >>> ds = ByteLMDataset(corpus, train).indexed()  # what the reweighter's sampler needs
    >>> sorted(ds[0]), ds[0]["tokens"].shape
    (['domain', 'index', 'tokens'], torch.Size([16]))
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import inspect
import io
import json
import os
import platform
import shutil
import sys
import sysconfig
import tempfile
import tokenize
import types
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from reweight.data import IndexedDataset

__all__ = [
    "DOMAINS",
    "ByteLMDataset",
    "Corpus",
    "Split",
    "build_corpus",
    "default_cache_dir",
    "load_user_corpus",
]

#: Built-in domains in id order (a domain the install does not ship is left out).
DOMAINS: dict[str, str] = {
    "code": "standard-library Python source (no tests, no separately packaged parts)",
    "tests": "the CPython test suite's Python source",
    "encodings": "codec modules and charmap tables (Lib/encodings)",
    "docs": "bundled help topics (pydoc_data.topics)",
    "docstrings": "module docstrings of the standard library",
    "builtins": "docstrings of the built-in functions and types",
}
MIN_DOMAINS = 4
FORMAT_VERSION = 1
SEPARATOR = b"\n\n"

# Parts of the standard library that distributions package separately (Debian: idle, python3-tk,
# python3-lib2to3, python3-distutils, python3-venv) or that are not text of the library itself.
_SEPARATE_PACKAGES = frozenset(
    {"idlelib", "tkinter", "turtledemo", "lib2to3", "distutils", "ensurepip", "pydoc_data"}
)
_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__"})
_TEST_DIRS = frozenset({"test", "tests"})
# Machine- or distribution-specific files (build paths, compiler flags, site hooks).
_SKIP_FILE_PREFIXES = ("_sysconfigdata", "sitecustomize", "usercustomize", "_distutils_system")


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def default_cache_dir() -> Path:
    """Where :func:`build_corpus` caches by default: ``$REWEIGHT_CACHE/corpus`` or
    ``~/.cache/reweight/corpus``.

    Example:
        >>> from recipes.data import default_cache_dir
        >>> default_cache_dir().name
        'corpus'
    """
    env = os.environ.get("REWEIGHT_CACHE")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "reweight"
    return base / "corpus"


# ---------------------------------------------------------------------------------------------
# Corpus


class Split(NamedTuple):
    """Document indices of a train/validation split (sorted int64 arrays)."""

    train: np.ndarray
    val: np.ndarray


def _content_hash(tokens: np.ndarray, domains: np.ndarray, names: Sequence[str]) -> str:
    digest = hashlib.sha256(b"reweight-corpus-v1\0")
    digest.update(json.dumps({"names": list(names), "shape": list(tokens.shape)}).encode())
    digest.update(np.ascontiguousarray(domains, dtype="<i8").tobytes())
    digest.update(np.ascontiguousarray(tokens, dtype=np.uint8).tobytes())
    return digest.hexdigest()


def _check_seq_len(seq_len: Any) -> int:
    if isinstance(seq_len, bool) or not isinstance(seq_len, int | np.integer):
        raise TypeError(
            f"seq_len must be an int (bytes per document), got {type(seq_len).__name__}: "
            f"{_short(seq_len)}. Pass e.g. seq_len=256."
        )
    if not 2 <= int(seq_len) <= 1 << 20:
        raise ValueError(
            f"seq_len must lie in [2, 1048576] (a language model needs at least two bytes per "
            f"document), got {int(seq_len)}. Pass e.g. seq_len=256."
        )
    return int(seq_len)


def _check_cap(max_docs_per_domain: Any) -> int | None:
    if max_docs_per_domain is None:
        return None
    if isinstance(max_docs_per_domain, bool) or not isinstance(
        max_docs_per_domain, int | np.integer
    ):
        raise TypeError(
            f"max_docs_per_domain must be None or an int, got "
            f"{type(max_docs_per_domain).__name__}: {_short(max_docs_per_domain)}."
        )
    if int(max_docs_per_domain) < 2:
        raise ValueError(
            f"max_docs_per_domain must be at least 2 (one training and one validation document "
            f"per domain), got {int(max_docs_per_domain)}. Pass None to keep every document."
        )
    return int(max_docs_per_domain)


def _spread(n: int, k: int) -> np.ndarray:
    """``k`` of ``range(n)`` spread evenly over the whole range (deterministic thinning)."""
    return (np.arange(k, dtype=np.int64) * n) // k


def _chunk(pieces: Iterable[bytes], seq_len: int) -> np.ndarray:
    stream = SEPARATOR.join(pieces)
    n = len(stream) // seq_len
    return np.frombuffer(stream, dtype=np.uint8, count=n * seq_len).reshape(n, seq_len)


class Corpus:
    """Fixed-size byte documents with a domain each.

    Args:
        tokens: ``(num_docs, seq_len)`` array of bytes (uint8, or integers in 0..255).
        domains: ``(num_docs,)`` integer domain ids in ``0..K-1``.
        domain_names: The K unique domain names; every domain must have a document.
        manifest: Facts about how the corpus was built (kept as given, plus the content hash).
        cache_path: The cache directory the corpus was loaded from or saved to, if any.
        cache_hit: Whether it was loaded from the cache rather than built.

    The arrays are copied once and made read-only; the corpus never changes after construction.

    Raises:
        TypeError: For arrays of the wrong kind or non-string names.
        ValueError: For wrong shapes, out-of-range values, duplicate names or empty domains.

    Example:
        >>> import numpy as np
        >>> from recipes.data import Corpus
        >>> c = Corpus(np.full((3, 4), 97, dtype=np.uint8), np.array([0, 0, 1]), ["a", "b"])
        >>> c.domain_sizes, c.texts("b")
        ({'a': 2, 'b': 1}, ['aaaa'])
    """

    def __init__(
        self,
        tokens: Any,
        domains: Any,
        domain_names: Sequence[str],
        *,
        manifest: Mapping[str, Any] | None = None,
        cache_path: Path | None = None,
        cache_hit: bool = False,
    ) -> None:
        tok = np.asarray(tokens)
        if tok.ndim != 2 or tok.shape[0] == 0 or tok.shape[1] < 2:
            raise ValueError(
                f"tokens must be a non-empty (num_docs, seq_len) array with seq_len >= 2, got "
                f"shape {tok.shape}."
            )
        if tok.dtype != np.uint8:
            if tok.dtype.kind not in "iu":
                raise TypeError(f"tokens must hold byte values (uint8), got dtype {tok.dtype}.")
            if tok.min() < 0 or tok.max() > 255:
                raise ValueError(
                    f"tokens must lie in 0..255 (bytes), got values in "
                    f"[{int(tok.min())}, {int(tok.max())}]."
                )
        tok = np.array(tok, dtype=np.uint8, copy=True)
        dom = np.asarray(domains)
        if dom.ndim != 1 or dom.shape[0] != tok.shape[0]:
            raise ValueError(
                f"domains must be 1-D with one id per document ({tok.shape[0]}), got shape "
                f"{dom.shape}."
            )
        if dom.dtype.kind not in "iu":
            raise TypeError(f"domains must hold integer ids, got dtype {dom.dtype}.")
        if isinstance(domain_names, str) or not all(isinstance(n, str) for n in domain_names):
            raise TypeError(
                f"domain_names must be a sequence of strings, got {_short(domain_names)}."
            )
        names = list(domain_names)
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"domain_names must be unique and non-empty, got {_short(names)}.")
        dom = dom.astype(np.int64, copy=True)
        if dom.min() < 0 or dom.max() >= len(names):
            raise ValueError(
                f"domain ids must lie in 0..{len(names) - 1} (one per name in {_short(names)}), "
                f"got values in [{int(dom.min())}, {int(dom.max())}]."
            )
        sizes = np.bincount(dom, minlength=len(names))
        if (sizes == 0).any():
            empty = [n for n, s in zip(names, sizes, strict=True) if s == 0]
            raise ValueError(
                f"every domain needs at least one document; {empty} have none. Drop those "
                "names or add documents."
            )
        tok.setflags(write=False)
        dom.setflags(write=False)
        self._tokens = tok
        self._domains = dom
        self._names = names
        self._sizes = sizes.astype(np.int64)
        self._sizes.setflags(write=False)
        self._hash = _content_hash(tok, dom, names)
        info = dict(manifest or {})
        if "content_hash" in info and info["content_hash"] != self._hash:
            raise ValueError(
                f"manifest content_hash {info['content_hash']!r} does not match the arrays "
                f"({self._hash!r}); the cache is corrupt. Delete it to rebuild."
            )
        info["content_hash"] = self._hash
        self._manifest = info
        self.cache_path = cache_path
        self.cache_hit = bool(cache_hit)

    @classmethod
    def from_texts(
        cls,
        texts: Mapping[str, str | bytes | Sequence[str | bytes]],
        *,
        seq_len: int = 256,
        max_docs_per_domain: int | None = None,
    ) -> Corpus:
        """Build a corpus from raw text per domain (in the mapping's order).

        Each domain's texts are encoded as UTF-8, joined by a blank line and cut into
        ``seq_len``-byte documents (a trailing partial document is dropped).

        Args:
            texts: Domain name -> a text, or a sequence of texts (``str`` or ``bytes``).
            seq_len: Bytes per document.
            max_docs_per_domain: Keep at most this many documents per domain, spread evenly.

        Raises:
            ValueError: If a domain yields fewer than 2 documents.

        Example:
            >>> from recipes.data import Corpus
            >>> Corpus.from_texts({"a": ["abcd", "efgh"], "b": "z" * 12}, seq_len=4).domain_sizes
            {'a': 2, 'b': 3}
        """
        seq_len = _check_seq_len(seq_len)
        cap = _check_cap(max_docs_per_domain)
        if not isinstance(texts, Mapping) or not texts:
            raise TypeError(
                f"texts must be a non-empty mapping of domain name -> text(s), got {_short(texts)}."
            )
        blocks = []
        for name, value in texts.items():
            items = [value] if isinstance(value, str | bytes) else list(value)
            pieces = []
            for item in items:
                if isinstance(item, str):
                    pieces.append(item.encode("utf-8"))
                elif isinstance(item, bytes):
                    pieces.append(item)
                else:
                    raise TypeError(
                        f"texts[{name!r}] must hold str or bytes, got {type(item).__name__}: "
                        f"{_short(item)}."
                    )
            docs = _chunk(pieces, seq_len)
            if len(docs) < 2:
                total = sum(len(p) for p in pieces)
                raise ValueError(
                    f"domain {name!r} has {total} bytes of text, which makes {len(docs)} "
                    f"document(s) of seq_len={seq_len}; each domain needs at least 2 (one to "
                    "train on, one to validate). Add text to it or lower seq_len."
                )
            if cap is not None and len(docs) > cap:
                docs = docs[_spread(len(docs), cap)]
            blocks.append(docs)
        names = [str(n) for n in texts]
        domains = np.repeat(np.arange(len(blocks)), [len(b) for b in blocks])
        return cls(np.concatenate(blocks), domains, names, manifest={"source": "texts"})

    @property
    def tokens(self) -> np.ndarray:
        """Read-only ``(num_docs, seq_len)`` uint8 array of byte tokens."""
        return self._tokens

    @property
    def domains(self) -> np.ndarray:
        """Read-only ``(num_docs,)`` int64 array of domain ids."""
        return self._domains

    @property
    def domain_names(self) -> list[str]:
        """Domain names; ``domain_names[d]`` names id ``d``."""
        return list(self._names)

    @property
    def num_docs(self) -> int:
        """Number of documents."""
        return int(self._tokens.shape[0])

    @property
    def seq_len(self) -> int:
        """Bytes per document."""
        return int(self._tokens.shape[1])

    @property
    def num_domains(self) -> int:
        """Number of domains K."""
        return len(self._names)

    @property
    def sizes(self) -> np.ndarray:
        """Read-only int64 array of documents per domain, in id order."""
        return self._sizes

    @property
    def domain_sizes(self) -> dict[str, int]:
        """Documents per domain, by name."""
        return {n: int(s) for n, s in zip(self._names, self._sizes, strict=True)}

    @property
    def imbalance(self) -> float:
        """Largest over smallest domain size (in documents)."""
        return float(self._sizes.max() / self._sizes.min())

    @property
    def content_hash(self) -> str:
        """sha256 of the names, domain ids and tokens: equal hashes mean equal corpora."""
        return self._hash

    @property
    def manifest(self) -> dict[str, Any]:
        """A copy of the build facts (source, parameters, sizes, content hash)."""
        return json.loads(json.dumps(self._manifest))

    def domain_id(self, domain: str | int) -> int:
        """The id of ``domain`` (a name or an id), checked.

        Example:
            >>> from recipes.data import Corpus
            >>> Corpus.from_texts({"a": "x" * 8, "b": "y" * 8}, seq_len=4).domain_id("b")
            1
        """
        if isinstance(domain, str):
            if domain not in self._names:
                raise ValueError(
                    f"unknown domain {domain!r}; the corpus has {self._names}. Use one of those."
                )
            return self._names.index(domain)
        if isinstance(domain, bool) or not isinstance(domain, int | np.integer):
            raise TypeError(
                f"domain must be a name or an integer id, got {type(domain).__name__}: "
                f"{_short(domain)}."
            )
        if not 0 <= int(domain) < len(self._names):
            raise ValueError(
                f"domain id {int(domain)} is out of range; ids are 0..{len(self._names) - 1} "
                f"for {self._names}."
            )
        return int(domain)

    def indices(self, domain: str | int) -> np.ndarray:
        """Sorted int64 indices of the documents of ``domain`` (a name or an id)."""
        return np.flatnonzero(self._domains == self.domain_id(domain)).astype(np.int64)

    def texts(self, domain: str | int) -> list[str]:
        """The raw text of each document of ``domain`` (UTF-8, undecodable bytes replaced).

        This is what a DSIR fit takes as its target or raw pool.

        Example:
            >>> from recipes.data import Corpus
            >>> Corpus.from_texts({"a": "abcdefgh", "b": "12345678"}, seq_len=4).texts("a")
            ['abcd', 'efgh']
        """
        rows = self._tokens[self.indices(domain)]
        return [row.tobytes().decode("utf-8", errors="replace") for row in rows]

    def split(
        self,
        val_fraction: float = 0.05,
        seed: int = 0,
        *,
        max_val_per_domain: int | None = None,
    ) -> Split:
        """A deterministic train/validation split, stratified by domain.

        Each domain holds out ``round(val_fraction * n_d)`` of its documents, at least one and
        at most ``n_d - 1`` (and at most ``max_val_per_domain``), chosen by a generator seeded
        with ``(seed, d)``; so a domain's split does not depend on the other domains.

        Args:
            val_fraction: Share of each domain held out, in (0, 1).
            seed: Non-negative seed of the split.
            max_val_per_domain: Cap on validation documents per domain (None = no cap).

        Returns:
            ``Split(train, val)``: sorted int64 document indices.

        Raises:
            ValueError: If ``val_fraction`` is outside (0, 1), ``seed`` is negative, the cap is
                below 1, or a domain has a single document.

        Example:
            >>> from recipes.data import Corpus
            >>> c = Corpus.from_texts({"a": "x" * 400, "b": "y" * 8}, seq_len=4)
            >>> train, val = c.split(0.1, seed=0)
            >>> len(train), len(val), c.domains[val].tolist().count(1)
            (91, 11, 1)
        """
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, int | float):
            raise TypeError(f"val_fraction must be a number, got {_short(val_fraction)}.")
        if not 0.0 < float(val_fraction) < 1.0:
            raise ValueError(
                f"val_fraction must lie strictly between 0 and 1, got {val_fraction!r}. "
                "Pass e.g. 0.05."
            )
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {_short(seed)}.")
        if max_val_per_domain is not None and (
            isinstance(max_val_per_domain, bool)
            or not isinstance(max_val_per_domain, int | np.integer)
            or max_val_per_domain < 1
        ):
            raise ValueError(
                f"max_val_per_domain must be None or an int >= 1, got {_short(max_val_per_domain)}."
            )
        small = [n for n, s in zip(self._names, self._sizes, strict=True) if s < 2]
        if small:
            raise ValueError(
                f"domains {small} have a single document, which cannot be both trained on and "
                "validated. Add text to them or lower seq_len."
            )
        train_parts, val_parts = [], []
        for d, n in enumerate(self._sizes.tolist()):
            idx = np.flatnonzero(self._domains == d)
            n_val = min(max(1, round(float(val_fraction) * n)), n - 1)
            if max_val_per_domain is not None:
                n_val = min(n_val, int(max_val_per_domain))
            perm = np.random.default_rng([int(seed), d]).permutation(idx)
            val_parts.append(perm[:n_val])
            train_parts.append(perm[n_val:])
        return Split(
            np.sort(np.concatenate(train_parts)).astype(np.int64),
            np.sort(np.concatenate(val_parts)).astype(np.int64),
        )

    def describe(self) -> str:
        """A small table of the domains and their sizes.

        Example:
            >>> from recipes.data import Corpus
            >>> print(Corpus.from_texts({"a": "x" * 40, "b": "y" * 8}, seq_len=4).describe())
            domain      docs   share
            a             10   83.3%
            b              2   16.7%
            12 documents of 4 bytes, 2 domains, imbalance 5:1
        """
        total = self.num_docs
        lines = [f"{'domain':<10}{'docs':>6}{'share':>8}"]
        for name, size in self.domain_sizes.items():
            lines.append(f"{name:<10}{size:>6}{size / total:>8.1%}")
        lines.append(
            f"{total} documents of {self.seq_len} bytes, {self.num_domains} domains, "
            f"imbalance {self.imbalance:.0f}:1"
        )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"Corpus(num_docs={self.num_docs}, seq_len={self.seq_len}, domains={self.domain_sizes})"
        )


# ---------------------------------------------------------------------------------------------
# Torch dataset


class ByteLMDataset(Dataset[dict[str, torch.Tensor]]):
    """A map-style dataset over some documents of a :class:`Corpus`.

    Item ``i`` is ``{"tokens": LongTensor(seq_len)}`` for document ``indices[i]``. For the
    reweighter, wrap it in :class:`reweight.IndexedDataset` with :attr:`domains` (or call
    :meth:`indexed`), which adds ``"index"`` (the position in *this* dataset) and ``"domain"``.

    Args:
        corpus: The corpus.
        indices: Document indices into the corpus (e.g. ``corpus.split().train``); None = all.

    Example:
        >>> from recipes.data import ByteLMDataset, Corpus
        >>> from reweight import IndexedDataset
        >>> corpus = Corpus.from_texts({"a": "abcdefgh", "b": "12345678"}, seq_len=4)
        >>> ds = ByteLMDataset(corpus, [1, 3])
        >>> ds[0]
        {'tokens': tensor([101, 102, 103, 104])}
        >>> indexed = IndexedDataset(ds, domains=ds.domains, domain_names=ds.domain_names)
        >>> indexed[1]
        {'tokens': tensor([53, 54, 55, 56]), 'index': 1, 'domain': 1}
    """

    def __init__(self, corpus: Corpus, indices: Any = None) -> None:
        if not isinstance(corpus, Corpus):
            raise TypeError(f"corpus must be a Corpus, got {type(corpus).__name__}.")
        if indices is None:
            idx = np.arange(corpus.num_docs, dtype=np.int64)
        else:
            idx = np.asarray(indices)
            if idx.ndim != 1 or idx.dtype.kind not in "iu":
                raise TypeError(
                    f"indices must be a 1-D array of integer document indices, got shape "
                    f"{idx.shape} and dtype {idx.dtype}."
                )
            if idx.size == 0:
                raise ValueError("indices is empty; pass at least one document index.")
            idx = idx.astype(np.int64)
            if idx.min() < 0 or idx.max() >= corpus.num_docs:
                raise ValueError(
                    f"indices must lie in 0..{corpus.num_docs - 1}, got values in "
                    f"[{int(idx.min())}, {int(idx.max())}]."
                )
        idx = idx.copy()
        idx.setflags(write=False)
        self.corpus = corpus
        self.doc_indices = idx
        self._domains = corpus.domains[idx]
        self._domains.setflags(write=False)

    @property
    def domains(self) -> np.ndarray:
        """Domain id of each item (int64), for ``IndexedDataset(ds, domains=ds.domains)``."""
        return self._domains

    @property
    def domain_names(self) -> list[str]:
        """The corpus's domain names."""
        return self.corpus.domain_names

    def indexed(self) -> IndexedDataset:
        """This dataset wrapped in :class:`reweight.IndexedDataset` with its domains."""
        return IndexedDataset(self, domains=self._domains, domain_names=self.domain_names)

    def __len__(self) -> int:
        return int(self.doc_indices.shape[0])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = self.corpus.tokens[self.doc_indices[i]]
        return {"tokens": torch.from_numpy(row.astype(np.int64))}


# ---------------------------------------------------------------------------------------------
# Reading CPython's text


def _stdlib_root(stdlib: str | os.PathLike[str] | None) -> Path | None:
    if stdlib is not None:
        root = Path(stdlib)
        if not root.is_dir():
            raise ValueError(f"stdlib={str(stdlib)!r} is not a directory.")
        return root
    for candidate in (sysconfig.get_paths().get("stdlib"), os.path.dirname(os.__file__)):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def _scan_stdlib(root: Path | None) -> dict[str, list[tuple[str, Path]]]:
    """``{"code"|"tests"|"encodings": [(posix relative path, path), ...]}``, sorted by path."""
    found: dict[str, list[tuple[str, Path]]] = {"code": [], "tests": [], "encodings": []}
    if root is None:
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        top = rel_dir.parts[0] if rel_dir.parts else ""
        dirnames[:] = sorted(
            d
            for d in dirnames
            if d not in _SKIP_DIRS
            and not d.startswith(("config-", "."))
            and not (not rel_dir.parts and d in _SEPARATE_PACKAGES)
        )
        if top in _SEPARATE_PACKAGES:
            continue
        for name in filenames:
            if not name.endswith(".py") or name.startswith(_SKIP_FILE_PREFIXES):
                continue
            rel = (rel_dir / name).as_posix()
            if _TEST_DIRS.intersection(rel_dir.parts):
                kind = "tests"
            elif top == "encodings":
                kind = "encodings"
            else:
                kind = "code"
            found[kind].append((rel, Path(dirpath) / name))
    for files in found.values():
        files.sort()
    return found


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes().replace(b"\r\n", b"\n")
    except OSError:
        return None


def _module_docstring(source: bytes) -> str | None:
    """The module docstring of Python ``source`` without parsing the whole file."""
    strings: list[str] = []
    skip = {tokenize.ENCODING, tokenize.COMMENT, tokenize.NL}
    try:
        for tok in tokenize.tokenize(io.BytesIO(source).readline):
            if tok.type in skip:
                continue
            if tok.type == tokenize.STRING:
                strings.append(tok.string)
                continue
            if strings and tok.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
                break
            return None
        else:
            return None
        value = ast.literal_eval(" ".join(strings))
    except (SyntaxError, ValueError, LookupError, UnicodeError, tokenize.TokenError):
        return None
    if not isinstance(value, str) or not value.strip():
        return None
    return inspect.cleandoc(value)


def _module_name(rel: str) -> str:
    name = rel[: -len(".py")].replace("/", ".")
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def _builtin_docs() -> list[str]:
    """Docstrings of the interpreter's own functions and types, in name order."""
    out = []
    for name, obj in sorted(vars(builtins).items()):
        if name.startswith("_") or getattr(obj, "__module__", None) != "builtins":
            continue
        if isinstance(obj, type):
            doc, kind = obj.__dict__.get("__doc__"), "class"
        elif isinstance(obj, types.BuiltinFunctionType):
            doc, kind = obj.__doc__, "function"
        else:
            continue
        if isinstance(doc, str) and doc.strip():
            out.append(f"{kind} {name}\n{inspect.cleandoc(doc)}")
    return out


def _help_topics() -> tuple[list[str], Path | None]:
    try:
        from pydoc_data import topics as module
    except ImportError:
        return [], None
    table = getattr(module, "topics", None)
    if not isinstance(table, dict):
        return [], None
    texts = [table[k] for k in sorted(table) if isinstance(table[k], str)]
    file = getattr(module, "__file__", None)
    return texts, Path(file) if file else None


def _fingerprint(files: dict[str, list[tuple[str, Path]]], topics_file: Path | None) -> str:
    digest = hashlib.sha256()
    entries = [(k, rel, p) for k, fs in files.items() for rel, p in fs]
    if topics_file is not None:
        entries.append(("docs", "pydoc_data/topics", topics_file))
    for kind, rel, path in entries:
        try:
            st = path.stat()
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        digest.update(f"{kind}\0{rel}\0{stamp}\n".encode())
    return digest.hexdigest()


def _domain_texts(
    files: dict[str, list[tuple[str, Path]]], topics: list[str]
) -> tuple[dict[str, list[bytes]], dict[str, int]]:
    """Raw pieces per built-in domain (in :data:`DOMAINS` order) and how many sources each has."""
    pieces: dict[str, list[bytes]] = {name: [] for name in DOMAINS}
    docstrings: list[bytes] = []
    for kind in ("code", "tests", "encodings"):
        for rel, path in files[kind]:
            source = _read(path)
            if source is None:
                continue
            pieces[kind].append(source)
            if kind != "tests":
                doc = _module_docstring(source)
                if doc is not None:
                    docstrings.append(f"{_module_name(rel)}\n{doc}".encode())
    pieces["docs"] = [t.encode("utf-8") for t in topics]
    pieces["docstrings"] = docstrings
    pieces["builtins"] = [t.encode("utf-8") for t in _builtin_docs()]
    return pieces, {name: len(p) for name, p in pieces.items()}


def _assemble(
    pieces: dict[str, list[bytes]],
    seq_len: int,
    cap: int | None,
    min_ratio: float | None,
) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, Any]]:
    blocks: dict[str, np.ndarray] = {}
    dropped: dict[str, str] = {}
    for name, parts in pieces.items():
        docs = _chunk(parts, seq_len)
        if len(docs) < 2:
            dropped[name] = f"{len(docs)} documents (not shipped by this install)"
            continue
        if cap is not None and len(docs) > cap:
            docs = docs[_spread(len(docs), cap)]
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
            blocks[smallest] = blocks[smallest][_spread(sizes[smallest], keep)]
    names = list(blocks)
    tokens = np.concatenate([blocks[n] for n in names])
    domains = np.repeat(np.arange(len(names), dtype=np.int64), [len(blocks[n]) for n in names])
    info = {"dropped": dropped, "thinned_from": thinned}
    return tokens, domains, names, info


def _load_cached(path: Path, key: dict[str, Any]) -> Corpus | None:
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or manifest.get("key") != key:
            return None
        tokens = np.load(path / "tokens.npy", allow_pickle=False)
        domains = np.load(path / "domains.npy", allow_pickle=False)
        corpus = Corpus(
            tokens, domains, manifest["domain_names"], manifest=manifest, cache_path=path
        )
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if corpus.domain_sizes != manifest.get("sizes"):
        return None
    corpus.cache_hit = True
    return corpus


def _save(path: Path, corpus: Corpus) -> bool:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=path.name + ".tmp-", dir=path.parent))
    except OSError as exc:
        warnings.warn(f"could not cache the corpus in {path.parent}: {exc}", stacklevel=3)
        return False
    try:
        np.save(tmp / "tokens.npy", corpus.tokens, allow_pickle=False)
        np.save(tmp / "domains.npy", corpus.domains, allow_pickle=False)
        (tmp / "manifest.json").write_text(
            json.dumps(corpus.manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
        return True
    except OSError as exc:
        # Another process may have written the same corpus first; its copy is as good as ours.
        if (path / "manifest.json").exists():
            return True
        warnings.warn(f"could not cache the corpus in {path}: {exc}", stacklevel=3)
        return False
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


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
        cache_dir: Cache directory (None = :func:`default_cache_dir`).
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
    seq_len = _check_seq_len(seq_len)
    cap = _check_cap(max_docs_per_domain)
    if min_ratio is not None:
        if isinstance(min_ratio, bool) or not isinstance(min_ratio, int | float):
            raise TypeError(f"min_ratio must be None or a number, got {_short(min_ratio)}.")
        if not 1.0 <= float(min_ratio) < float("inf"):
            raise ValueError(f"min_ratio must be None or a finite number >= 1, got {min_ratio}.")
        min_ratio = float(min_ratio)
    root = _stdlib_root(stdlib)
    files = _scan_stdlib(root)
    topics, topics_file = _help_topics()
    key: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "source": "cpython",
        "python_version": platform.python_version(),
        "implementation": sys.implementation.name,
        "stdlib": str(root) if root is not None else None,
        "seq_len": seq_len,
        "max_docs_per_domain": cap,
        "min_ratio": min_ratio,
        "fingerprint": _fingerprint(files, topics_file),
    }
    path = None
    if cache:
        base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        key_hash = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
        path = base / f"cpython{platform.python_version()}-L{seq_len}-{key_hash}"
        cached = _load_cached(path, key)
        if cached is not None:
            return cached
    pieces, counts = _domain_texts(files, topics)
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
    if path is not None and _save(path, corpus):
        corpus.cache_path = path
    return corpus


# ---------------------------------------------------------------------------------------------
# A user's own files


def load_user_corpus(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    text_field: str = "text",
    domain_field: str | None = "domain",
    seq_len: int = 256,
    max_docs_per_domain: int | None = None,
) -> Corpus:
    """A corpus from JSON-lines or Parquet files with a text field and a domain field.

    Records are read with :func:`reweight.static.io.iter_records` (files in the given order,
    bad lines are errors). Each domain's texts are joined by a blank line and cut into
    ``seq_len``-byte documents; domains are sorted by name.

    Args:
        paths: One path or a sequence of ``.jsonl`` / ``.parquet`` paths.
        text_field: The field holding each record's text (a string).
        domain_field: The field holding its domain (a string or an integer, used as a name);
            None puts every record in one domain ``"all"``.
        seq_len: Bytes per document.
        max_docs_per_domain: Keep at most this many documents per domain, spread evenly.

    Raises:
        TypeError: If a text is not a string or a domain is not a string or an integer.
        ValueError: If there are no records or a domain has too little text for 2 documents.

    Example:
        >>> import json, tempfile, pathlib
        >>> from recipes.data import load_user_corpus
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.jsonl"
        >>> rows = [{"text": "spam " * 20, "domain": "food"}, {"text": "ni " * 9, "domain": "x"}]
        >>> _ = path.write_text("\\n".join(json.dumps(r) for r in rows))
        >>> load_user_corpus([path], seq_len=8).domain_sizes
        {'food': 12, 'x': 3}
    """
    from reweight.static.io import iter_records

    seq_len = _check_seq_len(seq_len)
    cap = _check_cap(max_docs_per_domain)
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    path_list = [Path(p) for p in paths]
    if not path_list:
        raise ValueError("paths is empty; pass one or more .jsonl or .parquet files.")
    fields = (text_field,) if domain_field is None else (text_field, domain_field)
    streams: dict[str, list[str]] = {}
    for i, record in enumerate(iter_records(path_list, fields=fields, skip_bad_lines=False)):
        text = record[text_field]
        if not isinstance(text, str):
            raise TypeError(
                f"record {i} has a {text_field!r} of type {type(text).__name__} "
                f"({_short(text)}); it must be a string. Fix the data or set text_field."
            )
        if domain_field is None:
            name = "all"
        else:
            value = record[domain_field]
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise TypeError(
                    f"record {i} has a {domain_field!r} of type {type(value).__name__} "
                    f"({_short(value)}); it must be a string or an integer domain name."
                )
            name = str(value)
        streams.setdefault(name, []).append(text)
    if not streams:
        raise ValueError(
            f"no records in {[str(p) for p in path_list]}; pass files with at least one "
            f"record holding {list(fields)}."
        )
    corpus = Corpus.from_texts(
        {name: streams[name] for name in sorted(streams)},
        seq_len=seq_len,
        max_docs_per_domain=cap,
    )
    manifest = {
        "source": "user",
        "paths": [str(p) for p in path_list],
        "text_field": text_field,
        "domain_field": domain_field,
        "seq_len": seq_len,
        "max_docs_per_domain": cap,
        "records": {name: len(texts) for name, texts in sorted(streams.items())},
    }
    return Corpus(corpus.tokens, corpus.domains, corpus.domain_names, manifest=manifest)
