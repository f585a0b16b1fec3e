"""Domain ids of a Hugging Face ``datasets.Dataset``, read from one column through Arrow.

Used by :meth:`reweight.IndexedDataset.from_hf`. The domain column is read once, as an Arrow
array (no Python loop over rows, no other column decoded); string domains are dictionary-encoded
in Arrow, ``ClassLabel`` columns keep their label names. ``datasets`` is an optional dependency
(``pip install 'reweight[hf]'``), imported only when one of these functions runs.

Example:
    >>> from datasets import Dataset
    >>> from reweight.hf_data import domain_ids
    >>> ds = Dataset.from_dict({"text": ["a", "b", "c"], "source": ["web", "code", "web"]})
    >>> ids, names = domain_ids(ds, "source")
    >>> ids.tolist(), names
    ([1, 0, 1], ['code', 'web'])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["check_hf_dataset", "domain_ids", "is_dataset_dict"]


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _datasets() -> Any:
    try:
        import datasets
    except ImportError as exc:
        raise ImportError(
            "IndexedDataset.from_hf needs the datasets package; install it with "
            "`pip install 'reweight[hf]'` (or `pip install datasets`)."
        ) from exc
    return datasets


def is_dataset_dict(value: Any) -> bool:
    """Whether ``value`` is a ``datasets.DatasetDict`` (or its streaming kind), i.e. splits
    rather than one dataset per domain.

    Example:
        >>> from datasets import Dataset, DatasetDict
        >>> is_dataset_dict(DatasetDict(train=Dataset.from_dict({"x": [1]}))), is_dataset_dict({})
        (True, False)
    """
    datasets = _datasets()
    return isinstance(value, datasets.DatasetDict | datasets.IterableDatasetDict)


def check_hf_dataset(dataset: Any, what: str = "dataset") -> None:
    """Raises a TypeError that says what to do when ``dataset`` is not a map-style
    ``datasets.Dataset`` (a ``DatasetDict``, a streaming ``IterableDataset``, something else).

    Example:
        >>> from datasets import Dataset, DatasetDict
        >>> check_hf_dataset(Dataset.from_dict({"x": [1]}))
        >>> check_hf_dataset(DatasetDict(train=Dataset.from_dict({"x": [1]})))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        TypeError: dataset is a DatasetDict with splits ['train']; pick one split, e.g. ...
    """
    datasets = _datasets()
    kind = type(dataset).__name__
    if isinstance(dataset, datasets.DatasetDict | datasets.IterableDatasetDict):
        splits = list(dataset.keys())
        raise TypeError(
            f"{what} is a {kind} with splits {splits}; pick one split, e.g. "
            f"{what}[{splits[0] if splits else 'train'!r}]."
        )
    if isinstance(dataset, datasets.IterableDataset):
        raise TypeError(
            f"{what} is a streaming datasets.IterableDataset, which cannot be read by index; "
            "the sampler draws items by index. Load it without streaming=True (it is "
            "memory-mapped from disk, not loaded into memory)."
        )
    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(
            f"{what} must be a datasets.Dataset, got {kind}. For other datasets use "
            "IndexedDataset(dataset, domains=...)."
        )


def domain_ids(
    dataset: Any, column: str, domain_names: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str] | None]:
    """Domain ids (int64, one per row) and names from one column of a ``datasets.Dataset``.

    Args:
        dataset: A map-style ``datasets.Dataset`` (any row order: shuffled or selected views
            are read in their own order).
        column: The domain column: strings, a ``ClassLabel``, or non-negative integers.
        domain_names: Names in id order. For strings, the ids follow this order (default: the
            sorted unique names); for a ``ClassLabel`` the default is its label names.

    Returns:
        ``(ids, names)``; ``names`` is None for plain integer ids without ``domain_names``.

    Raises:
        ValueError: If the column is missing (the message lists the columns), holds nulls,
            negative ids, or names not in ``domain_names``.
        TypeError: If the column holds neither strings nor integers.

    Example:
        >>> from datasets import ClassLabel, Dataset, Features, Value
        >>> features = Features({"x": Value("int32"), "lang": ClassLabel(names=["en", "fr"])})
        >>> ds = Dataset.from_dict({"x": [1, 2, 3], "lang": [1, 0, 1]}, features=features)
        >>> ids, names = domain_ids(ds, "lang")
        >>> ids.tolist(), names
        ([1, 0, 1], ['en', 'fr'])
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    check_hf_dataset(dataset)
    columns = list(dataset.column_names)
    if column not in columns:
        raise ValueError(
            f"the dataset has no domain column {column!r}; its columns are {columns}. Pass "
            "domain_column=<one of those>, add the column (dataset.add_column(...) or "
            "dataset.map(...)), or give one dataset per domain: "
            "IndexedDataset.from_hf({'web': web_ds, 'code': code_ds})."
        )
    feature = dataset.features[column]
    # One column, in the dataset's own row order (an indices mapping is applied), as Arrow.
    table = dataset.select_columns([column]).with_format("arrow")[:]
    array = table.column(column).combine_chunks()
    if array.null_count:
        first = int(pc.index(pc.is_null(array), True).as_py())
        raise ValueError(
            f"domain column {column!r} has {array.null_count} null value(s), the first at row "
            f"{first}. Give every row a domain (dataset.map or dataset.filter)."
        )
    where = f"domain column {column!r}"
    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        encoded = pc.dictionary_encode(array)
        found = [str(v) for v in encoded.dictionary.to_pylist()]
        codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        names = sorted(found) if domain_names is None else list(domain_names)
        lookup = {name: d for d, name in enumerate(names)}
        unknown = sorted(set(found) - lookup.keys())
        if unknown:
            raise ValueError(
                f"{where} holds domain names {_short(unknown)} that are not in domain_names "
                f"{_short(names)}. Add them to domain_names, or leave domain_names=None to use "
                "the sorted unique names."
            )
        remap = np.asarray([lookup[name] for name in found], dtype=np.int64)
        return remap[codes], names
    if not pa.types.is_integer(array.type):
        raise TypeError(
            f"{where} must hold strings, a ClassLabel or integer ids, got Arrow type "
            f"{array.type} (feature {_short(feature)}). Map it to one of those first."
        )
    ids = array.to_numpy(zero_copy_only=False).astype(np.int64)
    if ids.size and ids.min() < 0:
        first = int(np.argmin(ids))
        raise ValueError(
            f"{where} holds the negative id {int(ids[first])} at row {first}. Number the domains "
            "0..K-1 (a ClassLabel's -1 means 'no label': filter those rows out)."
        )
    names_out = list(domain_names) if domain_names is not None else None
    if names_out is None and type(feature).__name__ == "ClassLabel":
        names_out = list(feature.names)
    return ids, names_out
