"""Datasets whose samples carry their own index (and domain), so batches can be reweighted.

The reweighter keys every weight by item index, so each batch must say which items it holds.
:class:`IndexedDataset` wraps any map-style dataset and adds ``"index"`` (and ``"domain"`` when
domains are known) to every sample; the default collate turns them into int64 tensors.

Example:
    >>> import torch
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> from reweight.data import IndexedDataset
    >>> ds = IndexedDataset(TensorDataset(torch.arange(4.0)), domains=[0, 0, 1, 1])
    >>> batch = next(iter(DataLoader(ds, batch_size=4)))
    >>> batch["index"], batch["domain"]
    (tensor([0, 1, 2, 3]), tensor([0, 0, 1, 1]))
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, IterableDataset

__all__ = ["IndexedDataset", "ItemIndexError", "require_index"]


class ItemIndexError(ValueError, IndexError):
    """An item index outside the dataset: a ValueError like every other bad input of the
    library, and an IndexError so that Python's sequence protocol (``for x in dataset``,
    ``list(dataset)``) still stops at the end (numpy's ``AxisError`` does the same)."""


def _as_int(value: Any) -> int | None:
    """``value`` as a Python int when it is an integer scalar (not bool), else None."""
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | np.integer):
        return int(value)
    if (
        isinstance(value, torch.Tensor)
        and value.numel() == 1
        and not value.is_floating_point()
        and not value.is_complex()
        and value.dtype != torch.bool
    ):
        return int(value.item())
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iu":
        return int(value.item())
    return None


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _dataset_len(dataset: Any) -> int:
    if isinstance(dataset, IterableDataset):
        raise TypeError(
            f"IndexedDataset needs a map-style dataset (with __len__ and __getitem__), got the "
            f"IterableDataset {type(dataset).__name__}. Materialise it into a list or a map-style "
            "Dataset first, because the sampler draws items by index."
        )
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise TypeError(
            f"IndexedDataset needs a map-style dataset with __len__ and __getitem__, got "
            f"{type(dataset).__name__}. Wrap your data in a torch.utils.data.Dataset or a list."
        )
    n = len(dataset)
    if n == 0:
        raise ValueError(
            f"IndexedDataset got an empty dataset ({type(dataset).__name__} of length 0). "
            "Pass a dataset with at least one item."
        )
    return n


def _check_names(names: Any, what: str) -> list[str]:
    if isinstance(names, str) or not isinstance(names, Sequence | np.ndarray):
        raise TypeError(
            f"domain_names must be a sequence of strings, got {type(names).__name__}: "
            f"{_short(names)}. Pass e.g. domain_names=['web', 'code']."
        )
    out = list(names)
    bad = [x for x in out if not isinstance(x, str)]
    if bad:
        raise TypeError(
            f"domain_names must all be strings, got {_short(bad[0])} "
            f"({type(bad[0]).__name__}) in {_short(out)}. Convert them with str()."
        )
    if len(set(out)) != len(out):
        dupes = sorted({x for x in out if out.count(x) > 1})
        raise ValueError(
            f"domain_names must be unique, got duplicates {dupes} in {_short(out)}{what}. "
            "Give each domain its own name."
        )
    return out


