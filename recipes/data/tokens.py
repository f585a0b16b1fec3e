"""Packed token files as the main job's data (``data=tokens``), read block by block.

:class:`TokenCorpus` is the token counterpart of :class:`~recipes.data.corpus.Corpus`: items are
the fixed-length blocks of :meth:`reweight.IndexedDataset.from_token_files` (one flat token
array per domain, nanoGPT / Megatron layout), with the same ``domains``, ``domain_names``,
``num_docs`` and ``split`` that the main job uses. Nothing is loaded: blocks are read from disk
when drawn, so memory stays flat whatever the corpus size.

Example:
    >>> import pathlib, tempfile
    >>> import numpy as np
    >>> from recipes.data import TokenCorpus
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> np.arange(41, dtype=np.uint16).tofile(root / "web.bin")
    >>> np.arange(100, 121, dtype=np.uint16).tofile(root / "code.bin")
    >>> corpus = TokenCorpus(root, block_size=4, dtype="uint16")  # a directory: one file a domain
    >>> corpus.domain_sizes
    {'code': 5, 'web': 10}
    >>> train, val = corpus.split(0.2)
    >>> val.tolist()  # the last blocks of each domain
    [4, 13, 14]
    >>> corpus.dataset(val, vocab_size=128)[0]
    {'tokens': tensor([116, 117, 118, 119, 120])}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from recipes.data.corpus import Split
from recipes.data.documents import holdout_sizes, short
from reweight.data import IndexedDataset
from reweight.token_data import TokenBlocks

__all__ = ["TOKEN_SUFFIXES", "TokenBlockDataset", "TokenCorpus", "token_files"]

#: The files a directory of token files is read from (one a domain, named by its stem).
TOKEN_SUFFIXES = (".bin", ".npy")


def token_files(files: Any) -> dict[str, Any]:
    """``{domain: file or [shards]}`` from a mapping, or from a directory holding one ``.bin``
    or ``.npy`` file per domain (the domain is the file's stem; domains sorted by name).

    Example:
        >>> token_files({"web": "web.bin", "code": ["c0.bin", "c1.bin"]})
        {'web': 'web.bin', 'code': ['c0.bin', 'c1.bin']}
    """
    if isinstance(files, Mapping):
        return {str(name): value for name, value in files.items()}
    if not isinstance(files, str | os.PathLike):
        raise TypeError(
            f"files must map domain names to token files, e.g. {{web: web.bin, code: code.bin}}, "
            f"or be a directory with one file per domain; got {short(files)}."
        )
    root = Path(files)
    if not root.is_dir():
        raise FileNotFoundError(
            f"files {str(root)!r} is not a directory; pass a directory with one .bin or .npy "
            "file per domain, or a mapping {web: web.bin, code: code.bin}."
        )
    found = sorted(p for p in root.iterdir() if p.is_file() and p.suffix in TOKEN_SUFFIXES)
    if not found:
        present = sorted(p.name for p in root.iterdir())[:10]
        raise ValueError(
            f"directory {str(root)!r} has no .bin or .npy token files (it has {present}); "
            "write one file per domain there, or pass a mapping {web: web.bin, ...}."
        )
    stems = [p.stem for p in found]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise ValueError(
            f"directory {str(root)!r} has several files for the domains {twice} (a .bin and a "
            ".npy?); keep one file per domain, or pass a mapping with a list of shards."
        )
    return {p.stem: str(p) for p in found}


class TokenCorpus:
    """The blocks of packed token files, one domain per file (or list of shards).

    Args:
        files: ``{domain: file or [shards]}``, or a directory with one file per domain (see
            :func:`token_files`).
        block_size: Tokens per block, the model's context; every item holds one more token
            (the last block's target), shared with the next block.
        dtype: Token dtype of the raw ``.bin`` files (``.npy`` files carry their own).

    Raises:
        FileNotFoundError: If a file or the directory is missing.
        ValueError: For an unknown dtype, a file whose size is not a multiple of it, or a domain
            with fewer tokens than one block (from :class:`reweight.token_data.TokenBlocks`).
    """

    def __init__(self, files: Any, *, block_size: int, dtype: Any = None) -> None:
        self.indexed = IndexedDataset.from_token_files(
            token_files(files), block_size=block_size, dtype=dtype
        )
        self.blocks: TokenBlocks = self.indexed.dataset
        domains = self.indexed.domains
        assert domains is not None  # from_token_files always has domains
        self._domains = domains

    @property
    def domains(self) -> np.ndarray:
        """Read-only int64 domain id of each block."""
        return self._domains

    @property
    def domain_names(self) -> list[str]:
        """Domain names; ``domain_names[d]`` names id ``d``."""
        return self.indexed.domain_names

    @property
    def num_docs(self) -> int:
        """Number of blocks (the items the sampler draws)."""
        return len(self.indexed)

    @property
    def domain_sizes(self) -> dict[str, int]:
        """Blocks per domain, by name."""
        sizes = self.indexed.domain_sizes.tolist()
        return dict(zip(self.domain_names, sizes, strict=True))

    def split(
        self, val_fraction: float = 0.05, seed: int = 0, *, max_val_per_domain: int | None = None
    ) -> Split:
        """Train/validation blocks: the last ``val_fraction`` of each domain's blocks (at least
        one, at most all but one, at most ``max_val_per_domain``) validate, the rest train.
        Deterministic (``seed`` is accepted for the common interface and not used). The blocks
        of the two splits are disjoint, and no validation target is a training target (the
        token a training block shares with the first validation block is only its input).
        """
        sizes = self.indexed.domain_sizes.tolist()
        counts = holdout_sizes(
            sizes,
            self.domain_names,
            val_fraction,
            max_val_per_domain,
            unit="block",
            fix="Lower data.block_size or add tokens to them.",
        )
        train_parts, val_parts = [], []
        for d, n_val in enumerate(counts):
            blocks = np.flatnonzero(self._domains == d)
            train_parts.append(blocks[:-n_val])
            val_parts.append(blocks[-n_val:])
        return Split(
            np.concatenate(train_parts).astype(np.int64),
            np.concatenate(val_parts).astype(np.int64),
        )

    def vocab_size(self, configured: int | None) -> int:
        """The model's vocabulary: ``configured``, or (None) the largest token id + 1, found by
        one pass over the files (flat memory; the time of reading them once)."""
        if configured is not None:
            return configured
        low, high = self.blocks.token_range()
        if low < 0:
            raise ValueError(
                f"the token files hold the negative token id {low}; token ids must be >= 0. "
                "Check data.dtype, or write the files again."
            )
        return high + 1

    def dataset(self, indices: Any, vocab_size: int) -> TokenBlockDataset:
        """The torch dataset over the blocks ``indices``, each checked against ``vocab_size``."""
        return TokenBlockDataset(self.blocks, indices, vocab_size)

    def __repr__(self) -> str:
        return f"TokenCorpus({self.blocks!r})"


class TokenBlockDataset(Dataset[dict[str, torch.Tensor]]):
    """Some blocks of a :class:`~reweight.token_data.TokenBlocks` as ``{"tokens": LongTensor}``
    (``block_size + 1`` tokens), the main job's item; a token id outside ``0..vocab_size - 1``
    is an error naming the block, its domain and the fix (``model.vocab_size``)."""

    def __init__(self, blocks: TokenBlocks, indices: Any, vocab_size: int) -> None:
        self.blocks = blocks
        self.block_indices = np.asarray(indices, dtype=np.int64)
        self.vocab_size = int(vocab_size)

    def __len__(self) -> int:
        return int(self.block_indices.shape[0])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        block = int(self.block_indices[i])
        tokens = self.blocks[block]["input_ids"]
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high >= self.vocab_size:
            name = self.blocks.domain_names[int(self.blocks.domains[block])]
            bad = low if low < 0 else high
            raise ValueError(
                f"block {block} (domain {name!r}) holds token id {bad}, outside the model's "
                f"vocabulary 0..{self.vocab_size - 1}: set model.vocab_size to the tokenizer's "
                "vocabulary (at least the largest id + 1), or null to find it from the files; "
                "a negative id means a wrong data.dtype."
            )
        return {"tokens": tokens}
