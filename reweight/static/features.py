"""The hashed n-gram featurizer of DSIR: stable, documented, and compiled.

Specification (the numba kernels implement exactly this; the pure-Python methods
:meth:`HashedNgrams.tokenize`, :meth:`HashedNgrams.ngram_strings` and
:meth:`HashedNgrams.bucket` are the reference the tests compare against):

1. **Lower-case** the document with Python's ``str.lower()`` (full Unicode case mapping).
2. **Tokenise** with the regular expression ``\\w[\\w\\p{M}\\u200c\\u200d]*|[^\\w\\s]+`` (NLTK's
   ``WordPunctTokenizer`` pattern ``\\w+|[^\\w\\s]+``, which DSIR uses, made to keep words
   whole): a *word token* is a word character (letter, digit or underscore — Unicode-aware, as
   in Python's ``re``) followed by any run of word characters, combining marks (Unicode
   categories Mn, Mc, Me) and zero-width (non-)joiners, so ``e`` + U+0301 and Devanagari
   ``नमस्ते`` stay one token; a *punctuation token* is a maximal run of other non-space
   characters (punctuation, symbols, emoji, and marks that follow no word character).
   Whitespace separates tokens and is dropped. Text without combining marks or joiners (all
   ASCII text) tokenises exactly as with NLTK's pattern.
3. **N-grams** of orders 1..``ngrams`` (default 2: unigrams and bigrams); an n-gram's string is
   its tokens joined by one space (``"new york"``).
4. **Hash** the n-gram's UTF-8 bytes (lone surrogates encoded with ``surrogatepass``) with
   64-bit FNV-1a, then the murmur3 ``fmix64`` finaliser, giving h; the **bucket** is
   ``((h >> 32) * num_buckets) >> 32`` (Lemire's multiply-shift range reduction; default
   ``num_buckets`` 10,000). The hash has no seed: buckets are identical across processes,
   ``PYTHONHASHSEED`` values, platforms and runs.

Character classes come from the running Python's Unicode database (recorded as
``unicode_version`` in saved models): characters assigned in a newer Unicode version may
tokenise differently on an older Python. (Python's ``re`` has no ``\\p{M}``:
:func:`token_pattern` spells the marks out as code point ranges.)
"""

from __future__ import annotations

import re
import unicodedata
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from reweight.static import _hashing

__all__ = ["HASH_NAME", "TOKENIZER_NAME", "HashedNgrams", "encode_documents", "token_pattern"]

TOKENIZER_NAME = "regex:\\w[\\w\\p{M}\\u200c\\u200d]*|[^\\w\\s]+"
LEGACY_TOKENIZER_NAME = "regex:\\w+|[^\\w\\s]+"  # split marks from their letters
HASH_NAME = "fnv1a64+fmix64+mulshift32"
_MAX_NGRAMS = 8


@lru_cache(maxsize=1)
def token_pattern() -> re.Pattern[str]:
    """The compiled tokenizer regex, ``\\w[\\w\\p{M}\\u200c\\u200d]*|[^\\w\\s]+``, with the
    combining marks and joiners (:func:`~reweight.static._hashing.word_extenders`) spelled out
    as ranges for Python's ``re``.

    Example:
        >>> token_pattern().findall("cafe\\u0301 ok!") == ["cafe\\u0301", "ok", "!"]
        True
    """
    ranges: list[list[int]] = []
    for cp in _hashing.word_extenders():
        if ranges and cp == ranges[-1][1] + 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    extend = "".join(f"\\U{a:08x}-\\U{b:08x}" if a < b else f"\\U{a:08x}" for a, b in ranges)
    return re.compile(rf"\w[\w{extend}]*|[^\w\s]+")


