"""DSIR importance weights: fit bucket distributions on raw and target, weight raw documents.

With bucket counts c_raw and c_target (summed over each corpus's documents) and B buckets:

    p_raw[b]    = c_raw[b] / Σ c_raw
    p_target[b] = (c_target[b] + α) / (Σ c_target + α·B)          (α: target_smoothing)
    r[b]        = log(p_target[b] + ε) − log(p_raw[b] + ε)          (ε: eps, default 1e-8)
    log w(x)    = Σ_b c_b(x) · r[b]                                  (c_b(x): x's bucket counts)

α = 0 and ε = 1e-8 reproduce the reference implementation (``data-selection``), which adds the
same 1e-8 to both distributions; α > 0 is add-α (Laplace for α = 1) smoothing of the target,
which keeps one n-gram the small target never saw from vetoing a document.
"""

from __future__ import annotations

import json
import os
import unicodedata
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from reweight.static._pipeline import (
    NpyStreamWriter,
    Source,
    describe,
    map_ordered,
    progress_bar,
    resolve_block_bytes,
    source_chunks,
    worker_pool,
)
from reweight.static.counting import (
    BlockTask,
    count_ngrams,
    count_ngrams_in_pool,
    prepare_source,
    record_bad_lines,
)
from reweight.static.features import HashedNgrams
from reweight.static.io import LineNumbers, ReadStats

__all__ = ["DEFAULT_MIN_TOKENS", "DSIRModel", "count_ngrams", "fit"]

DEFAULT_MIN_TOKENS = 3
"""The selection default (``python -m reweight.static weights --min-tokens``): documents with
fewer word tokens get log weight ``-inf``. An empty or one-word document sums almost no log
ratios, so its weight (about 0) would beat most real documents in a selection. The Python
methods default to 0, because their weights also feed ``StaticImportance``, which needs finite
values: pass ``min_tokens=DEFAULT_MIN_TOKENS`` when the weights are for a selection."""

_FORMAT = "reweight.static.DSIRModel"
_VERSION = 1
_FILES = ("raw_counts.npy", "target_counts.npy", "log_ratio.npy", "model.json")


def _check_counts(name: str, counts: np.ndarray, num_buckets: int) -> np.ndarray:
    array = np.asarray(counts)
    if array.shape != (num_buckets,):
        raise ValueError(f"{name} must have shape ({num_buckets},), got {array.shape}.")
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name} must hold integer counts, got dtype {array.dtype}.")
    if (array < 0).any():
        raise ValueError(f"{name} has negative counts (first at bucket {np.argmin(array)}).")
    out = array.astype(np.int64, copy=True)
    out.setflags(write=False)
    return out


