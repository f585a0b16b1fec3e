"""Packed token files on disk, cut into fixed-length blocks, read block by block, never loaded.

The layout of nanoGPT's ``train.bin`` and of Megatron-style corpora: each domain is one flat
array of token ids (or several shards), written either as raw bytes (``.bin``: the dtype must be
given, e.g. ``"uint16"``) or as a ``.npy`` file (whose header gives its dtype).
:class:`TokenBlocks` cuts every file into blocks of ``block_size`` tokens and returns block
``i`` as ``{"input_ids": LongTensor}``. Only the block asked for is read: one positioned read
(``os.pread``) of its bytes, which the operating system's file cache serves after the first time.

With ``shift=True`` (the default) an item holds ``block_size + 1`` tokens, so that
``x, y = t[:-1], t[1:]`` are both ``block_size`` long, as nanoGPT's ``get_batch`` and Megatron's
GPT dataset do; consecutive blocks share one token, so every token after a file's first is a
target exactly once. With ``shift=False`` an item holds ``block_size`` tokens and blocks do not
overlap (for Hugging Face causal LMs, which take ``labels=input_ids`` and shift inside the
model). Blocks never cross a file boundary; the few tokens after a file's last whole block are
not used (:attr:`TokenBlocks.unused_tokens`).

The dataset holds file names and sizes only: it pickles in bytes, and each DataLoader worker
opens the files itself on first use. Memory stays flat whatever the corpus size, resident memory
(RSS) included: unlike ``np.memmap``, whose touched pages (and the pages the kernel maps around
them) count in the process's RSS until it is unmapped, which looks like a leak (nanoGPT re-creates
its memmap every batch for that reason). ``benchmarks/token_files.py`` measures both.

Example:
    >>> import pathlib, tempfile
    >>> import numpy as np
    >>> from reweight.token_data import TokenBlocks
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> np.arange(10, dtype=np.uint16).tofile(root / "web.bin")
    >>> np.save(root / "code.npy", np.arange(100, 107, dtype=np.uint32))
    >>> blocks = TokenBlocks({"web": root / "web.bin", "code": root / "code.npy"},
    ...                      block_size=3, dtype="uint16")
    >>> len(blocks), blocks.domain_names, blocks.domains.tolist()
    (5, ['web', 'code'], [0, 0, 0, 1, 1])
    >>> blocks[1]["input_ids"], blocks[4]["input_ids"]
    (tensor([3, 4, 5, 6]), tensor([103, 104, 105, 106]))
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["TOKEN_DTYPES", "TokenBlocks"]

TOKEN_DTYPES = ("uint16", "uint32", "int32", "int64")
_PREAD = hasattr(os, "pread")
"""Token dtypes accepted: ``uint16`` (vocabularies below 65,536, e.g. GPT-2's), ``uint32``
(larger vocabularies, e.g. Llama 3's), and the signed ``int32`` / ``int64`` some tools write."""


@dataclass(frozen=True)
class _Segment:
    """One token file: where it is, how to read it, and which global items it holds."""

    path: str
    domain: int
    dtype: str  # numpy dtype string with byte order, e.g. "<u2"
    offset: int  # bytes before the first token (a .npy header)
    tokens: int
    first: int  # global index of the segment's first block
    blocks: int

    @property
    def size(self) -> int:
        """The file's size in bytes."""
        return self.offset + self.tokens * np.dtype(self.dtype).itemsize


def _dtype_name(dtype: Any, where: str) -> str:
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in TOKEN_DTYPES:
        raise ValueError(
            f"unknown token dtype {dtype!r}{where}; valid dtypes: {', '.join(TOKEN_DTYPES)}. "
            "nanoGPT-style .bin files of GPT-2 tokens are 'uint16'; vocabularies of 65,536 "
            "tokens or more need 'uint32'."
        )
    return name


def _check_block_size(block_size: Any) -> int:
    if isinstance(block_size, bool) or not isinstance(block_size, int | np.integer):
        raise TypeError(
            f"block_size must be a positive int (tokens per block), got {block_size!r} "
            f"({type(block_size).__name__})."
        )
    if block_size < 1:
        raise ValueError(
            f"block_size must be a positive int (tokens per block), got {block_size}. "
            "Use the model's context length, e.g. block_size=1024."
        )
    return int(block_size)


def _domain_paths(name: str, value: Any) -> list[Path]:
    items = [value] if isinstance(value, str | os.PathLike) else value
    if isinstance(items, Sequence) and not isinstance(items, str | bytes):
        items = list(items)
    else:
        raise TypeError(
            f"domain {name!r}: expected a path or a list of paths, got {type(value).__name__} "
            f"{value!r:.80}. Pass e.g. {{{name!r}: 'train.bin'}} or {{{name!r}: ['a.bin', "
            "'b.bin']}."
        )
    if not items:
        raise ValueError(f"domain {name!r} has no files; give it at least one path or drop it.")
    out = []
    for item in items:
        if not isinstance(item, str | os.PathLike):
            raise TypeError(
                f"domain {name!r}: a path must be a str or a Path, got {type(item).__name__} "
                f"{item!r:.80}."
            )
        out.append(Path(item))
    return out


def _inspect(path: Path, name: str, dtype: str | None) -> tuple[str, int, int]:
    """(dtype string, data offset in bytes, number of tokens) of one token file, reading only
    its header."""
    if not path.exists():
        raise FileNotFoundError(
            f"token file {str(path)!r} of domain {name!r} does not exist. Check the path "
            "(relative paths are taken from the current directory)."
        )
    if not path.is_file():
        raise ValueError(
            f"token file {str(path)!r} of domain {name!r} is not a file (a directory?). Give "
            "the path of a .bin or .npy file, or a list of them."
        )
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise ValueError(
                f"token file {str(path)!r} of domain {name!r} cannot be read as .npy ({exc}). "
                "Write it with np.save, or rename a raw token file to .bin."
            ) from None
        where = f" in {str(path)!r} (domain {name!r})"
        if array.ndim != 1:
            raise ValueError(
                f"token file {str(path)!r} of domain {name!r} holds an array of shape "
                f"{array.shape}; a token file is one flat array. Save it flattened: "
                "np.save(path, tokens.reshape(-1))."
            )
        _dtype_name(array.dtype, where)
        offset = int(getattr(array, "offset", 0))
        return array.dtype.str, offset, int(array.shape[0])
    if dtype is None:
        raise ValueError(
            f"token file {str(path)!r} of domain {name!r} is a raw file, which does not record "
            "its dtype: pass dtype='uint16' (nanoGPT's layout, vocabularies below 65,536) or "
            "dtype='uint32', or save it as .npy."
        )
    size = path.stat().st_size
    itemsize = np.dtype(dtype).itemsize
    if size % itemsize:
        raise ValueError(
            f"token file {str(path)!r} of domain {name!r} has {size} bytes, not a multiple of "
            f"{itemsize} ({dtype}): it is truncated or holds another dtype. Check dtype= "
            f"(valid: {', '.join(TOKEN_DTYPES)}) or write the file again."
        )
    return np.dtype(dtype).str, 0, size // itemsize


class TokenBlocks(Dataset[dict[str, torch.Tensor]]):
    """Fixed-length blocks of packed token files, one or more files per domain, memory-mapped.

    Items are numbered domain by domain in the mapping's order, file by file, block by block.
    Item ``i`` is ``{"input_ids": LongTensor}`` of ``block_size + 1`` tokens (``shift=True``) or
    ``block_size`` tokens (``shift=False``); see the module docstring for the layout. Usually
    built through :meth:`reweight.IndexedDataset.from_token_files`, which adds ``"index"`` and
    ``"domain"`` to every item.

    Args:
        files: Domain names mapped to a token file or a list of token files (shards). A
            ``.npy`` file's header gives its dtype and shape (``np.load(mmap_mode="r")``, which
            reads nothing else); any other file is raw tokens of ``dtype``.
        block_size: Tokens per block (the model's context length).
        dtype: Token dtype of the raw files (one of :data:`TOKEN_DTYPES`); required when there
            are raw files. A ``.npy`` file is read with the dtype of its own header.
        shift: Add one token to every block for the shifted targets (``x = t[:-1]``,
            ``y = t[1:]``); False for non-overlapping blocks of exactly ``block_size``.

    Raises:
        TypeError: If ``files`` is not a Mapping of names to paths.
        ValueError: If there are no domains, a dtype is unknown, a raw file's size is not a
            multiple of the dtype's size, or a domain has fewer
            tokens than one block.
        FileNotFoundError: If a file does not exist.

    Example:
        >>> import pathlib, tempfile
        >>> import numpy as np
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "train.bin"
        >>> np.arange(9, dtype=np.uint16).tofile(path)
        >>> blocks = TokenBlocks({"all": path}, block_size=4, dtype="uint16", shift=False)
        >>> len(blocks), blocks[1]["input_ids"], blocks.unused_tokens
        (2, tensor([4, 5, 6, 7]), 1)
    """

    def __init__(
        self,
        files: Mapping[str, Any],
        block_size: int,
        dtype: Any = None,
        shift: bool = True,
    ) -> None:
        if not isinstance(files, Mapping):
            raise TypeError(
                f"files must be a Mapping of domain name -> token file(s), got "
                f"{type(files).__name__}. Pass e.g. {{'web': 'web.bin', 'code': 'code.npy'}}."
            )
        if len(files) == 0:
            raise ValueError(
                "files is empty: give at least one domain, e.g. {'web': 'web.bin'} (one domain "
                "per token file or list of files)."
            )
        self.block_size = _check_block_size(block_size)
        self.shift = bool(shift)
        raw_dtype = None if dtype is None else _dtype_name(dtype, "")
        span = self.block_size + int(self.shift)  # tokens per item
        segments: list[_Segment] = []
        names: list[str] = []
        first = 0
        unused = 0
        all_tokens = 0
        for d, (name, value) in enumerate(files.items()):
            if not isinstance(name, str):
                raise TypeError(
                    f"domain names must be strings, got {name!r} ({type(name).__name__}). Use "
                    "str(name) as the key."
                )
            names.append(name)
            total = 0
            blocks_before = first
            for path in _domain_paths(name, value):
                kind, offset, tokens = _inspect(path, name, raw_dtype)
                blocks = max(0, (tokens - int(self.shift)) // self.block_size)
                covered = blocks * self.block_size + int(self.shift) if blocks else 0
                unused += tokens - covered
                all_tokens += tokens
                if blocks:
                    segments.append(_Segment(str(path), d, kind, offset, tokens, first, blocks))
                first += blocks
                total += tokens
            if first == blocks_before:
                extra = " + 1 for the shifted target" if self.shift else ""
                raise ValueError(
                    f"domain {name!r} has {total} tokens, fewer than one block of {span} "
                    f"(block_size {self.block_size}{extra}) in any of its files. Lower "
                    "block_size, concatenate its files into one, or drop the domain."
                )
        self._segments = segments
        self._names = names
        self._starts = np.asarray([s.first for s in segments], dtype=np.int64)
        self._len = first
        self._unused = unused
        self._tokens = all_tokens
        self._files: list[Any] = [None] * len(segments)  # open files (fds), per process

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_files"] = [None] * len(self._segments)  # each process opens the files itself
        return state

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        """Closes the files this process opened (they are opened again when read)."""
        files = getattr(self, "_files", [])
        for k, handle in enumerate(files):
            if handle is not None:
                files[k] = None
                try:
                    if isinstance(handle, int):
                        os.close(handle)
                    else:
                        handle.close()
                except OSError:  # pragma: no cover
                    pass

    def _open(self, k: int) -> Any:
        seg = self._segments[k]
        name = self._names[seg.domain]
        try:
            if _PREAD:
                handle: Any = os.open(seg.path, os.O_RDONLY)
                size = os.fstat(handle).st_size
            else:  # pragma: no cover - platforms without os.pread (Windows)
                handle = open(seg.path, "rb")  # noqa: SIM115 - kept open between reads
                size = os.fstat(handle.fileno()).st_size
        except FileNotFoundError:
            raise FileNotFoundError(
                f"token file {seg.path!r} (domain {name!r}) was removed after the dataset was "
                "built; restore it or build the dataset again."
            ) from None
        if size != seg.size:
            if isinstance(handle, int):
                os.close(handle)
            else:  # pragma: no cover
                handle.close()
            raise ValueError(
                f"token file {seg.path!r} (domain {name!r}) changed after the dataset was built: "
                f"it had {seg.size} bytes and now has {size}. Build the dataset again."
            )
        self._files[k] = handle
        return handle

    def _read(self, k: int, start: int, count: int) -> np.ndarray:
        """``count`` tokens of segment ``k`` from token ``start``, as int64."""
        return self._read_raw(k, start, count).astype(np.int64)

    def _read_raw(self, k: int, start: int, count: int) -> np.ndarray:
        """``count`` tokens of segment ``k`` from token ``start``, in the file's dtype."""
        seg = self._segments[k]
        handle = self._files[k]
        if handle is None:
            handle = self._open(k)
        dtype = np.dtype(seg.dtype)
        nbytes = count * dtype.itemsize
        offset = seg.offset + start * dtype.itemsize
        if isinstance(handle, int):
            data = os.pread(handle, nbytes, offset)
        else:  # pragma: no cover
            handle.seek(offset)
            data = handle.read(nbytes)
        if len(data) != nbytes:
            raise ValueError(
                f"token file {seg.path!r} (domain {self._names[seg.domain]!r}) ended early: "
                f"{len(data)} of {nbytes} bytes at offset {offset}. It changed after the dataset "
                "was built; build the dataset again."
            )
        return np.frombuffer(data, dtype=dtype)

    def token_range(self, chunk_tokens: int = 1 << 20) -> tuple[int, int]:
        """(smallest, largest) token id in the blocks: one pass over the files, ``chunk_tokens``
        at a time (memory stays flat; the time is that of reading every file once). The largest
        id + 1 is the smallest vocabulary a model of these blocks can have.

        Example:
            >>> import pathlib, tempfile
            >>> import numpy as np
            >>> path = pathlib.Path(tempfile.mkdtemp()) / "train.bin"
            >>> np.array([5, 7, 300, 2, 9], dtype=np.uint16).tofile(path)
            >>> TokenBlocks({"all": path}, block_size=2, dtype="uint16").token_range()
            (2, 300)
        """
        chunk_tokens = max(1, int(chunk_tokens))
        low, high = None, None
        for k, seg in enumerate(self._segments):
            used = seg.blocks * self.block_size + int(self.shift)
            for start in range(0, used, chunk_tokens):
                part = self._read_raw(k, start, min(chunk_tokens, used - start))
                low = int(part.min()) if low is None else min(low, int(part.min()))
                high = int(part.max()) if high is None else max(high, int(part.max()))
        assert low is not None and high is not None  # every domain has a block
        return low, high

    @property
    def domains(self) -> np.ndarray:
        """Int64 array of domain ids, one per block (computed from the file sizes)."""
        return np.repeat(
            np.asarray([s.domain for s in self._segments], dtype=np.int64),
            [s.blocks for s in self._segments],
        )

    @property
    def domain_names(self) -> list[str]:
        """Domain names in the mapping's order; ``domain_names[d]`` names id ``d``."""
        return list(self._names)

    @property
    def domain_sizes(self) -> np.ndarray:
        """Int64 array with the number of blocks of each domain."""
        sizes = np.zeros(len(self._names), dtype=np.int64)
        for s in self._segments:
            sizes[s.domain] += s.blocks
        return sizes

    @property
    def num_tokens(self) -> int:
        """Tokens in all the files together."""
        return self._tokens

    @property
    def unused_tokens(self) -> int:
        """Tokens that are in no block: each file's tail shorter than a block (and files too
        short for one block)."""
        return self._unused

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        i = int(index)
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(
                f"block {index} is out of range for {self._len} blocks; indices must lie in "
                f"-{self._len}..{self._len - 1}."
            )
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        start = (i - self._segments[k].first) * self.block_size
        stop = start + self.block_size + int(self.shift)
        tokens = self._read(k, start, stop - start)
        return {"input_ids": torch.from_numpy(tokens)}

    def __repr__(self) -> str:
        return (
            f"TokenBlocks({len(self)} blocks of {self.block_size}"
            f"{' + 1' if self.shift else ''} tokens, domains={self._names})"
        )
