"""A corpus from the user's own JSON-lines or Parquet files (``data=jsonl`` / ``data=parquet``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from recipes.data.corpus import Corpus
from recipes.data.documents import check_cap, check_seq_len, short

__all__ = ["load_user_corpus"]


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
    streams: dict[str, list[str]] = {}
    for i, record in enumerate(iter_records(path_list, fields=fields, skip_bad_lines=False)):
        text = record[text_field]
        if not isinstance(text, str):
            raise TypeError(
                f"record {i} has a {text_field!r} of type {type(text).__name__} "
                f"({short(text)}); it must be a string. Fix the data or set text_field."
            )
        if domain_field is None:
            name = "all"
        else:
            value = record[domain_field]
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise TypeError(
                    f"record {i} has a {domain_field!r} of type {type(value).__name__} "
                    f"({short(value)}); it must be a string or an integer domain name."
                )
            name = str(value)
        streams.setdefault(name, []).append(text)
    if not streams:
        raise ValueError(
            f"no records in {[str(p) for p in path_list]}; pass files with at least one "
            f"record holding {list(fields)}."
        )
    corpus = Corpus.from_texts(
        {name: streams[name] for name in sorted(streams)},
        seq_len=seq_len,
        max_docs_per_domain=cap,
    )
    manifest = {
        "source": "user",
        "paths": [str(p) for p in path_list],
        "text_field": text_field,
        "domain_field": domain_field,
        "seq_len": seq_len,
        "max_docs_per_domain": cap,
        "records": {name: len(texts) for name, texts in sorted(streams.items())},
    }
    return Corpus(corpus.tokens, corpus.domains, corpus.domain_names, manifest=manifest)