class DSIRModel:
    """A fitted DSIR importance estimator: bucket counts of raw and target, and the log ratio.

    Build one with :func:`fit`; save with :meth:`save` (plain ``.npy`` arrays and JSON, no
    pickle) and reload with :meth:`load`. Arrays are read-only; the model never changes.

    Args:
        featurizer: the featurizer both corpora were counted with.
        raw_counts: int64 bucket counts of the raw corpus (length num_buckets).
        target_counts: int64 bucket counts of the target corpus.
        target_smoothing: α, pseudo-count added to every target bucket (0 = none).
        eps: ε added to both probabilities inside the logs (> 0).
        raw_docs, target_docs: numbers of documents counted (metadata).

    Example:
        >>> model = fit(raw=["the cat sat", "buy cheap pills now", "the dog sat"],
        ...             target=["the cat sat on the mat", "the dog sat"])
        >>> logw = model.log_importance_weights(["the cat sat", "buy cheap pills now"])
        >>> bool(logw[0] > logw[1])
        True
    """

    def __init__(
        self,
        featurizer: HashedNgrams,
        raw_counts: np.ndarray,
        target_counts: np.ndarray,
        *,
        target_smoothing: float = 0.0,
        eps: float = 1e-8,
        raw_docs: int = 0,
        target_docs: int = 0,
    ) -> None:
        if not isinstance(featurizer, HashedNgrams):
            raise TypeError(f"featurizer must be a HashedNgrams, got {featurizer!r}.")
        b = featurizer.num_buckets
        raw = _check_counts("raw_counts", raw_counts, b)
        target = _check_counts("target_counts", target_counts, b)
        if not np.isfinite(target_smoothing) or target_smoothing < 0:
            raise ValueError(f"target_smoothing must be >= 0, got {target_smoothing!r}.")
        if not np.isfinite(eps) or eps <= 0:
            raise ValueError(
                f"eps must be > 0 (it keeps log ratios finite for empty buckets), got {eps!r}."
            )
        if raw.sum() == 0:
            raise ValueError(
                "the raw corpus has no n-grams (no documents, or only empty ones); check the "
                "raw files and text field."
            )
        if target.sum() == 0:
            raise ValueError(
                "the target corpus has no n-grams (no documents, or only empty ones); give a "
                "non-empty target and check its files and text field."
            )
        self.featurizer = featurizer
        self.raw_counts = raw
        self.target_counts = target
        self.target_smoothing = float(target_smoothing)
        self.eps = float(eps)
        self.raw_docs = int(raw_docs)
        self.target_docs = int(target_docs)
        ratio = np.log(self.target_probs + self.eps) - np.log(self.raw_probs + self.eps)
        ratio.setflags(write=False)
        self.log_ratio = ratio

    @property
    def num_buckets(self) -> int:
        """Number of hash buckets."""
        return self.featurizer.num_buckets

    @property
    def raw_probs(self) -> np.ndarray:
        """p_raw: the raw corpus's bucket distribution."""
        return self.raw_counts / self.raw_counts.sum()

    @property
    def target_probs(self) -> np.ndarray:
        """p_target: the target's bucket distribution, add-α smoothed."""
        alpha = self.target_smoothing
        return (self.target_counts + alpha) / (self.target_counts.sum() + alpha * self.num_buckets)

    def __repr__(self) -> str:
        f = self.featurizer
        return (
            f"DSIRModel(num_buckets={f.num_buckets}, ngrams={f.ngrams}, raw_docs={self.raw_docs}, "
            f"target_docs={self.target_docs}, target_smoothing={self.target_smoothing}, "
            f"eps={self.eps})"
        )

    # ----- weights --------------------------------------------------------------------------

    def _weight_blocks(
        self,
        source: Source,
        *,
        text_field: str,
        skip_bad_lines: bool,
        format: str,
        workers: int,
        progress: bool,
        block_bytes: int | None,
        min_tokens: int,
    ) -> Iterator[np.ndarray]:
        if isinstance(min_tokens, bool) or not isinstance(min_tokens, int) or min_tokens < 0:
            raise ValueError(f"min_tokens must be an int >= 0, got {min_tokens!r}.")
        files, field, skip = prepare_source(source, text_field, skip_bad_lines, format)
        # A writable copy: the compiled kernel is specialised on it (a read-only array would
        # need a second compilation).
        ratio = np.array(self.log_ratio, dtype=np.float64)
        task = BlockTask(self.featurizer, field, skip, ratio, min_tokens)
        stats = ReadStats()
        numbers = LineNumbers()
        with worker_pool(workers) as pool, progress_bar(progress, "weights") as bar:
            block = resolve_block_bytes(block_bytes, files, pool.workers)
            chunks = source_chunks(source, files, block_bytes=block, spans=True)
            results = map_ordered(task, chunks, pool)
            try:
                for chunk, result in results:
                    record_bad_lines(chunk, result, numbers, skip, stats)
                    bar.update(result.docs)
                    yield result.value
            finally:
                results.close()
        stats.warn()

    def log_importance_weights(
        self,
        source: Source,
        *,
        text_field: str = "text",
        skip_bad_lines: bool = False,
        format: str = "auto",
        workers: int = 1,
        progress: bool = False,
        block_bytes: int | None = None,
        min_tokens: int = 0,
    ) -> np.ndarray:
        """log w(x) = Σ_b c_b(x)·r[b] of every document, in input order (float64).

        The result plugs into ``reweight.StaticImportance(log_weights=...)``.

        Args:
            source: documents (an iterable of strings) or files (a path, a list of Paths,
                :class:`~reweight.static.io.Files`).
            text_field, skip_bad_lines, format: how to read files (see ``Files``).
            workers: processes (0 = all cores, 1 = this process only).
            progress: show a progress bar with documents/s on stderr.
            block_bytes: bytes per block of file handed to a worker (default: automatic,
            64 KiB to 4 MiB, so that every worker gets several blocks).
            min_tokens: documents with fewer word tokens (tokens that start with a letter,
                digit or underscore; punctuation does not count) get log weight ``-inf``, so
                that :func:`~reweight.static.importance_resample` never selects them. For a
                selection pass :data:`DEFAULT_MIN_TOKENS` (3, the command line's default), which
                drops empty and one- or two-word documents: their weight (about 0) would
                otherwise beat most real documents (the reference package drops documents under
                100 tokens). The default 0 keeps every document finite, as training weights need
                (``StaticImportance`` takes finite values only).

        Example:
            >>> model = fit(raw=["a b c", "c d e"], target=["a b c"])
            >>> docs = ["a b c", "c d e", "a b", ""]
            >>> model.log_importance_weights(docs).round(2).tolist()
            [2.77, -64.47, 2.08, 0.0]
            >>> model.log_importance_weights(docs, min_tokens=DEFAULT_MIN_TOKENS).round(2).tolist()
            [2.77, -64.47, -inf, -inf]
        """
        parts = list(
            self._weight_blocks(
                source,
                text_field=text_field,
                skip_bad_lines=skip_bad_lines,
                format=format,
                workers=workers,
                progress=progress,
                block_bytes=block_bytes,
                min_tokens=min_tokens,
            )
        )
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)

    def save_log_importance_weights(
        self,
        source: Source,
        path: str | os.PathLike[str],
        *,
        text_field: str = "text",
        skip_bad_lines: bool = False,
        format: str = "auto",
        workers: int = 1,
        progress: bool = False,
        block_bytes: int | None = None,
        min_tokens: int = 0,
    ) -> int:
        """Streams the log weights of every document into a ``.npy`` file (bounded memory).

        The file is written under a temporary name and moved into place only when complete;
        on any error (including a source with no documents) nothing is left behind. Returns the
        number of documents. Arguments as for :meth:`log_importance_weights`.

        Example:
            >>> import pathlib, tempfile
            >>> out = pathlib.Path(tempfile.mkdtemp()) / "w.npy"
            >>> fit(raw=["a b", "c d"], target=["a b"]).save_log_importance_weights(["a b"], out)
            1
        """
        with NpyStreamWriter(path) as writer:
            for weights in self._weight_blocks(
                source,
                text_field=text_field,
                skip_bad_lines=skip_bad_lines,
                format=format,
                workers=workers,
                progress=progress,
                block_bytes=block_bytes,
                min_tokens=min_tokens,
            ):
                writer.write(weights)
            if writer.count == 0:  # raising here discards the partial file
                raise ValueError(
                    f"the raw corpus ({describe(source)}) has no documents (empty, or only blank "
                    f"or skipped lines); nothing was written to {str(path)!r}. Check the files "
                    "and --text-field."
                )
        return writer.count

    # ----- persistence ----------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        """JSON metadata saved next to the arrays."""
        from reweight import __version__

        return {
            "format": _FORMAT,
            "version": _VERSION,
            "featurizer": self.featurizer.config(),
            "target_smoothing": self.target_smoothing,
            "eps": self.eps,
            "raw_docs": self.raw_docs,
            "target_docs": self.target_docs,
            "raw_ngrams": int(self.raw_counts.sum()),
            "target_ngrams": int(self.target_counts.sum()),
            "created_by": f"reweight {__version__}",
        }

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Writes ``raw_counts.npy``, ``target_counts.npy``, ``log_ratio.npy`` and
        ``model.json`` into ``directory`` (created if needed). Returns the directory.

        Example:
            >>> import tempfile
            >>> model = fit(raw=["a b", "c d"], target=["a b"])
            >>> back = DSIRModel.load(model.save(tempfile.mkdtemp()))
            >>> bool((back.log_ratio == model.log_ratio).all())
            True
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "raw_counts.npy", np.asarray(self.raw_counts), allow_pickle=False)
        np.save(out / "target_counts.npy", np.asarray(self.target_counts), allow_pickle=False)
        np.save(out / "log_ratio.npy", np.asarray(self.log_ratio), allow_pickle=False)
        (out / "model.json").write_text(json.dumps(self.metadata(), indent=2) + "\n")
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> DSIRModel:
        """Reads a model written by :meth:`save`, validating every file against the metadata."""
        folder = Path(directory)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"model directory {str(folder)!r} does not exist; create it with `fit` "
                "(python -m reweight.static fit ... --out DIR)."
            )
        missing = [name for name in _FILES if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"model directory {str(folder)!r} lacks {missing}; it is not a saved DSIRModel."
            )
        try:
            meta = json.loads((folder / "model.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{folder / 'model.json'} is not valid JSON ({exc}).") from None
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            raise ValueError(f"{folder / 'model.json'} does not describe a {_FORMAT}.")
        if meta.get("version") != _VERSION:
            raise ValueError(
                f"{folder / 'model.json'} has version {meta.get('version')!r}; this reweight "
                f"reads version {_VERSION}. Refit the model with this version."
            )
        try:
            featurizer = HashedNgrams.from_config(meta["featurizer"])
            arrays = {
                name: np.load(folder / f"{name}.npy", allow_pickle=False)
                for name in ("raw_counts", "target_counts", "log_ratio")
            }
            model = cls(
                featurizer,
                arrays["raw_counts"],
                arrays["target_counts"],
                target_smoothing=meta["target_smoothing"],
                eps=meta["eps"],
                raw_docs=meta["raw_docs"],
                target_docs=meta["target_docs"],
            )
        except KeyError as exc:
            raise ValueError(f"{folder / 'model.json'} lacks the key {exc}.") from None
        except (ValueError, TypeError) as exc:
            raise ValueError(f"model in {str(folder)!r} is invalid: {exc}") from None
        for key, counts in (
            ("raw_ngrams", model.raw_counts),
            ("target_ngrams", model.target_counts),
        ):
            if meta.get(key) != int(counts.sum()):
                raise ValueError(
                    f"model in {str(folder)!r} is inconsistent: {key} is {meta.get(key)!r} in "
                    f"model.json but the counts sum to {int(counts.sum())}."
                )
        stored = arrays["log_ratio"]
        if stored.shape != model.log_ratio.shape or not np.allclose(
            stored, model.log_ratio, rtol=1e-12, atol=1e-12
        ):
            raise ValueError(
                f"model in {str(folder)!r} is inconsistent: log_ratio.npy does not match the "
                "counts and settings in model.json."
            )
        saved_unicode = meta["featurizer"].get("unicode_version")
        if saved_unicode not in (None, unicodedata.unidata_version):
            warnings.warn(
                f"the model was fitted with Unicode {saved_unicode} character classes, this "
                f"Python has Unicode {unicodedata.unidata_version}: tokens with characters new "
                "in between may be split differently.",
                stacklevel=2,
            )
        return model


def fit(
    raw: Source,
    target: Source,
    *,
    num_buckets: int = 10_000,
    ngrams: int = 2,
    featurizer: HashedNgrams | None = None,
    target_smoothing: float = 0.0,
    eps: float = 1e-8,
    max_raw_docs: int | None = None,
    text_field: str = "text",
    skip_bad_lines: bool = False,
    format: str = "auto",
    workers: int = 1,
    progress: bool = False,
    block_bytes: int | None = None,
) -> DSIRModel:
    """Fits the DSIR importance estimator: bucket distributions of the raw and target corpora.

    Args:
        raw: the raw corpus — documents (an iterable of strings) or files (a path, a list of
            Paths, :class:`~reweight.static.io.Files`).
        target: the target corpus, likewise.
        num_buckets, ngrams: featurizer settings (ignored when ``featurizer`` is given).
        featurizer: a :class:`HashedNgrams` to use instead.
        target_smoothing: α pseudo-count added to every target bucket (0 = none, 1 = Laplace).
        eps: ε added inside the logs (the reference uses 1e-8).
        max_raw_docs: fit the raw distribution on the first ``max_raw_docs`` documents only.
        text_field, skip_bad_lines, format: how to read files (see ``Files``).
        workers: processes (0 = all cores, 1 = this process only).
        progress: show progress bars with documents/s on stderr.
        block_bytes: bytes per block of file handed to a worker (default: automatic,
            64 KiB to 4 MiB, so that every worker gets several blocks).

    Raises:
        ValueError: when either corpus has no documents or no n-grams.

    Example:
        >>> model = fit(raw=["a b", "c d"], target=["a b"], num_buckets=1000)
        >>> model.num_buckets, model.raw_docs, model.target_docs
        (1000, 2, 1)
    """
    if featurizer is None:
        featurizer = HashedNgrams(num_buckets=num_buckets, ngrams=ngrams)
    common: dict[str, Any] = {
        "text_field": text_field,
        "skip_bad_lines": skip_bad_lines,
        "format": format,
        "progress": progress,
        "block_bytes": block_bytes,
    }
    with worker_pool(workers) as pool:
        target_counts, target_docs, _ = count_ngrams_in_pool(
            target, featurizer, pool, max_docs=None, desc="fit target", **common
        )
        if target_docs == 0:
            raise ValueError(
                f"the target corpus ({describe(target)}) has no documents; give a non-empty target."
            )
        if target_counts.sum() == 0:
            raise ValueError(
                f"the target corpus ({describe(target)}) has {target_docs} document(s) but no "
                "tokens; give a target with text."
            )
        raw_counts, raw_docs, _ = count_ngrams_in_pool(
            raw, featurizer, pool, max_docs=max_raw_docs, desc="fit raw", **common
        )
    if raw_docs == 0:
        raise ValueError(f"the raw corpus ({describe(raw)}) has no documents.")
    return DSIRModel(
        featurizer,
        raw_counts,
        target_counts,
        target_smoothing=target_smoothing,
        eps=eps,
        raw_docs=raw_docs,
        target_docs=target_docs,
    )
