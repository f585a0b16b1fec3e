"""The corpus type: fixed-size byte documents, each with a domain, and their train/val split.

A :class:`Corpus` is immutable: its arrays are validated, copied once and made read-only, and
it carries a sha256 :attr:`~Corpus.content_hash` of its names, domain ids and tokens (equal
hashes mean equal corpora; the cache uses it to detect corruption). :meth:`Corpus.from_texts`
builds one from raw text per domain; :func:`recipes.data.build_corpus` and
:func:`recipes.data.load_user_corpus` build the built-in and a user's corpus.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from recipes.data.documents import (
    check_cap,
    check_seq_len,
    chunk,
    holdout_sizes,
    is_int,
    short,
    stack,
)

__all__ = ["Corpus", "Split"]


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
                f"domain_names must be a sequence of strings, got {short(domain_names)}."
            )
        names = list(domain_names)
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"domain_names must be unique and non-empty, got {short(names)}.")
        dom = dom.astype(np.int64, copy=True)
        if dom.min() < 0 or dom.max() >= len(names):
            raise ValueError(
                f"domain ids must lie in 0..{len(names) - 1} (one per name in {short(names)}), "
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
        seq_len = check_seq_len(seq_len)
        cap = check_cap(max_docs_per_domain)
        if not isinstance(texts, Mapping) or not texts:
            raise TypeError(
                f"texts must be a non-empty mapping of domain name -> text(s), got {short(texts)}."
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
                        f"{short(item)}."
                    )
            docs = chunk(pieces, seq_len, cap)
            if len(docs) < 2:
                total = sum(len(p) for p in pieces)
                raise ValueError(
                    f"domain {name!r} has {total} bytes of text, which makes {len(docs)} "
                    f"document(s) of seq_len={seq_len}; each domain needs at least 2 (one to "
                    "train on, one to validate). Add text to it or lower seq_len."
                )
            blocks.append(docs)
        tokens, domains = stack(blocks)
        return cls(tokens, domains, [str(n) for n in texts], manifest={"source": "texts"})

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
        if not is_int(domain):
            raise TypeError(
                f"domain must be a name or an integer id, got {type(domain).__name__}: "
                f"{short(domain)}."
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
        if not is_int(seed) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {short(seed)}.")
        counts = holdout_sizes(self._sizes.tolist(), self._names, val_fraction, max_val_per_domain)
        train_parts, val_parts = [], []
        for d, n_val in enumerate(counts):
            idx = np.flatnonzero(self._domains == d)
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
