"""Streaming readers for JSONL, Parquet and plain-text files, with bounded memory.

Formats (chosen from the file name unless given explicitly):

- **JSONL** (``.jsonl``, ``.ndjson``, ``.json``; also ``.gz``-compressed): one JSON object per
  line. Blank lines (empty or only whitespace) are skipped; a UTF-8 byte-order mark on the first
  line is ignored.
- **Parquet** (``.parquet``, ``.pq``): one record per row; needs ``pyarrow``
  (``pip install pyarrow`` or ``pip install 'reweight[static]'``), imported only when a Parquet
  file is read.
- **Hugging Face dataset directory** (what ``datasets.Dataset.save_to_disk`` writes; recognised
  by its ``state.json``): one record per row, read as Arrow record batches of the requested
  columns only, memory-mapped; needs ``datasets`` (``pip install 'reweight[hf]'``), imported
  only when such a directory is read. A ``DatasetDict`` directory is refused: name a split's
  directory (``corpus/train``).
- **Plain text** (``.txt``, ``.text``; also ``.gz``-compressed): one document per line, split
  on ``"\\n"`` only (a trailing ``"\\r"`` is removed; no other character ends a line). Blank
  lines are skipped. A text file has a single field, ``"text"``.

A *bad line* is one that cannot give a record: invalid JSON or UTF-8, a JSON value that is not
an object, a missing field, a text field that is not a string (for document readers), or a null
in a Parquet or dataset column. By default it raises :class:`InputError` naming the file and the
line (or row) number; with ``skip_bad_lines=True`` it is skipped, counted, and reported once per
read as a :class:`BadLinesWarning`.

Files are read in blocks (a few MiB, cut at line boundaries) or Arrow record batches, so
memory stays bounded whatever the file size. The block machinery (:func:`iter_chunks`,
:func:`parse_chunk`) lets :mod:`reweight.static` hand whole blocks to worker processes: the
parent reads each byte once and workers do the parsing.
"""

from __future__ import annotations

import gzip
import json
import os
import warnings
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

__all__ = [
    "FORMATS",
    "BadLinesWarning",
    "Chunk",
    "Files",
    "InputError",
    "LineNumbers",
    "ParsedChunk",
    "ReadStats",
    "detect_format",
    "iter_chunks",
    "iter_records",
    "parse_chunk",
]

Format = Literal["auto", "jsonl", "parquet", "text", "hf"]
FORMATS = ("jsonl", "parquet", "text", "hf")
_SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "text",
    ".text": "text",
}
_BLOCK_BYTES = 1 << 20  # line files are cut into ~1 MiB blocks
_PARQUET_ROWS = 1024  # rows per Parquet (or dataset directory) record batch
_ROW_KINDS = ("parquet", "hf")  # chunks of Arrow rows rather than lines
_BOM = b"\xef\xbb\xbf"
_MAX_EXAMPLES = 5  # bad lines quoted in a skip summary
_BLANK = " \t\r\n\x0b\x0c"  # a line of only these is blank (skipped)
_BLANK_BYTES = _BLANK.encode()
_DECODER = json.JSONDecoder()


def _loads(line: str) -> Any:
    """``json.loads(line)``, without its per-call overhead in the common case."""
    try:
        value, end = _DECODER.raw_decode(line)
        if end == len(line) or not line[end:].strip(" \t\r\n"):
            return value
    except json.JSONDecodeError:
        pass
    return json.loads(line)  # leading whitespace, extra data or an error: the canonical path


class InputError(ValueError):
    """Bad input data: the message names the file, the line (or row) and how to fix it."""


class BadLinesWarning(UserWarning):
    """Bad lines were skipped because ``skip_bad_lines=True`` was asked for."""


def _pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow is in the test extra
        raise ImportError(
            "reading Parquet files needs pyarrow; install it with `pip install pyarrow` "
            "(or `pip install 'reweight[static]'`)."
        ) from exc
    return pq


