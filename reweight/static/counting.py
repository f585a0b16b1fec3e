"""Bucket counts of a corpus, block by block over a pool of worker processes."""

from __future__ import annotations

import numpy as np

from reweight.static._pipeline import (
    Source,
    WorkerPool,
    as_files,
    map_ordered,
    progress_bar,
    resolve_block_bytes,
    source_chunks,
    worker_pool,
)
from reweight.static.features import HashedNgrams
from reweight.static.io import Chunk, Files, LineNumbers, ReadStats
from reweight.static.tasks import BlockResult, BlockTask

__all__ = ["count_ngrams", "count_ngrams_in_pool", "prepare_source", "record_bad_lines"]


def record_bad_lines(
    chunk: Chunk, result: BlockResult, numbers: LineNumbers, skip: bool, stats: ReadStats
) -> None:
    """Numbers the block's bad lines (raising for the first unless skipping) and counts them."""
    stats.add_bad(numbers.resolve(chunk, result.parsed, skip))


def prepare_source(
    source: Source, text_field: str, skip_bad_lines: bool, format: str
) -> tuple[Files | None, str, bool]:
    files = as_files(source, text_field=text_field, skip_bad_lines=skip_bad_lines, format=format)
    if files is not None:
        return files, files.text_field, files.skip_bad_lines
    return None, text_field, skip_bad_lines


def count_ngrams(
    source: Source,
    featurizer: HashedNgrams | None = None,
    *,
    max_docs: int | None = None,
    text_field: str = "text",
    skip_bad_lines: bool = False,
    format: str = "auto",
    workers: int = 1,
    progress: bool = False,
    desc: str = "count",
    block_bytes: int | None = None,
) -> tuple[np.ndarray, int, int]:
    """Bucket counts summed over a corpus: (int64 counts, documents, n-grams).

    Args:
        source: documents (an iterable of strings) or files (a path, a list of Paths, Files).
        featurizer: the featurizer (default :class:`HashedNgrams`()).
        max_docs: count only the first ``max_docs`` documents.
        text_field, skip_bad_lines, format: how to read files (see :class:`Files`).
        workers: processes (0 = all cores, 1 = this process only).
        progress: show a progress bar with documents/s on stderr.
        desc: label of the progress bar.
        block_bytes: bytes per block of file handed to a worker (default: automatic,
            64 KiB to 4 MiB, so that every worker gets several blocks).

    Example:
        >>> counts, docs, ngrams = count_ngrams(["a b", "c"])
        >>> int(counts.sum()), docs, ngrams
        (4, 2, 4)
    """
    with worker_pool(workers) as pool:
        return count_ngrams_in_pool(
            source,
            HashedNgrams() if featurizer is None else featurizer,
            pool,
            max_docs=max_docs,
            text_field=text_field,
            skip_bad_lines=skip_bad_lines,
            format=format,
            progress=progress,
            desc=desc,
            block_bytes=block_bytes,
        )


def count_ngrams_in_pool(
    source: Source,
    featurizer: HashedNgrams,
    pool: WorkerPool,
    *,
    max_docs: int | None,
    text_field: str,
    skip_bad_lines: bool,
    format: str,
    progress: bool,
    desc: str,
    block_bytes: int | None,
) -> tuple[np.ndarray, int, int]:
    if max_docs is not None and (
        isinstance(max_docs, bool) or not isinstance(max_docs, int) or max_docs < 1
    ):
        raise ValueError(f"max_docs must be a positive int or None, got {max_docs!r}.")
    files, field, skip = prepare_source(source, text_field, skip_bad_lines, format)
    task = BlockTask(featurizer, field, skip)
    counts = np.zeros(featurizer.num_buckets, dtype=np.int64)
    stats = ReadStats()
    numbers = LineNumbers()
    ndocs = total = 0
    block = resolve_block_bytes(block_bytes, files, pool.workers)
    chunks = source_chunks(source, files, block_bytes=block, spans=True)
    with progress_bar(progress, desc) as bar:
        results = map_ordered(task, chunks, pool)
        try:
            for chunk, result in results:
                if max_docs is not None and ndocs + result.docs >= max_docs:
                    # Recount the block that crosses the limit, keeping only what is needed.
                    result = task.run(chunk, limit=max_docs - ndocs)
                record_bad_lines(chunk, result, numbers, skip, stats)
                counts += result.value
                ndocs += result.docs
                total += result.ngrams
                bar.update(result.docs)
                if max_docs is not None and ndocs >= max_docs:
                    break
        finally:
            results.close()
    stats.warn()
    return counts, ndocs, total