def encode_documents(docs: Sequence[str], lowercase: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(UTF-8 bytes as uint8, int64 offsets of length N+1) of the (lower-cased) documents.

    Example:
        >>> data, offsets = encode_documents(["Ab", "é"])
        >>> bytes(data), offsets.tolist()
        (b'ab\\xc3\\xa9', [0, 2, 4])
    """
    if lowercase:
        encoded = [d.lower().encode("utf-8", "surrogatepass") for d in docs]
    else:
        encoded = [d.encode("utf-8", "surrogatepass") for d in docs]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    if encoded:
        np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)), out=offsets[1:])
    data = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    return data, offsets


def _as_docs(docs: Iterable[str] | str) -> list[str]:
    if isinstance(docs, str):
        raise TypeError(
            "give a list of documents, not one string (wrap a single document as [text])."
        )
    out = docs if isinstance(docs, list) else list(docs)
    for i, doc in enumerate(out):
        if not isinstance(doc, str):
            raise TypeError(f"document {i} is {type(doc).__name__} {doc!r:.60}, not a string.")
    return out


@dataclass(frozen=True)
class HashedNgrams:
    """Hashed bag-of-n-grams featurizer (see the module docstring for the exact specification).

    Args:
        num_buckets: number of hash buckets (feature dimension), 1 ≤ num_buckets < 2^31.
        ngrams: largest n-gram order; orders 1..ngrams are counted (2 = unigrams + bigrams).
        lowercase: lower-case documents before tokenising (DSIR does).

    Example:
        >>> f = HashedNgrams(num_buckets=10_000)
        >>> f.ngram_strings("New York, new york!")[:6]
        ['new', 'new york', 'york', 'york ,', ',', ', new']
        >>> ids, offsets = f.bucket_ids(["New York, new york!", "hi"])
        >>> expected = f.ngram_strings("New York, new york!") + ["hi"]
        >>> ids.tolist() == [f.bucket(s) for s in expected]
        True
        >>> offsets.tolist()
        [0, 11, 12]
        >>> int(f.total_counts(["a a", "a"])[f.bucket("a")])
        3
    """

    num_buckets: int = 10_000
    ngrams: int = 2
    lowercase: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.num_buckets, bool) or not isinstance(
            self.num_buckets, (int, np.integer)
        ):
            raise TypeError(f"num_buckets must be an int, got {self.num_buckets!r}.")
        if not 1 <= self.num_buckets < 2**31:
            raise ValueError(f"num_buckets must lie in [1, 2^31), got {self.num_buckets}.")
        if isinstance(self.ngrams, bool) or not isinstance(self.ngrams, (int, np.integer)):
            raise TypeError(f"ngrams must be an int, got {self.ngrams!r}.")
        if not 1 <= self.ngrams <= _MAX_NGRAMS:
            raise ValueError(
                f"ngrams must lie in [1, {_MAX_NGRAMS}] (1 = unigrams, 2 = unigrams and "
                f"bigrams), got {self.ngrams}."
            )
        object.__setattr__(self, "num_buckets", int(self.num_buckets))
        object.__setattr__(self, "ngrams", int(self.ngrams))
        object.__setattr__(self, "lowercase", bool(self.lowercase))

    # ----- the specification, in pure Python -------------------------------------------------

    def tokenize(self, text: str) -> list[str]:
        """Tokens of one document: ``token_pattern().findall(text.lower())``.

        Example:
            >>> HashedNgrams().tokenize("Don't panic -- it's 42°C!")
            ['don', "'", 't', 'panic', '--', 'it', "'", 's', '42', '°', 'c', '!']
            >>> len(HashedNgrams().tokenize("cafe\u0301 नमस्ते"))  # marks stay in their word
            2
        """
        return token_pattern().findall(text.lower() if self.lowercase else text)

    def ngram_strings(self, text: str) -> list[str]:
        """Every n-gram of one document, position-major (for each token: orders 1..ngrams).

        Example:
            >>> HashedNgrams(ngrams=3).ngram_strings("a b c")
            ['a', 'a b', 'a b c', 'b', 'b c', 'c']
        """
        tokens = self.tokenize(text)
        out: list[str] = []
        for t in range(len(tokens)):
            for order in range(1, self.ngrams + 1):
                if t + order > len(tokens):
                    break
                out.append(" ".join(tokens[t : t + order]))
        return out

    def bucket(self, ngram: str) -> int:
        """The bucket of one n-gram string (pure Python; the kernels compute the same).

        Example:
            >>> HashedNgrams().bucket("hello")
            9131
        """
        return _hashing.bucket_of(ngram.encode("utf-8", "surrogatepass"), self.num_buckets)

    # ----- compiled paths ---------------------------------------------------------------------

    def _encode(self, docs: Iterable[str] | str) -> tuple[np.ndarray, np.ndarray]:
        return encode_documents(_as_docs(docs), self.lowercase)

    def bucket_ids(self, docs: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """Bucket ids of every n-gram of every document (int32, concatenated) and the int64
        offsets (length N+1) delimiting each document's ids."""
        data, offsets = self._encode(docs)
        return _hashing.bucket_ids(
            data, offsets, _hashing.char_classes(), self.ngrams, self.num_buckets
        )

    def count_matrix(self, docs: Iterable[str]) -> np.ndarray:
        """Dense (N, num_buckets) int32 bucket counts, one row per document (small inputs).

        Example:
            >>> HashedNgrams(num_buckets=4).count_matrix(["a b", ""]).sum(axis=1).tolist()
            [3, 0]
        """
        ids, offsets = self.bucket_ids(docs)
        n = offsets.size - 1
        rows = np.repeat(np.arange(n), np.diff(offsets))
        matrix = np.zeros((n, self.num_buckets), dtype=np.int32)
        np.add.at(matrix, (rows, ids), 1)
        return matrix

    def total_counts(self, docs: Iterable[str], out: np.ndarray | None = None) -> np.ndarray:
        """Bucket counts summed over all documents (int64, length num_buckets).

        Args:
            docs: the documents.
            out: an int64 array of length num_buckets to add the counts into (returned).
        """
        if out is None:
            out = np.zeros(self.num_buckets, dtype=np.int64)
        elif out.dtype != np.int64 or out.shape != (self.num_buckets,):
            raise ValueError(
                f"out must be an int64 array of shape ({self.num_buckets},), got "
                f"{out.dtype} {out.shape}."
            )
        data, offsets = self._encode(docs)
        _hashing.add_counts(
            data, offsets, _hashing.char_classes(), self.ngrams, self.num_buckets, out
        )
        return out

    def log_weights(self, docs: Iterable[str], log_ratio: np.ndarray) -> np.ndarray:
        """Σ over each document's n-grams of ``log_ratio[bucket]`` (float64, one per document).

        Example:
            >>> f = HashedNgrams()
            >>> ratio = np.zeros(10_000); ratio[f.bucket("a")] = 0.5
            >>> f.log_weights(["a a", "b", ""], ratio).tolist()
            [1.0, 0.0, 0.0]
        """
        return self.log_weights_and_tokens(docs, log_ratio)[0]

    def log_weights_and_tokens(
        self, docs: Iterable[str], log_ratio: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(log weights as in :meth:`log_weights`, int64 word-token count of each document).

        Word tokens are the tokens that start with a word character: punctuation and symbol
        tokens are not counted.

        Example:
            >>> HashedNgrams().log_weights_and_tokens(["a b, c", ""], np.zeros(10_000))[1].tolist()
            [3, 0]
        """
        ratio = np.array(log_ratio, dtype=np.float64)  # writable: one compiled specialisation
        if ratio.shape != (self.num_buckets,):
            raise ValueError(
                f"log_ratio must have shape ({self.num_buckets},), got {ratio.shape}; it must "
                "come from a model fitted with the same num_buckets."
            )
        data, offsets = self._encode(docs)
        return _hashing.log_weights(
            data, offsets, _hashing.char_classes(), self.ngrams, self.num_buckets, ratio
        )

    def config(self) -> dict[str, Any]:
        """JSON-ready description, including the tokenizer, hash and Unicode version.

        Example:
            >>> sorted(HashedNgrams().config())
            ['hash', 'lowercase', 'ngrams', 'num_buckets', 'tokenizer', 'unicode_version']
        """
        return {
            **asdict(self),
            "tokenizer": TOKENIZER_NAME,
            "hash": HASH_NAME,
            "unicode_version": unicodedata.unidata_version,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> HashedNgrams:
        """Rebuilds a featurizer from :meth:`config`, refusing another tokenizer or hash.

        Example:
            >>> HashedNgrams.from_config(HashedNgrams(num_buckets=5).config()).num_buckets
            5
        """
        if config.get("tokenizer") == LEGACY_TOKENIZER_NAME:
            warnings.warn(
                "this model was fitted with the previous tokenizer, which split combining marks "
                "(e.g. e + U+0301, Devanagari vowel signs) from their letters; text without "
                "them gets the same buckets, other text slightly different ones. Refit the "
                "model for exact weights.",
                stacklevel=2,
            )
            config = {**config, "tokenizer": TOKENIZER_NAME}
        for key, expected in (("tokenizer", TOKENIZER_NAME), ("hash", HASH_NAME)):
            if config.get(key, expected) != expected:
                raise ValueError(
                    f"featurizer {key} {config.get(key)!r} is not supported (this version uses "
                    f"{expected!r}); refit the model with this version of reweight."
                )
        return cls(
            num_buckets=config["num_buckets"],
            ngrams=config["ngrams"],
            lowercase=config.get("lowercase", True),
        )