def _datasets() -> Any:
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is in the test extra
        raise ImportError(
            "reading a Hugging Face dataset directory needs the datasets package; install it "
            "with `pip install datasets` (or `pip install 'reweight[hf]'`)."
        ) from exc
    return datasets


def detect_format(path: str | os.PathLike[str], format: str = "auto") -> str:
    """The format of ``path``: ``format`` itself unless it is ``"auto"``, else from the suffix;
    a directory is a Hugging Face dataset directory (``"hf"``).

    Example:
        >>> detect_format("shard-0.jsonl.gz"), detect_format("a.parquet"), detect_format("b.txt")
        ('jsonl', 'parquet', 'text')
        >>> detect_format("notes.md", "text")
        'text'
        >>> import tempfile
        >>> detect_format(tempfile.mkdtemp())
        'hf'
    """
    if format != "auto":
        if format not in FORMATS:
            raise ValueError(
                f"unknown format {format!r}; valid formats: auto, {', '.join(FORMATS)}."
            )
        return format
    p = Path(path)
    if p.is_dir():
        return "hf"
    suffixes = [s.lower() for s in p.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
        if suffixes and _SUFFIXES.get(suffixes[-1]) == "parquet":
            raise ValueError(f"{str(p)!r}: gzip-compressed Parquet is not supported; unpack it.")
    kind = _SUFFIXES.get(suffixes[-1]) if suffixes else None
    if kind is None:
        known = ", ".join(sorted(_SUFFIXES))
        raise ValueError(
            f"cannot tell the format of {str(p)!r} from its name (known suffixes: {known}, "
            "optionally followed by .gz, or a directory written by datasets' save_to_disk); "
            "give the format explicitly (format=... or --format)."
        )
    return kind


@dataclass(frozen=True)
class Files:
    """Input files holding one document per record, and how to read them.

    Args:
        paths: one path or a sequence of paths, read in the order given.
        text_field: the JSONL key / Parquet or dataset column holding the document text (plain
            text files have only ``"text"``).
        format: ``"auto"`` (from each file's suffix; a directory is a dataset directory),
            ``"jsonl"``, ``"parquet"``, ``"text"`` or ``"hf"`` (a ``save_to_disk`` directory).
        skip_bad_lines: skip (and count) bad lines instead of raising :class:`InputError`.

    Example:
        >>> f = Files(["a.jsonl", "b.parquet"], text_field="body")
        >>> [p.name for p in f.paths], f.text_field
        (['a.jsonl', 'b.parquet'], 'body')
    """

    paths: Any
    text_field: str = "text"
    format: str = "auto"
    skip_bad_lines: bool = False

    def __post_init__(self) -> None:
        raw = self.paths
        items = [raw] if isinstance(raw, (str, os.PathLike)) else list(raw)
        if not items:
            raise ValueError("no input files given; pass at least one path.")
        paths: list[Path] = []
        for item in items:
            if not isinstance(item, (str, os.PathLike)):
                raise TypeError(f"a file path must be a str or a Path, got {item!r}.")
            paths.append(Path(item))
        if not isinstance(self.text_field, str) or not self.text_field:
            raise ValueError(f"text_field must be a non-empty string, got {self.text_field!r}.")
        for p in paths:
            detect_format(p, self.format)  # fails early on an unknown suffix or format
        object.__setattr__(self, "paths", tuple(paths))

    def check_exist(self) -> None:
        """Raises FileNotFoundError naming the first path that is not a readable file (or, for
        the ``"hf"`` format, a directory)."""
        for p in self.paths:
            if detect_format(p, self.format) == "hf":
                if not p.is_dir():
                    what = "is a file" if p.exists() else "does not exist"
                    raise FileNotFoundError(
                        f"dataset directory {str(p)!r} {what}; --format hf reads a directory "
                        "written by datasets' save_to_disk."
                    )
            elif not p.is_file():
                what = "is a directory" if p.is_dir() else "does not exist"
                raise FileNotFoundError(f"input file {str(p)!r} {what}.")


@dataclass(frozen=True)
class Chunk:
    """A block of input handed from the reading process to a parser (possibly another process).

    ``kind`` is ``"jsonl"`` or ``"text"`` (``payload`` is bytes of whole lines, ``start`` the
    1-based number of its first line), ``"parquet"`` or ``"hf"`` (``payload`` a pyarrow
    RecordBatch or Table, ``start`` the 1-based number of its first row) or ``"docs"``
    (``payload`` a list of in-memory documents, ``start`` the 0-based index of the first one).

    A *span* chunk (``span=(begin, end)``, ``payload`` None, ``start`` 0) names a byte range of
    an uncompressed line file instead: the parser reads the lines that start in that range
    itself, so the reading process sends only the range, and line numbers are resolved later
    (:class:`LineNumbers`) from the line counts of the ranges before it.
    """

    path: str
    kind: str
    start: int
    payload: Any
    span: tuple[int, int] | None = None


@dataclass
class ParsedChunk:
    """Records parsed from a :class:`Chunk`, the bad lines skipped, and optionally raw rows.

    For a span chunk, ``bad`` is empty and ``pending`` holds (line index in the chunk, reason,
    hint) of each bad line, to be numbered with :meth:`LineNumbers.resolve`; ``lines`` is the
    number of lines the chunk held.
    """

    records: list[dict[str, Any]]
    bad: list[str]
    raw: list[Any] | None = None
    lines: int = 0
    pending: list[tuple[int, str, str]] = field(default_factory=list)


class LineNumbers:
    """Numbers the lines of span chunks, which arrive in file order, and reports bad lines.

    Example:
        >>> numbers = LineNumbers()
        >>> first = Chunk("d.jsonl", "jsonl", 0, None, span=(0, 100))
        >>> numbers.resolve(first, ParsedChunk([], [], lines=7), skip_bad_lines=True)
        []
        >>> second = Chunk("d.jsonl", "jsonl", 0, None, span=(100, 200))
        >>> parsed = ParsedChunk([], [], lines=3, pending=[(1, "invalid JSON", "Fix it,")])
        >>> numbers.resolve(second, parsed, skip_bad_lines=True)
        ['d.jsonl:9: invalid JSON']
    """

    def __init__(self) -> None:
        self._next: dict[str, int] = {}

    def resolve(self, chunk: Chunk, parsed: ParsedChunk, skip_bad_lines: bool) -> list[str]:
        """Messages of the chunk's bad lines (raising InputError for the first one unless
        ``skip_bad_lines``); advances the line count of the chunk's file."""
        if chunk.span is None:
            return list(parsed.bad)
        first = 1 if chunk.span[0] == 0 else self._next.get(chunk.path, 1)
        self._next[chunk.path] = first + parsed.lines
        return [
            _bad(chunk, first + index, reason, skip_bad_lines, fix)
            for index, reason, fix in parsed.pending
        ]


@dataclass
class ReadStats:
    """Counts of what a read has seen: records, skipped bad lines and a few examples of them.

    Example:
        >>> stats = ReadStats()
        >>> stats.add(ParsedChunk(records=[{"text": "a"}], bad=["x.jsonl:2: invalid JSON"]))
        >>> stats.records, stats.skipped, stats.summary()
        (1, 1, 'skipped 1 bad line(s); first: x.jsonl:2: invalid JSON')
    """

    records: int = 0
    skipped: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, parsed: ParsedChunk) -> None:
        """Counts a parsed chunk."""
        self.records += len(parsed.records)
        self.add_bad(parsed.bad)

    def add_bad(self, bad: Sequence[str]) -> None:
        """Counts skipped bad lines, keeping the first few messages."""
        self.skipped += len(bad)
        room = _MAX_EXAMPLES - len(self.examples)
        if room > 0:
            self.examples.extend(bad[:room])

    def summary(self) -> str:
        """One line describing the skipped lines (empty when nothing was skipped)."""
        if not self.skipped:
            return ""
        return f"skipped {self.skipped} bad line(s); first: " + "; ".join(self.examples)

    def warn(self) -> None:
        """Emits a :class:`BadLinesWarning` when lines were skipped."""
        if self.skipped:
            warnings.warn(self.summary(), BadLinesWarning, stacklevel=3)


