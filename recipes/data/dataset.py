"""The torch dataset over a :class:`~recipes.data.corpus.Corpus`: one byte document per item."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from recipes.data.corpus import Corpus
from reweight.data import IndexedDataset

__all__ = ["ByteLMDataset"]


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