class IndexedDataset(Dataset[dict[str, Any]]):
    """A map-style dataset whose samples are dicts carrying ``"index"`` and ``"domain"``.

    Each item of the wrapped dataset becomes a dict:

    - a Mapping item is shallow-copied and gets ``"index"`` (and ``"domain"``) added;
    - any other item ``x`` becomes ``{"data": x, "index": i, "domain": d}``.

    ``"domain"`` is present only when domains are known. An item that already has an ``"index"``
    (or ``"domain"``) key with a different value is an error rather than silently overwritten.

    Args:
        dataset: A map-style dataset (``__len__`` and ``__getitem__``), not empty.
        domains: Where domain ids come from:

            - ``None``: no domains (one implicit domain named ``"all"``; samples have no
              ``"domain"`` key);
            - a 1-D array-like of non-negative integer ids, one per item;
            - a string key: every item must be a Mapping and its domain is ``item[key]``, either
              integer ids or strings. Strings are mapped to ids in the order of
              ``domain_names`` when given, else in sorted order of the unique names. The
              dataset is read once, at construction.
        domain_names: Names of the domains, ``domain_names[d]`` naming id ``d``. Defaults to
            ``["0", "1", ...]`` for integer ids and ``["all"]`` without domains. There may be
            more names than ids in use (those domains are empty), never fewer.

    Raises:
        TypeError: If the dataset is not map-style, ``domains`` has the wrong type, or an item
            is not a Mapping when ``domains`` is a key.
        ValueError: If the dataset is empty, lengths disagree, ids are negative, there are fewer
            names than ids, or a name is unknown.

    Example:
        >>> from reweight.data import IndexedDataset
        >>> rows = [{"text": "a", "src": "web"}, {"text": "b", "src": "code"}]
        >>> ds = IndexedDataset(rows, domains="src")
        >>> ds.domain_names, ds.domains.tolist()
        (['code', 'web'], [1, 0])
        >>> ds[0]
        {'text': 'a', 'src': 'web', 'index': 0, 'domain': 1}
        >>> IndexedDataset([10, 20])[1]
        {'data': 20, 'index': 1}
    """

    def __init__(
        self,
        dataset: Any,
        domains: Any = None,
        domain_names: Sequence[str] | None = None,
    ) -> None:
        n = _dataset_len(dataset)
        self.dataset = dataset
        self._len = n
        self._domain_key: str | None = None
        names = None if domain_names is None else _check_names(domain_names, "")

        ids: np.ndarray | None
        if domains is None:
            ids = None
            if names is None:
                names = ["all"]
            elif len(names) != 1:
                raise ValueError(
                    f"domain_names has {len(names)} names {_short(names)} but no domains were "
                    "given, so there is exactly one domain. Pass domains=... (an id per item or "
                    "a key of each item), or a single name."
                )
        elif isinstance(domains, str):
            self._domain_key = domains
            ids, names = self._scan_key(dataset, n, domains, names)
        else:
            ids = self._ids_from_array(domains, n)
        if ids is not None:
            k = int(ids.max()) + 1
            if names is None:
                names = [str(d) for d in range(k)]
            elif len(names) < k:
                raise ValueError(
                    f"domain_names has {len(names)} names {_short(names)} but the largest domain "
                    f"id is {k - 1}, so at least {k} names are needed. Add the missing names or "
                    "renumber the domains 0..K-1."
                )
            ids.setflags(write=False)
        self._domains = ids
        self._names: list[str] = names if names is not None else ["all"]

    @staticmethod
    def _ids_from_array(domains: Any, n: int) -> np.ndarray:
        if isinstance(domains, Mapping):
            raise TypeError(
                f"domains must be None, a 1-D array-like of integer ids or a string key, got a "
                f"{type(domains).__name__}. To combine named datasets use "
                "IndexedDataset.concat({'name': dataset, ...})."
            )
        if isinstance(domains, torch.Tensor):
            domains = domains.detach().cpu().numpy()
        try:
            arr = np.asarray(domains)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"domains could not be read as an array of integer ids: {_short(domains)} "
                f"({exc}). Pass a list, numpy array or tensor with one id per item."
            ) from exc
        if arr.ndim != 1:
            raise ValueError(
                f"domains must be 1-D with one id per item, got shape {arr.shape}. "
                "Flatten it, e.g. np.asarray(domains).reshape(-1)."
            )
        if arr.dtype.kind not in "iu":
            raise TypeError(
                f"domains must hold integer ids, got dtype {arr.dtype} ({_short(arr[:5].tolist())}"
                "...). Cast it with np.asarray(domains, dtype=np.int64), or pass "
                "domains='<key>' to read string domain names from each item."
            )
        if len(arr) != n:
            raise ValueError(
                f"domains has length {len(arr)} but the dataset has {n} items. "
                "Pass exactly one domain id per item."
            )
        if arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
            raise ValueError(f"domain ids must fit in int64, got max {int(arr.max())}.")
        ids = arr.astype(np.int64, copy=True)
        if ids.min() < 0:
            where = int(np.argmin(ids))
            raise ValueError(
                f"domain ids must be non-negative, got {int(ids[where])} at item {where}. "
                "Number the domains 0..K-1."
            )
        return ids

    @staticmethod
    def _scan_key(
        dataset: Any, n: int, key: str, names: list[str] | None
    ) -> tuple[np.ndarray, list[str] | None]:
        raw: list[Any] = []
        for i in range(n):
            item = dataset[i]
            if not isinstance(item, Mapping):
                raise TypeError(
                    f"domains={key!r} reads the domain from each item, but item {i} is a "
                    f"{type(item).__name__}, not a Mapping: {_short(item)}. Return dicts from "
                    "your dataset, or pass domains as an array of ids."
                )
            if key not in item:
                raise ValueError(
                    f"domains={key!r} but item {i} has no {key!r} key (keys: "
                    f"{sorted(map(str, item.keys()))}). Use one of those keys or pass domains as "
                    "an array of ids."
                )
            raw.append(item[key])

        as_ints = [_as_int(v) for v in raw]
        if all(v is not None for v in as_ints):
            ids = np.asarray(as_ints, dtype=np.int64)
            if ids.min() < 0:
                where = int(np.argmin(ids))
                raise ValueError(
                    f"domain ids must be non-negative, got item[{key!r}] = {int(ids[where])} at "
                    f"item {where}. Number the domains 0..K-1."
                )
            return ids, names
        if all(isinstance(v, str) for v in raw):
            if names is None:
                names = sorted(set(raw))
            lookup = {name: d for d, name in enumerate(names)}
            unknown = sorted(set(raw) - lookup.keys())
            if unknown:
                raise ValueError(
                    f"item[{key!r}] holds domain names {_short(unknown)} that are not in "
                    f"domain_names {_short(names)}. Add them to domain_names, or leave "
                    "domain_names=None to use the sorted unique names."
                )
            return np.asarray([lookup[v] for v in raw], dtype=np.int64), names
        bad = [(i, v) for i, v in enumerate(raw) if as_ints[i] is None and not isinstance(v, str)]
        if bad:
            i, v = bad[0]
            raise TypeError(
                f"item[{key!r}] must be an integer id or a string name, got {_short(v)} "
                f"({type(v).__name__}) at item {i}. Use one kind for every item."
            )
        first_int = next(v for v, a in zip(raw, as_ints, strict=True) if a is not None)
        first_str = next(v for v in raw if isinstance(v, str))
        raise TypeError(
            f"item[{key!r}] mixes integer ids and string names across items (e.g. "
            f"{_short(first_int)} and {_short(first_str)}). Use one kind for every item."
        )

    @classmethod
    def concat(cls, datasets: Mapping[str, Any]) -> IndexedDataset:
        """Concatenate named datasets, one domain per dataset.

        Domain ids are contiguous in the mapping's order (the first dataset is domain 0) and
        the names are the mapping's keys.

        Args:
            datasets: Names mapped to non-empty map-style datasets.

        Returns:
            An :class:`IndexedDataset` over a ``ConcatDataset`` of the given datasets.

        Raises:
            TypeError: If ``datasets`` is not a Mapping or a key is not a string.
            ValueError: If there are no datasets or one of them is empty.

        Example:
            >>> from reweight.data import IndexedDataset
            >>> ds = IndexedDataset.concat({"web": [1, 2, 3], "code": [4]})
            >>> ds.domain_names, ds.domains.tolist()
            (['web', 'code'], [0, 0, 0, 1])
            >>> ds[3]
            {'data': 4, 'index': 3, 'domain': 1}
        """
        if not isinstance(datasets, Mapping):
            raise TypeError(
                f"IndexedDataset.concat expects a Mapping of name -> dataset, got "
                f"{type(datasets).__name__}. Pass e.g. {{'web': web_ds, 'code': code_ds}}."
            )
        if len(datasets) == 0:
            raise ValueError(
                "IndexedDataset.concat got no datasets. Pass at least one, e.g. {'web': web_ds}."
            )
        parts = []
        sizes = []
        for name, ds in datasets.items():
            if not isinstance(name, str):
                raise TypeError(
                    f"IndexedDataset.concat needs string names, got {_short(name)} "
                    f"({type(name).__name__}). Use str(name) as the key."
                )
            try:
                size = _dataset_len(ds)
            except ValueError:
                raise ValueError(
                    f"IndexedDataset.concat: domain {name!r} is empty (length 0). Drop it from "
                    "the mapping or give it at least one item."
                ) from None
            except TypeError as exc:
                raise TypeError(f"IndexedDataset.concat: domain {name!r}: {exc}") from None
            parts.append(ds)
            sizes.append(size)
        ids = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
        return cls(ConcatDataset(parts), domains=ids, domain_names=list(datasets.keys()))

    @classmethod
    def from_token_files(
        cls,
        files: Mapping[str, Any],
        block_size: int,
        dtype: Any = None,
        shift: bool = True,
    ) -> IndexedDataset:
        """Fixed-length blocks of packed token files (nanoGPT / Megatron layout), one domain
        per name, read block by block and never loaded.

        Items are ``{"input_ids": LongTensor, "index": i, "domain": d}``. With ``shift=True``
        (default) ``input_ids`` holds ``block_size + 1`` tokens: train on
        ``x, y = input_ids[:, :-1], input_ids[:, 1:]``. With ``shift=False`` it holds
        ``block_size`` tokens (for models that shift ``labels=input_ids`` themselves). Domain
        ids come from the file sizes alone; see :class:`reweight.token_data.TokenBlocks`.

        Args:
            files: Domain names mapped to a token file or a list of files (shards): ``.npy``
                (dtype from its header) or raw tokens (``.bin``, read with ``dtype``).
            block_size: Tokens per block (the context length).
            dtype: Dtype of the raw files: ``"uint16"``, ``"uint32"``, ``"int32"`` or
                ``"int64"``; required when there are raw files.
            shift: One extra token per block for the shifted targets.

        Returns:
            An :class:`IndexedDataset` over a :class:`~reweight.token_data.TokenBlocks`, which
            DataLoader workers pickle without the data and open lazily.

        Raises:
            FileNotFoundError: If a file is missing.
            ValueError: If ``files`` is empty, the dtype is unknown or missing for a raw file,
                a raw file's size is not a multiple of the dtype's size, or a domain has fewer
                tokens than one block.

        Example:
            >>> import pathlib, tempfile
            >>> import numpy as np
            >>> from reweight.data import IndexedDataset
            >>> root = pathlib.Path(tempfile.mkdtemp())
            >>> np.arange(9, dtype=np.uint16).tofile(root / "web.bin")
            >>> np.save(root / "code.npy", np.arange(100, 105, dtype=np.uint32))
            >>> ds = IndexedDataset.from_token_files(
            ...     {"web": root / "web.bin", "code": root / "code.npy"}, block_size=4,
            ...     dtype="uint16")
            >>> ds.domain_names, ds.domains.tolist()
            (['web', 'code'], [0, 0, 1])
            >>> ds[2]
            {'input_ids': tensor([100, 101, 102, 103, 104]), 'index': 2, 'domain': 1}
        """
        from reweight.token_data import TokenBlocks

        blocks = TokenBlocks(files, block_size=block_size, dtype=dtype, shift=shift)
        return cls(blocks, domains=blocks.domains, domain_names=blocks.domain_names)

    @classmethod
    def from_hf(
        cls,
        dataset: Any,
        domain_column: str | None = None,
        domain_names: Sequence[str] | None = None,
    ) -> IndexedDataset:
        """A Hugging Face ``datasets.Dataset`` with its domains, read from one column at once.

        Either one dataset and the column naming each row's domain (strings, a ``ClassLabel``
        or integer ids; read once through Arrow, no other column decoded), or a mapping of
        domain names to datasets (one domain each, in the mapping's order). Rows come back as
        the dataset gives them (its format, e.g. ``set_format("torch")``, applies), plus
        ``"index"`` and ``"domain"``; a domain column named ``"domain"`` is replaced by the id.
        Needs ``pip install 'reweight[hf]'``.

        Args:
            dataset: A map-style ``datasets.Dataset`` (not streaming), or a Mapping of domain
                names to such datasets.
            domain_column: The column holding each row's domain (for one dataset). None: no
                domains.
            domain_names: Names in id order; strings are numbered in this order (default: the
                sorted unique names; a ``ClassLabel`` gives its label names).

        Returns:
            An :class:`IndexedDataset` over the dataset (or a concatenation of the datasets).

        Raises:
            ValueError: If the domain column is missing (the message lists the columns), holds
                nulls, negative ids or names not in ``domain_names``.
            TypeError: If a dataset is not a map-style ``datasets.Dataset`` (a ``DatasetDict``
                or a streaming dataset, say), or a column is given with a mapping.

        Example:
            >>> from datasets import Dataset
            >>> from reweight.data import IndexedDataset
            >>> ds = Dataset.from_dict({"text": ["a", "b", "c"], "source": ["web", "code", "web"]})
            >>> indexed = IndexedDataset.from_hf(ds, domain_column="source")
            >>> indexed.domain_names, indexed.domains.tolist()
            (['code', 'web'], [1, 0, 1])
            >>> indexed[1]
            {'text': 'b', 'source': 'code', 'index': 1, 'domain': 0}
            >>> web = Dataset.from_dict({"text": ["a", "c"]})
            >>> code = Dataset.from_dict({"text": ["b"]})
            >>> IndexedDataset.from_hf({"web": web, "code": code}).domains.tolist()
            [0, 0, 1]
        """
        from reweight.hf_data import check_hf_dataset, domain_ids, is_dataset_dict

        if isinstance(dataset, Mapping) and not is_dataset_dict(dataset):
            if domain_column is not None or domain_names is not None:
                raise TypeError(
                    "IndexedDataset.from_hf got a mapping of datasets, whose keys already name "
                    f"the domains; drop domain_column={domain_column!r} and "
                    f"domain_names={domain_names!r}, or pass one dataset with a domain column."
                )
            for name, part in dataset.items():
                check_hf_dataset(part, f"domain {name!r}")
            return cls.concat(dataset)
        check_hf_dataset(dataset)
        if domain_column is None:
            return cls(dataset, domain_names=domain_names)
        ids, names = domain_ids(dataset, domain_column, domain_names)
        out = cls(dataset, domains=ids, domain_names=names)
        out._domain_key = domain_column  # a column named "domain" is replaced by the id
        return out

    @property
    def domains(self) -> np.ndarray | None:
        """Read-only int64 array of domain ids, one per item, or None without domains."""
        return self._domains

    @property
    def domain_names(self) -> list[str]:
        """Domain names, ``domain_names[d]`` naming id ``d``; ``["all"]`` without domains."""
        return list(self._names)

    @property
    def num_domains(self) -> int:
        """Number of domains K (1 without domains)."""
        return len(self._names)

    @property
    def domain_sizes(self) -> np.ndarray:
        """Int64 array of length K with the number of items in each domain."""
        if self._domains is None:
            return np.asarray([self._len], dtype=np.int64)
        return np.bincount(self._domains, minlength=self.num_domains).astype(np.int64)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            i = operator.index(index)
        except TypeError:
            raise TypeError(
                f"IndexedDataset indices must be integers, got {type(index).__name__}: "
                f"{_short(index)}."
            ) from None
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise ItemIndexError(
                f"index {index} is out of range for a dataset of {self._len} items; indices must "
                f"lie in -{self._len}..{self._len - 1}."
            )
        item = self.dataset[i]
        domain = None if self._domains is None else int(self._domains[i])
        if isinstance(item, Mapping):
            out = dict(item)
            if "index" in out and _as_int(out["index"]) != i:
                raise ValueError(
                    f"item {i} already has an 'index' field with a different value "
                    f"({_short(out['index'])}). Rename that field in your dataset; "
                    "IndexedDataset uses 'index' for the item's position."
                )
            out["index"] = i
            if domain is not None:
                if (
                    "domain" in out
                    and self._domain_key != "domain"
                    and _as_int(out["domain"]) != domain
                ):
                    raise ValueError(
                        f"item {i} already has a 'domain' field ({_short(out['domain'])}) that "
                        f"differs from its domain id {domain}. Rename that field, or pass "
                        "domains='domain' to read the domain from it."
                    )
                out["domain"] = domain
            return out
        out = {"data": item, "index": i}
        if domain is not None:
            out["domain"] = domain
        return out

    def __repr__(self) -> str:
        return (
            f"IndexedDataset({type(self.dataset).__name__}, len={self._len}, "
            f"domains={self.domain_names})"
        )