def _open_binary(path: Path) -> BinaryIO:
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _read_block(handle: BinaryIO, size: int, path: Path) -> bytes:
    """``handle.read(size)``, turning a damaged gzip stream into an InputError naming the file."""
    try:
        return handle.read(size)
    except EOFError:
        raise InputError(
            f"{str(path)!r} is truncated: its gzip stream ends early (an interrupted download or "
            "copy?). Fetch or compress the file again; `gzip -t FILE` checks it."
        ) from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise InputError(
            f"{str(path)!r} is not a valid gzip file ({exc}). Fetch or compress it again, or "
            "drop the .gz suffix if it is not compressed."
        ) from None


def _line_blocks(path: Path, block_bytes: int) -> Iterator[tuple[int, bytes]]:
    """(first line number, bytes of whole lines) blocks of a line-oriented file."""
    with _open_binary(path) as handle:
        lineno = 1
        pending: list[bytes] = []
        while True:
            data = _read_block(handle, block_bytes, path)
            if not data:
                break
            cut = data.rfind(b"\n")
            if cut < 0:  # no line end yet: keep collecting (a very long line)
                pending.append(data)
                continue
            block = b"".join([*pending, data[: cut + 1]]) if pending else data[: cut + 1]
            pending = [data[cut + 1 :]] if cut + 1 < len(data) else []
            yield lineno, block
            lineno += block.count(b"\n")
        if pending:
            yield lineno, b"".join(pending)


