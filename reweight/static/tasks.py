"""The work a worker process does on one block of input: parse it and featurise its documents
(bucket counts, or log importance weights). Imports nothing that starts processes, so the
worker pool can warm it up without an import circle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from reweight.static import _hashing
from reweight.static.features import HashedNgrams, encode_documents
from reweight.static.io import Chunk, ParsedChunk, parse_chunk

__all__ = ["BlockResult", "BlockTask"]


@dataclass(frozen=True)
class BlockTask:
    """Parses a block and featurises its documents (picklable; runs in worker processes)."""

    featurizer: HashedNgrams
    text_field: str
    skip_bad_lines: bool
    log_ratio: np.ndarray | None = None  # None: count n-grams; else: log weights
    min_tokens: int = 0  # documents with fewer tokens get log weight -inf

    def run(self, chunk: Chunk, limit: int | None = None) -> BlockResult:
        """Counts (or log weights) of the documents of one block, and what was bad in it."""
        field = self.text_field
        parsed = parse_chunk(chunk, [field], require_str=field, skip_bad_lines=self.skip_bad_lines)
        texts = [r[field] for r in parsed.records]
        if limit is not None:
            texts = texts[:limit]
        f = self.featurizer
        data, offsets = encode_documents(texts, f.lowercase)
        table = _hashing.char_classes()
        if self.log_ratio is None:
            counts = np.zeros(f.num_buckets, dtype=np.int64)
            total = _hashing.add_counts(data, offsets, table, f.ngrams, f.num_buckets, counts)
            parsed.records = []  # not needed by the reading process
            return BlockResult(counts, len(texts), int(total), parsed)
        weights, tokens = _hashing.log_weights(
            data, offsets, table, f.ngrams, f.num_buckets, self.log_ratio
        )
        if self.min_tokens > 0:
            weights[tokens < self.min_tokens] = -np.inf
        parsed.records = []  # not needed by the reading process
        return BlockResult(weights, len(texts), 0, parsed)

    def __call__(self, chunk: Chunk) -> BlockResult:
        return self.run(chunk)


class BlockResult(NamedTuple):
    value: np.ndarray  # bucket counts or log weights
    docs: int
    ngrams: int
    parsed: ParsedChunk  # bad lines and line count (records dropped)
