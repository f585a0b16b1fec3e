"""A corpus from the user's own text: JSON-lines or Parquet files (``data=jsonl`` /
``data=parquet``), or a Hugging Face dataset saved on disk (``data=hf``). Every format becomes
``(text, domain)`` pairs and then a corpus the same way (:func:`corpus_from_pairs`)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from recipes.data.corpus import Corpus
from recipes.data.documents import check_cap, check_seq_len, short

__all__ = ["corpus_from_pairs", "load_hf_corpus", "load_user_corpus"]


def load_user_corpus(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    text_field: str = "text",
    domain_field: str | None = "domain",
    seq_len: int = 256,
    max_docs_per_domain: int | None = None,
) -> Corpus:
    """A corpus from JSON-lines or Parquet files with a text field and a domain field.

    Records are read with :func:`reweight.static.io.iter_records` (files in the given order,
    bad lines are errors). Each domain's texts are joined by a blank line and cut into
    ``seq_len``-byte documents; domains are sorted by name.

    Args:
        paths: One path or a sequence of ``.jsonl`` / ``.parquet`` paths.
        text_field: The field holding each record's text (a string).
        domain_field: The field holding its domain (a string or an integer, used as a name);
            None puts every record in one domain ``"all"``.
        seq_len: Bytes per document.
        max_docs_per_domain: Keep at most this many documents per domain, spread evenly.

    Raises:
        TypeError: If a text is not a string or a domain is not a string or an integer.
        ValueError: If there are no records or a domain has too little text for 2 documents.

    Example:
        >>> import json, tempfile, pathlib
        >>> from recipes.data import load_user_corpus
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.jsonl"
        >>> rows = [{"text": "spam " * 20, "domain": "food"}, {"text": "ni " * 9, "domain": "x"}]
        >>> _ = path.write_text("\\n".join(json.dumps(r) for r in rows))
        >>> load_user_corpus([path], seq_len=8).domain_sizes
        {'food': 12, 'x': 3}
    """
    from reweight.static.io import iter_records

    seq_len = check_seq_len(seq_len)
    cap = check_cap(max_docs_per_domain)
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    path_list = [Path(p) for p in paths]
    if not path_list:
        raise ValueError("paths is empty; pass one or more .jsonl or .parquet files.")
    fields = (text_field,) if domain_field is None else (text_field, domain_field)
    records = iter_records(path_list, fields=fields, skip_bad_lines=False)
    pairs = (
        (record[text_field], "all" if domain_field is None else record[domain_field])
        for record in records
    )
    return corpus_from_pairs(
        pairs,
        text_field=text_field,
        domain_field=domain_field,
        seq_len=seq_len,
        max_docs_per_domain=cap,
        source={"source": "user", "paths": [str(p) for p in path_list]},
    )


def corpus_from_pairs(
    pairs: Iterable[tuple[Any, Any]],
    *,
    text_field: str,
    domain_field: str | None,
    seq_len: int,
    max_docs_per_domain: int | None,
    source: Mapping[str, Any],
) -> Corpus:
    """A corpus from ``(text, domain name)`` pairs: texts checked, grouped by domain (domains
    sorted by name), joined and cut into ``seq_len``-byte documents; ``source`` (where the
    records came from) heads the manifest. Shared by every user format.

    Example:
        >>> corpus_from_pairs([("ab" * 8, "x"), ("cd" * 8, 3)], text_field="text",
        ...     domain_field="domain", seq_len=8, max_docs_per_domain=None, source={}).domain_sizes
        {'3': 2, 'x': 2}
    """
    streams: dict[str, list[str]] = {}
    for i, (text, value) in enumerate(pairs):
        if not isinstance(text, str):
            raise TypeError(
                f"record {i} has a {text_field!r} of type {type(text).__name__} "
                f"({short(text)}); it must be a string. Fix the data or choose another text "
                "field."
            )
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise TypeError(
                f"record {i} has a {domain_field!r} of type {type(value).__name__} "
                f"({short(value)}); it must be a string or an integer domain name."
            )
        streams.setdefault(str(value), []).append(text)
    if not streams:
        where = ", ".join(f"{k}={v}" for k, v in source.items() if k != "source")
        raise ValueError(
            f"no records in {where or 'the data'}; pass data with at least one record holding "
            f"a {text_field!r} text."
        )
    corpus = Corpus.from_texts(
        {name: streams[name] for name in sorted(streams)},
        seq_len=seq_len,
        max_docs_per_domain=max_docs_per_domain,
    )
    manifest = {
        **source,
        "text_field": text_field,
        "domain_field": domain_field,
        "seq_len": seq_len,
        "max_docs_per_domain": max_docs_per_domain,
        "records": {name: len(texts) for name, texts in sorted(streams.items())},
    }
    return Corpus(corpus.tokens, corpus.domains, corpus.domain_names, manifest=manifest)


def load_hf_corpus(
    path: str | os.PathLike[str],
    *,
    split: str | None = None,
    text_column: str = "text",
    domain_column: str | None = "domain",
    seq_len: int = 256,
    max_docs_per_domain: int | None = None,
) -> Corpus:
    """A corpus from a Hugging Face dataset saved on disk (``Dataset.save_to_disk`` or
    ``DatasetDict.save_to_disk``), read with ``datasets.load_from_disk`` (memory-mapped; nothing
    is downloaded). Texts become documents as in :func:`load_user_corpus`.

    Domains: each row's ``domain_column`` (strings, a ``ClassLabel``'s label names, or integers
    used as names; read through Arrow by :func:`reweight.hf_data.domain_ids`); None puts every
    row in one domain ``"all"``. A ``DatasetDict``: ``split`` picks the split to read; without
    it every split is a domain (its rows must then have no ``domain_column``, which would be
    ambiguous).

    Raises:
        FileNotFoundError: If ``path`` is not a directory.
        ValueError: If it is not a saved dataset, a split or column is missing (the message
            lists those present), or a domain has too little text for 2 documents.
        TypeError: If the text column does not hold strings.

    Example:
        >>> import pathlib, tempfile
        >>> from datasets import Dataset
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "ds"
        >>> rows = {"text": ["spam " * 20, "ni " * 9], "domain": ["food", "x"]}
        >>> Dataset.from_dict(rows).save_to_disk(path)
        >>> load_hf_corpus(path, seq_len=8).domain_sizes
        {'food': 12, 'x': 3}
    """
    from datasets import load_from_disk

    seq_len = check_seq_len(seq_len)
    cap = check_cap(max_docs_per_domain)
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(
            f"path {str(root)!r} is not a directory; pass the directory that "
            "Dataset.save_to_disk (or DatasetDict.save_to_disk) wrote (nothing is downloaded)."
        )
    try:
        loaded = load_from_disk(str(root))
    except FileNotFoundError as exc:
        raise ValueError(
            f"path {str(root)!r} is not a saved dataset ({exc}); write one with "
            "dataset.save_to_disk(path), e.g. after datasets.load_dataset(...)."
        ) from None
    parts = _hf_parts(loaded, str(root), split, domain_column)
    pairs = (
        pair for part, name in parts for pair in _hf_pairs(part, text_column, domain_column, name)
    )
    return corpus_from_pairs(
        pairs,
        text_field=text_column,
        domain_field=domain_column if parts[0][1] is None else "split",
        seq_len=seq_len,
        max_docs_per_domain=cap,
        source={"source": "hf", "path": str(root), "split": split},
    )


def _hf_parts(
    loaded: Any, where: str, split: str | None, domain_column: str | None
) -> list[tuple[Any, str | None]]:
    """The datasets to read, each with its domain: a fixed name (a split that is a domain) or
    None (the rows' ``domain_column``, or "all" without one)."""
    from reweight.hf_data import check_hf_dataset, is_dataset_dict

    if is_dataset_dict(loaded):
        splits = list(loaded)
        if split is None:
            if domain_column is not None and any(
                domain_column in loaded[s].column_names for s in splits
            ):
                raise ValueError(
                    f"the DatasetDict at {where!r} has splits {splits} and a domain column "
                    f"{domain_column!r}: set split to one of the splits to train on it with "
                    "its domain column, or domain_column=null to make every split a domain."
                )
            return [(loaded[s], str(s)) for s in splits]
        if split not in splits:
            raise ValueError(
                f"the DatasetDict at {where!r} has no split {split!r}; its splits are "
                f"{splits}. Set split to one of those (or null: every split a domain)."
            )
        dataset = loaded[split]
    else:
        if split is not None:
            raise ValueError(
                f"{where!r} holds one Dataset, not a DatasetDict with splits; drop split={split!r}."
            )
        check_hf_dataset(loaded, f"the dataset at {where!r}")
        dataset = loaded
    if domain_column is None:
        return [(dataset, "all")]
    if domain_column not in dataset.column_names:
        raise ValueError(
            f"the dataset at {where!r} has no domain column {domain_column!r}; its columns are "
            f"{list(dataset.column_names)}. Set domain_column to one of those, or null (one "
            "domain 'all')."
        )
    return [(dataset, None)]


def _hf_pairs(
    dataset: Any, text_column: str, domain_column: str | None, name: str | None
) -> Iterator[tuple[Any, Any]]:
    """``(text, domain name)`` of every row: the domain is ``name``, or (None) the row's
    ``domain_column``."""
    from reweight.hf_data import domain_ids

    columns = list(dataset.column_names)
    if text_column not in columns:
        tokenized = (
            " It has 'input_ids': pre-tokenized ids are not text for the byte model; write each "
            "domain's ids to a token file and train with data=tokens."
            if "input_ids" in columns
            else ""
        )
        raise ValueError(
            f"the dataset has no text column {text_column!r}; its columns are {columns}. Set "
            f"text_column to one of those.{tokenized}"
        )
    feature = dataset.features[text_column]
    if getattr(feature, "dtype", None) not in ("string", "large_string"):
        raise TypeError(
            f"text column {text_column!r} holds {feature}, not strings; set text_column to a "
            "column of text."
        )
    table = dataset.select_columns([text_column]).with_format("arrow")[:]
    texts = table.column(text_column).to_pylist()
    if name is not None or domain_column is None:
        return ((text, name if name is not None else "all") for text in texts)
    ids, names = domain_ids(dataset, domain_column)
    labels = names if names is not None else [str(d) for d in range(int(ids.max()) + 1)]
    return ((text, labels[d]) for text, d in zip(texts, ids.tolist(), strict=True))