def _check_fields(fields: Sequence[str]) -> tuple[str, ...]:
    if isinstance(fields, str):
        fields = (fields,)
    out = tuple(fields)
    if not out or not all(isinstance(f, str) and f for f in out):
        raise ValueError(f"fields must be non-empty strings, got {fields!r}.")
    return out


def _parquet_error(path: Path, exc: BaseException) -> InputError:
    return InputError(
        f"{str(path)!r} cannot be read as Parquet ({exc}). The file may be truncated or not a "
        "Parquet file: fetch or write it again, or give its real format (--format)."
    )


def _parquet_chunks(
    path: Path, fields: Sequence[str], columns: list[str] | None, parquet_rows: int
) -> Iterator[Chunk]:
    """Record-batch chunks of one Parquet file; a corrupt file raises InputError naming it."""
    pq = _pyarrow_parquet()
    import pyarrow

    errors = (pyarrow.ArrowException, OSError)
    try:
        pfile = pq.ParquetFile(path)
        names = list(pfile.schema_arrow.names)
    except errors as exc:
        raise _parquet_error(path, exc) from None
    missing = [f for f in fields if f not in names]
    if missing:
        raise InputError(
            f"{str(path)!r}: no column(s) {missing}; available columns: {names}. "
            "Choose the text column with text_field=... (--text-field)."
        )
    batches = pfile.iter_batches(batch_size=parquet_rows, columns=columns)
    row = 1
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except errors as exc:
            raise _parquet_error(path, exc) from None
        if batch.num_rows:
            yield Chunk(str(path), "parquet", row, batch)
            row += batch.num_rows


