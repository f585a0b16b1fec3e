"""Text to fixed-size byte documents, and the checks of the parameters that shape them.

Every corpus in :mod:`recipes.data` is made the same way: a domain's texts are encoded, joined
by a blank line (:data:`SEPARATOR`) and cut into ``seq_len``-byte documents (:func:`chunk`),
optionally thinned evenly to a cap (:func:`spread`); the domains' blocks are then stacked into
one token array with a domain id per document (:func:`stack`).

Example:
    >>> from recipes.data.documents import chunk, stack
    >>> a = chunk([b"abcd", b"efgh"], seq_len=4)  # "abcd\\n\\nefgh" -> 2 whole documents
    >>> a.tolist()
    [[97, 98, 99, 100], [10, 10, 101, 102]]
    >>> tokens, domains = stack([a, chunk([b"z" * 12], seq_len=4, cap=2)])
    >>> tokens.shape, domains.tolist()
    ((4, 4), [0, 0, 1, 1])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "SEPARATOR",
    "check_cap",
    "check_seq_len",
    "chunk",
    "holdout_sizes",
    "is_int",
    "short",
    "spread",
    "stack",
]

#: What joins consecutive texts of a domain before it is cut into documents.
SEPARATOR = b"\n\n"


def short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters, for error messages.

    Example:
        >>> from recipes.data.documents import short
        >>> short("x" * 100, limit=10)
        "'xxxxxx..."
    """
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_int(value: Any) -> bool:
    """Whether ``value`` is a Python or NumPy integer (``bool`` is not)."""
    return not isinstance(value, bool) and isinstance(value, int | np.integer)


def check_seq_len(seq_len: Any) -> int:
    """``seq_len`` (bytes per document) as an int in [2, 2**20], or a clear error."""
    if not is_int(seq_len):
        raise TypeError(
            f"seq_len must be an int (bytes per document), got {type(seq_len).__name__}: "
            f"{short(seq_len)}. Pass e.g. seq_len=256."
        )
    if not 2 <= int(seq_len) <= 1 << 20:
        raise ValueError(
            f"seq_len must lie in [2, 1048576] (a language model needs at least two bytes per "
            f"document), got {int(seq_len)}. Pass e.g. seq_len=256."
        )
    return int(seq_len)


def check_cap(max_docs_per_domain: Any) -> int | None:
    """``max_docs_per_domain`` as None or an int >= 2, or a clear error."""
    if max_docs_per_domain is None:
        return None
    if not is_int(max_docs_per_domain):
        raise TypeError(
            f"max_docs_per_domain must be None or an int, got "
            f"{type(max_docs_per_domain).__name__}: {short(max_docs_per_domain)}."
        )
    if int(max_docs_per_domain) < 2:
        raise ValueError(
            f"max_docs_per_domain must be at least 2 (one training and one validation document "
            f"per domain), got {int(max_docs_per_domain)}. Pass None to keep every document."
        )
    return int(max_docs_per_domain)


def spread(n: int, k: int) -> np.ndarray:
    """``k`` of ``range(n)`` spread evenly over the whole range (deterministic thinning).

    Example:
        >>> from recipes.data.documents import spread
        >>> spread(10, 3).tolist()
        [0, 3, 6]
    """
    return (np.arange(k, dtype=np.int64) * n) // k


def chunk(pieces: Iterable[bytes], seq_len: int, cap: int | None = None) -> np.ndarray:
    """``pieces`` joined by :data:`SEPARATOR` and cut into ``(n, seq_len)`` uint8 documents.

    A trailing partial document is dropped; with ``cap``, at most ``cap`` documents are kept,
    spread evenly over the whole stream (:func:`spread`).
    """
    stream = SEPARATOR.join(pieces)
    n = len(stream) // seq_len
    docs = np.frombuffer(stream, dtype=np.uint8, count=n * seq_len).reshape(n, seq_len)
    if cap is not None and n > cap:
        docs = docs[spread(n, cap)]
    return docs


def stack(blocks: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One block of documents per domain -> ``(tokens, domains)``; block ``d`` gets id ``d``."""
    tokens = np.concatenate(blocks)
    domains = np.repeat(np.arange(len(blocks), dtype=np.int64), [len(b) for b in blocks])
    return tokens, domains


def holdout_sizes(
    sizes: Sequence[int],
    names: Sequence[str],
    val_fraction: Any,
    max_val_per_domain: Any = None,
    *,
    unit: str = "document",
    fix: str = "Add text to them or lower seq_len.",
) -> list[int]:
    """Validation items per domain: ``round(val_fraction * n_d)``, at least one and at most
    ``n_d - 1`` (and at most ``max_val_per_domain``), with the parameters checked; a domain of a
    single ``unit`` is an error that says ``fix``.

    Example:
        >>> from recipes.data.documents import holdout_sizes
        >>> holdout_sizes([400, 8, 2], ["a", "b", "c"], 0.1, max_val_per_domain=32)
        [32, 1, 1]
    """
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, int | float):
        raise TypeError(f"val_fraction must be a number, got {short(val_fraction)}.")
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(
            f"val_fraction must lie strictly between 0 and 1, got {val_fraction!r}. Pass e.g. 0.05."
        )
    if max_val_per_domain is not None and (
        not is_int(max_val_per_domain) or max_val_per_domain < 1
    ):
        raise ValueError(
            f"max_val_per_domain must be None or an int >= 1, got {short(max_val_per_domain)}."
        )
    small = [n for n, s in zip(names, sizes, strict=True) if s < 2]
    if small:
        raise ValueError(
            f"domains {small} have a single {unit}, which cannot be both trained on and "
            f"validated. {fix}"
        )
    counts = []
    for n in sizes:
        n_val = min(max(1, round(float(val_fraction) * int(n))), int(n) - 1)
        if max_val_per_domain is not None:
            n_val = min(n_val, int(max_val_per_domain))
        counts.append(n_val)
    return counts