def require_index(batch: Any) -> torch.Tensor:
    """Return ``batch["index"]`` as a 1-D int64 tensor, or explain how to get one.

    Args:
        batch: A collated batch; a Mapping with an ``"index"`` field holding integers.

    Returns:
        A 1-D int64 tensor of item indices (on the device the indices were on).

    Raises:
        ValueError: If the batch is not a Mapping, has no ``"index"`` field, or the field is
            not 0-/1-D integers.

    Example:
        >>> import torch
        >>> from reweight.data import require_index
        >>> require_index({"index": torch.tensor([4, 2]), "x": torch.zeros(2)})
        tensor([4, 2])
    """
    if not isinstance(batch, Mapping) or "index" not in batch:
        kind = (
            f"a Mapping with keys {sorted(map(str, batch.keys()))}"
            if isinstance(batch, Mapping)
            else f"a {type(batch).__name__}"
        )
        raise ValueError(
            f"the batch has no 'index' field (got {kind}). The reweighter needs each sample's "
            "index: wrap your dataset in reweight.IndexedDataset(dataset) so every sample "
            "carries its index."
        )
    raw = batch["index"]
    try:
        idx = torch.as_tensor(raw)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(
            f"batch['index'] could not be read as integers: {_short(raw)} ({exc}). It should be "
            "the int64 tensor that IndexedDataset and the default collate produce."
        ) from None
    if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        raise ValueError(
            f"batch['index'] must hold integers, got dtype {idx.dtype}: {_short(raw)}. "
            "Keep the int64 tensor that IndexedDataset and the default collate produce."
        )
    if idx.dim() > 1:
        raise ValueError(
            f"batch['index'] must be 1-D (one index per sample), got shape {tuple(idx.shape)}. "
            "Flatten it with .reshape(-1) if samples were stacked."
        )
    return idx.reshape(-1).to(torch.int64)