def _hf_chunks(path: Path, fields: Sequence[str], all_columns: bool, rows: int) -> Iterator[Chunk]:
    """Arrow-row chunks of a ``save_to_disk`` directory: only the requested columns, memory-
    mapped, ``rows`` rows at a time (in the dataset's own row order)."""
    if not (path / "state.json").is_file():
        if (path / "dataset_dict.json").is_file():
            splits = sorted(p.name for p in path.iterdir() if (p / "state.json").is_file())
            raise InputError(
                f"{str(path)!r} holds a DatasetDict with splits {splits}; give one split's "
                f"directory, e.g. {str(path / (splits[0] if splits else 'train'))!r}."
            )
        raise InputError(
            f"{str(path)!r} is a directory but not a Hugging Face dataset directory (no "
            "state.json); give files, or a directory written by Dataset.save_to_disk."
        )
    datasets = _datasets()
    try:
        dataset = datasets.load_from_disk(str(path))
    except (OSError, ValueError) as exc:  # FileNotFoundError is an OSError
        raise InputError(
            f"{str(path)!r} cannot be read as a Hugging Face dataset directory ({exc}). Write "
            "it again with Dataset.save_to_disk."
        ) from None
    names = list(dataset.column_names)
    missing = [f for f in fields if f not in names]
    if missing:
        raise InputError(
            f"{str(path)!r}: no column(s) {missing}; available columns: {names}. "
            "Choose the text column with text_field=... (--text-field)."
        )
    if not all_columns:
        dataset = dataset.select_columns(list(fields))
    row = 1
    for table in dataset.with_format("arrow").iter(batch_size=rows):
        if table.num_rows:
            yield Chunk(str(path), "hf", row, table)
            row += table.num_rows


def iter_chunks(
    files: Files,
    fields: Sequence[str],
    *,
    all_columns: bool = False,
    block_bytes: int = _BLOCK_BYTES,
    parquet_rows: int = _PARQUET_ROWS,
    spans: bool = False,
) -> Iterator[Chunk]:
    """Reads ``files`` into :class:`Chunk` blocks (each byte read once, memory bounded).

    Checks up front that Parquet files and dataset directories have the requested columns and
    that plain text files are only asked for ``"text"``. ``all_columns`` reads every Parquet or
    dataset column (to copy whole rows).
    With ``spans``, uncompressed line files are not read here at all: each block is a byte
    range that its parser reads (see :class:`Chunk`).

    Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "d.jsonl"
        >>> _ = path.write_text('{"text": "a"}\\n{"text": "b"}\\n')
        >>> [(c.kind, c.start, c.payload) for c in iter_chunks(Files(path), ["text"])]
        [('jsonl', 1, b'{"text": "a"}\\n{"text": "b"}\\n')]
    """
    fields = _check_fields(fields)
    files.check_exist()
    for path in files.paths:
        kind = detect_format(path, files.format)
        if kind == "text":
            extra = [f for f in fields if f != "text"]
            if extra:
                raise InputError(
                    f"{str(path)!r} is a plain text file, which has only the field 'text' "
                    f"(one document per line); fields {extra} were asked for. Use JSONL or "
                    "Parquet files for records with several fields."
                )
        if kind == "parquet":
            yield from _parquet_chunks(
                path, fields, None if all_columns else list(fields), parquet_rows
            )
        elif kind == "hf":
            yield from _hf_chunks(path, fields, all_columns, parquet_rows)
        elif spans and path.suffix.lower() != ".gz":
            size = path.stat().st_size
            for begin in range(0, size, block_bytes):
                yield Chunk(str(path), kind, 0, None, (begin, min(begin + block_bytes, size)))
        else:
            for lineno, block in _line_blocks(path, block_bytes):
                yield Chunk(str(path), kind, lineno, block)


def _read_span(path: str, begin: int, end: int) -> bytes:
    """The lines that start in bytes [begin, end) of a file (the last one read to its end)."""
    with open(path, "rb") as handle:
        if begin > 0:
            handle.seek(begin - 1)
            data = handle.read(end - begin + 1)
            cut = data.find(b"\n")
            if cut < 0:
                return b""  # no line starts in this range
            data = data[cut + 1 :]
        else:
            data = handle.read(end)
        if data and not data.endswith(b"\n"):
            rest = [data]
            while True:
                piece = handle.read(1 << 16)
                if not piece:
                    break
                cut = piece.find(b"\n")
                if cut >= 0:
                    rest.append(piece[: cut + 1])
                    break
                rest.append(piece)
            data = b"".join(rest)
    return data


