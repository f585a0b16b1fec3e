"""Importance resampling (Gumbel top-k) and a writer that streams the chosen documents out."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reweight.static._pipeline import Source, as_files, progress_bar, source_chunks
from reweight.static.io import InputError, ReadStats, parse_chunk

__all__ = ["importance_resample", "write_selected"]

_BLOCK = 1 << 20  # log weights processed per block (bounded memory for memory-mapped input)


def _top_k(keys: np.ndarray, index: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest keys (ties: lowest index first) and their indices."""
    if keys.size <= k:
        return keys, index
    threshold = np.partition(keys, keys.size - k)[keys.size - k]
    above = np.flatnonzero(keys > threshold)
    equal = np.flatnonzero(keys == threshold)
    need = k - above.size
    if need < equal.size:
        equal = equal[np.argsort(index[equal], kind="stable")[:need]]
    chosen = np.concatenate([above, equal])
    return keys[chosen], index[chosen]


def importance_resample(
    log_weights: Any,
    k: int,
    seed: int | None = None,
    *,
    deterministic: bool = False,
) -> np.ndarray:
    """Selects ``k`` items without replacement with probability ∝ w = exp(log_weights).

    Gumbel top-k: the k largest of ``log w_i + G_i`` with G_i i.i.d. standard Gumbel, which is
    sampling without replacement proportional to w (the first pick has P(i) = w_i / Σ w).
    The noise comes from a private ``numpy.random.Generator`` seeded with ``seed``; the global
    RNG is never touched. With ``deterministic=True`` the k largest log weights are taken
    (ties broken by lower index) and ``seed`` is not needed. Works block by block, so a
    memory-mapped array (``np.load(path, mmap_mode="r")``) of any length is fine.

    Args:
        log_weights: log importance weights (1-D). ``-inf`` means "never select"; NaN and
            ``+inf`` are rejected.
        k: number of items to select, 1 ≤ k ≤ number of items with finite log weight.
        seed: seed of the Gumbel noise (required unless ``deterministic``).
        deterministic: take the top k log weights instead of sampling.

    Returns:
        The selected indices, sorted ascending (input order), int64.

    Example:
        >>> importance_resample([0.0, 5.0, -1.0, 4.0], k=2, deterministic=True).tolist()
        [1, 3]
        >>> importance_resample([0.0, 5.0, -1.0, 4.0], k=2, seed=0).tolist()
        [1, 3]
    """
    logw = log_weights if isinstance(log_weights, np.ndarray) else np.asarray(log_weights)
    if logw.ndim != 1:
        raise ValueError(f"log_weights must be 1-D, got shape {logw.shape}.")
    if not np.issubdtype(logw.dtype, np.floating) and not np.issubdtype(logw.dtype, np.integer):
        raise TypeError(f"log_weights must be numbers, got dtype {logw.dtype}.")
    n = logw.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, got {k!r}.")
    if not 1 <= k <= n:
        raise ValueError(f"k must lie in [1, {n}] (the number of items), got {k}.")
    if not deterministic:
        if seed is None:
            raise ValueError(
                "give a seed for the Gumbel noise (importance_resample(logw, k, seed=...)), or "
                "deterministic=True for plain top-k."
            )
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}.")
    k = int(k)
    rng = None if deterministic else np.random.default_rng(int(seed))  # type: ignore[arg-type]

    best_keys = np.empty(0, dtype=np.float64)
    best_index = np.empty(0, dtype=np.int64)
    finite = 0
    block = max(_BLOCK, 2 * k)
    for start in range(0, n, block):
        values = np.asarray(logw[start : start + block], dtype=np.float64)
        bad = np.isnan(values) | (values == np.inf)
        if bad.any():
            first = start + int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"log_weights has NaN or +inf (first at item {first}: {float(logw[first])!r}); "
                "fix the weights (clip them, or use -inf for items never to select)."
            )
        finite += int(np.count_nonzero(values != -np.inf))
        keys = values if rng is None else values + rng.gumbel(size=values.size)
        index = np.arange(start, start + values.size, dtype=np.int64)
        best_keys, best_index = _top_k(
            np.concatenate([best_keys, keys]), np.concatenate([best_index, index]), k
        )
    if finite < k:
        raise ValueError(
            f"only {finite} of {n} items have a finite log weight (-inf means never select), "
            f"fewer than k={k}; lower k, or keep more documents when computing the weights "
            "(a smaller min_tokens, --min-tokens)."
        )
    return np.sort(best_index)