def _bad(chunk: Chunk, number: int, reason: str, skip: bool, fix: str) -> str:
    unit = "row" if chunk.kind in _ROW_KINDS else "line"
    where = f"{chunk.path}:{number}" if unit == "line" else f"{chunk.path}: row {number}"
    message = f"{where}: {reason}"
    if not skip:
        hint = " or pass skip_bad_lines=True (--skip-bad-lines) to skip bad lines"
        raise InputError(f"{message}. {fix}{hint}.")
    return message


def parse_chunk(
    chunk: Chunk,
    fields: Sequence[str],
    *,
    require_str: str | None = None,
    skip_bad_lines: bool = False,
    keep_raw: bool = False,
) -> ParsedChunk:
    """Parses a :class:`Chunk` into records holding ``fields``.

    Args:
        chunk: the block to parse.
        fields: keys each record must have (and the only ones returned).
        require_str: a field whose value must be a string (the document text).
        skip_bad_lines: skip bad lines (returned in ``bad``) instead of raising InputError.
        keep_raw: also return, per record, the original line (bytes, JSONL) or a JSON-ready
            dict of the whole row (Parquet, dataset directory, plain text) so the record can be
            copied out.

    Example:
        >>> chunk = Chunk("d.jsonl", "jsonl", 1, b'{"text": "a", "n": 1}\\n\\nnot json\\n')
        >>> parsed = parse_chunk(chunk, ["text"], skip_bad_lines=True)
        >>> parsed.records, parsed.bad
        ([{'text': 'a'}], ['d.jsonl:3: invalid JSON (Expecting value at column 1)'])
    """
    fields = _check_fields(fields)
    records: list[dict[str, Any]] = []
    bad: list[str] = []
    pending: list[tuple[int, str, str]] = []
    raw: list[Any] | None = [] if keep_raw else None
    skip = skip_bad_lines
    field_fix = "Choose the text field with text_field=... (--text-field), fix the line,"
    line_fix = "Fix or remove the line,"
    deferred = chunk.span is not None

    def flag(number: int, reason: str, fix: str) -> None:
        if deferred:
            pending.append((number, reason, fix))
        else:
            bad.append(_bad(chunk, number, reason, skip, fix))

    if chunk.kind == "docs":
        for offset, doc in enumerate(chunk.payload):
            if not isinstance(doc, str):
                raise TypeError(
                    f"document {chunk.start + offset} is {type(doc).__name__} {doc!r:.60}, not "
                    "a string; give documents as strings (or files as Path objects / Files)."
                )
            records.append({fields[0]: doc})
            if raw is not None:
                raw.append({fields[0]: doc})
        return ParsedChunk(records, bad, raw)

    if chunk.kind in _ROW_KINDS:
        batch = chunk.payload
        columns = {f: batch.column(f).to_pylist() for f in fields}
        rows = batch.to_pylist() if keep_raw else None
        for i in range(batch.num_rows):
            number = chunk.start + i
            record = {f: columns[f][i] for f in fields}
            nulls = [f for f in fields if record[f] is None]
            if nulls:
                flag(number, f"null value in column(s) {nulls}", line_fix)
                continue
            if require_str is not None and not isinstance(record[require_str], str):
                reason = (
                    f"column {require_str!r} is {type(record[require_str]).__name__}, not a string"
                )
                flag(number, reason, field_fix)
                continue
            records.append(record)
            if raw is not None and rows is not None:
                raw.append(rows[i])
        return ParsedChunk(records, bad, raw)

    if chunk.span is not None:
        payload: bytes = _read_span(chunk.path, *chunk.span)
        first_of_file = chunk.span[0] == 0
    else:
        payload = chunk.payload
        first_of_file = chunk.start == 1
    try:  # one decode per block; a block with invalid UTF-8 is decoded line by line
        lines: list[Any] = payload.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        lines = payload.split(b"\n")
    raw_lines = payload.split(b"\n") if keep_raw and chunk.kind == "jsonl" else None
    if lines and not lines[-1]:
        lines.pop()  # the block ends with a line end
    is_text = chunk.kind == "text"
    for i, item in enumerate(lines):
        number = chunk.start + i  # the index in the chunk for a span chunk
        if isinstance(item, bytes):
            try:
                line = item.decode("utf-8")
            except UnicodeDecodeError as exc:
                if item.strip(_BLANK_BYTES):
                    flag(number, f"invalid UTF-8 ({exc.reason})", line_fix)
                continue
        else:
            line = item
        if i == 0 and first_of_file and line.startswith("\ufeff"):
            line = line[1:]
        if line.endswith("\r"):
            line = line[:-1]
        if not line.strip(_BLANK):
            continue
        if is_text:
            records.append({"text": line})
            if raw is not None:
                raw.append({"text": line})
            continue
        try:
            value = _loads(line)
        except json.JSONDecodeError as exc:
            flag(number, f"invalid JSON ({exc.msg} at column {exc.colno})", line_fix)
            continue
        if not isinstance(value, dict):
            flag(number, f"a JSON {type(value).__name__}, not an object", line_fix)
            continue
        missing = [f for f in fields if f not in value]
        if missing:
            keys = list(value)[:20]
            flag(number, f"missing field(s) {missing}; the record has keys {keys}", field_fix)
            continue
        if require_str is not None and not isinstance(value[require_str], str):
            got = type(value[require_str]).__name__
            flag(number, f"field {require_str!r} is a JSON {got}, not a string", field_fix)
            continue
        records.append({f: value[f] for f in fields})
        if raw is not None and raw_lines is not None:
            original = raw_lines[i]
            if i == 0 and first_of_file and original.startswith(_BOM):
                original = original[len(_BOM) :]
            raw.append(original[:-1] if original.endswith(b"\r") else original)
    return ParsedChunk(records, bad, raw, lines=len(lines), pending=pending)


def iter_records(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    fields: Sequence[str] = ("text",),
    *,
    skip_bad_lines: bool = False,
    format: Format = "auto",
) -> Iterator[dict[str, Any]]:
    """Streams records with ``fields`` from JSONL, Parquet, plain-text files and dataset
    directories, in order.

    Memory stays bounded (files are read in blocks). Values are returned as stored (a JSON
    number stays an int); plain text files give ``{"text": line}``. Bad lines raise
    :class:`InputError` naming the file and line, unless ``skip_bad_lines`` is set, in which case
    they are skipped and summarised in one :class:`BadLinesWarning` at the end.

    Args:
        paths: one path or several, read in the order given.
        fields: keys every record must have; only these are returned.
        skip_bad_lines: skip bad lines (invalid JSON, not an object, missing field, null in
            Parquet or a dataset column) instead of raising.
        format: ``"auto"`` (by suffix; a directory is a dataset directory), ``"jsonl"``,
            ``"parquet"``, ``"text"`` or ``"hf"``.

    Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "d.jsonl"
        >>> _ = path.write_text('{"text": "hi", "domain": "web", "id": 1}\\n')
        >>> list(iter_records(path, ["text", "domain"]))
        [{'text': 'hi', 'domain': 'web'}]
    """
    fields = _check_fields(fields)
    files = Files(paths, text_field=fields[0], format=format, skip_bad_lines=skip_bad_lines)
    stats = ReadStats()
    for chunk in iter_chunks(files, fields):
        parsed = parse_chunk(chunk, fields, skip_bad_lines=skip_bad_lines)
        stats.add(parsed)
        yield from parsed.records
    stats.warn()