def write_selected(
    source: Source,
    indices: Sequence[int] | np.ndarray,
    out: str | os.PathLike[str],
    *,
    text_field: str = "text",
    skip_bad_lines: bool = False,
    format: str = "auto",
    expected_count: int | None = None,
    progress: bool = False,
) -> int:
    """Streams the selected documents of ``source`` to a JSONL file, in input order, one pass.

    Document ``i`` is the i-th document the weights were computed from (read with the same
    ``text_field`` / ``skip_bad_lines``). JSONL input lines are copied verbatim (every field
    kept); Parquet rows are written as JSON objects of all their columns; plain text lines and
    in-memory documents as ``{"text": ...}``. The output appears (atomically) only when
    complete.

    Args:
        source: the documents or files the weights were computed from.
        indices: selected document indices (any order; duplicates are rejected).
        out: the JSONL file to write.
        text_field, skip_bad_lines, format: how to read files (see ``Files``).
        expected_count: the number of documents the weights cover; checked against the input.
        progress: show a progress bar.

    Returns:
        The number of documents written.

    Example:
        >>> import json, pathlib, tempfile
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "selected.jsonl"
        >>> write_selected(["a", "b", "c"], [2, 0], out)
        2
        >>> [json.loads(line)["text"] for line in out.read_text().splitlines()]
        ['a', 'c']
    """
    chosen = np.asarray(indices)
    if chosen.ndim != 1 or (chosen.size and not np.issubdtype(chosen.dtype, np.integer)):
        raise ValueError(f"indices must be a 1-D array of ints, got {chosen.dtype} {chosen.shape}.")
    chosen = np.sort(chosen.astype(np.int64))
    if chosen.size and chosen[0] < 0:
        raise ValueError(f"indices must be >= 0, got {int(chosen[0])}.")
    if chosen.size > 1 and (np.diff(chosen) == 0).any():
        dup = int(chosen[np.flatnonzero(np.diff(chosen) == 0)[0]])
        raise ValueError(f"indices has duplicates (e.g. {dup}); select each document once.")
    files = as_files(source, text_field=text_field, skip_bad_lines=skip_bad_lines, format=format)
    field = files.text_field if files is not None else text_field
    skip = files.skip_bad_lines if files is not None else skip_bad_lines
    path = Path(out)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    stats = ReadStats()
    seen = written = 0
    cursor = 0  # position in `chosen`
    try:
        with open(tmp, "wb") as handle, progress_bar(progress, "write") as bar:
            for chunk in source_chunks(source, files, all_columns=True):
                parsed = parse_chunk(
                    chunk, [field], require_str=field, skip_bad_lines=skip, keep_raw=True
                )
                stats.add_bad(parsed.bad)
                raw = parsed.raw or []
                end = seen + len(raw)
                while cursor < chosen.size and chosen[cursor] < end:
                    item = raw[int(chosen[cursor]) - seen]
                    if isinstance(item, bytes):
                        handle.write(item + b"\n")
                    else:
                        line = json.dumps(item, ensure_ascii=False, default=str)
                        handle.write(line.encode("utf-8", "surrogatepass") + b"\n")
                    written += 1
                    cursor += 1
                seen = end
                bar.update(len(raw))
        if cursor < chosen.size:
            raise InputError(
                f"the selection refers to document {int(chosen[cursor])} but the input has only "
                f"{seen} documents; were the weights computed from these files (and the same "
                "--text-field / --skip-bad-lines)?"
            )
        if expected_count is not None and seen != expected_count:
            raise InputError(
                f"the input has {seen} documents but the weights cover {expected_count}; "
                "compute the weights from the same files (and the same --text-field / "
                "--skip-bad-lines)."
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    stats.warn()
    return written
