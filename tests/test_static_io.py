"""Tests for reweight.static.io: the streaming JSONL / Parquet / text reader."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reweight.static.io import (
    BadLinesWarning,
    Chunk,
    Files,
    InputError,
    LineNumbers,
    detect_format,
    iter_chunks,
    iter_records,
    parse_chunk,
)


def _jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl_records_in_order_with_only_requested_fields(tmp_path: Path) -> None:
    a = _jsonl(
        tmp_path / "a.jsonl", [{"text": "x", "domain": "web", "id": 1}, {"text": "y", "domain": 2}]
    )
    b = _jsonl(tmp_path / "b.jsonl", [{"text": "z", "domain": "code"}])
    got = list(iter_records([a, b], ["text", "domain"]))
    assert got == [
        {"text": "x", "domain": "web"},
        {"text": "y", "domain": 2},
        {"text": "z", "domain": "code"},
    ]


def test_blank_lines_bom_crlf_and_gzip(tmp_path: Path) -> None:
    raw = b'\xef\xbb\xbf{"text": "a"}\r\n\n   \n{"text": "b"}'  # BOM, CRLF, blanks, no final \n
    (tmp_path / "a.jsonl").write_bytes(raw)
    with gzip.open(tmp_path / "b.jsonl.gz", "wb") as f:
        f.write(b'{"text": "c"}\n')
    got = [r["text"] for r in iter_records([tmp_path / "a.jsonl", tmp_path / "b.jsonl.gz"])]
    assert got == ["a", "b", "c"]


def test_text_files_one_document_per_line(tmp_path: Path) -> None:
    path = tmp_path / "d.txt"
    path.write_bytes("first doc\r\n\nsecond\u2028still second\n  \nthird".encode())
    got = [r["text"] for r in iter_records(path)]
    assert got == ["first doc", "second\u2028still second", "third"]
    with pytest.raises(InputError, match=r"plain text file.*'domain'"):
        list(iter_records(path, ["text", "domain"]))


def test_parquet_records_and_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pq.write_table(
        pa.table({"text": ["a", "b", "c"], "domain": ["x", "y", "x"], "n": [1, 2, 3]}), path
    )
    assert list(iter_records(path, ["text", "domain"])) == [
        {"text": "a", "domain": "x"},
        {"text": "b", "domain": "y"},
        {"text": "c", "domain": "x"},
    ]
    with pytest.raises(
        InputError, match=r"no column\(s\) \['body'\]; available columns: \['text', 'domain', 'n'\]"
    ):
        list(iter_records(path, ["body"]))


def test_parquet_null_is_a_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["a", None, "c"]}), path)
    with pytest.raises(InputError, match=r"d.parquet: row 2: null value"):
        list(iter_records(path))
    with pytest.warns(BadLinesWarning, match="skipped 1 bad line"):
        assert [r["text"] for r in iter_records(path, skip_bad_lines=True)] == ["a", "c"]


def test_parquet_across_record_batches(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    texts = [f"doc {i}" for i in range(2500)]
    pq.write_table(pa.table({"text": texts}), path, row_group_size=700)
    chunks = list(iter_chunks(Files(path), ["text"], parquet_rows=1000))
    assert [c.start for c in chunks][:2] == [1, chunks[0].payload.num_rows + 1]
    assert [r["text"] for r in iter_records(path)] == texts


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a"}\n{"text": \n{"text": "c"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.jsonl:2: invalid JSON .*--skip-bad-lines"):
        list(iter_records(path))
    with pytest.warns(BadLinesWarning, match=r"skipped 1 bad line\(s\); first: .*bad.jsonl:2"):
        assert [r["text"] for r in iter_records(path, skip_bad_lines=True)] == ["a", "c"]


def test_missing_field_names_file_line_and_keys(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [{"text": "a"}, {"body": "b", "id": 7}])
    with pytest.raises(
        InputError,
        match=r"d.jsonl:2: missing field\(s\) \['text'\]; the record has keys \['body', 'id'\]",
    ):
        list(iter_records(path))


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"[1, 2]", "a JSON list, not an object"),
        (b'"just a string"', "a JSON str, not an object"),
        (b'{"text": "\xff\xfe"}', "invalid UTF-8"),
    ],
)
def test_other_bad_lines(tmp_path: Path, line: bytes, reason: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "ok"}\n' + line + b"\n")
    with pytest.raises(InputError, match=f"d.jsonl:2: {reason}"):
        list(iter_records(path))


def test_require_str_rejects_non_string_text() -> None:
    chunk = Chunk("d.jsonl", "jsonl", 10, b'{"text": 5}\n{"text": "ok"}\n')
    with pytest.raises(InputError, match=r"d.jsonl:10: field 'text' is a JSON int, not a string"):
        parse_chunk(chunk, ["text"], require_str="text")
    parsed = parse_chunk(chunk, ["text"], require_str="text", skip_bad_lines=True)
    assert parsed.records == [{"text": "ok"}] and len(parsed.bad) == 1
    assert parse_chunk(chunk, ["text"]).records == [{"text": 5}, {"text": "ok"}]


def test_keep_raw_returns_original_lines() -> None:
    chunk = Chunk("d.jsonl", "jsonl", 1, b'{"text": "a", "x": 1}\r\n{"text": "b"}\n')
    parsed = parse_chunk(chunk, ["text"], keep_raw=True)
    assert parsed.raw == [b'{"text": "a", "x": 1}', b'{"text": "b"}']


def test_long_lines_across_blocks_keep_line_numbers(tmp_path: Path) -> None:
    rows = [{"text": "w" * (i * 37 % 300)} for i in range(200)]
    path = _jsonl(tmp_path / "d.jsonl", rows)
    chunks = list(iter_chunks(Files(path), ["text"], block_bytes=64))
    assert len(chunks) > 10
    records = [r for c in chunks for r in parse_chunk(c, ["text"]).records]
    assert records == rows
    for c in chunks:  # every block holds whole lines and knows its first line number
        assert c.payload.endswith(b"\n")
        assert json.loads(c.payload.split(b"\n")[0]) == rows[c.start - 1]


def test_files_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no input files"):
        Files([])
    with pytest.raises(ValueError, match=r"cannot tell the format of .*notes.md"):
        Files(tmp_path / "notes.md")
    with pytest.raises(ValueError, match="unknown format 'csv'"):
        Files("a.jsonl", format="csv")
    with pytest.raises(TypeError, match="must be a str or a Path"):
        Files([3])  # type: ignore[list-item]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(iter_records(tmp_path / "missing.jsonl"))
    assert detect_format(tmp_path / "notes.md", "jsonl") == "jsonl"


def test_fields_validation(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [{"text": "a"}])
    with pytest.raises(ValueError, match="fields must be non-empty strings"):
        list(iter_records(path, []))
    assert list(iter_records(path, "text")) == [{"text": "a"}]  # a single name is accepted


@pytest.mark.parametrize("block", [1, 2, 7, 64, 1 << 20])
def test_byte_span_chunks_cover_every_line_once(tmp_path: Path, block: int) -> None:
    rows = [{"text": "é" * (i * 13 % 40), "i": i} for i in range(60)]
    body = "".join(
        json.dumps(r, ensure_ascii=False) + ("\r\n" if i % 3 else "\n") for i, r in enumerate(rows)
    )
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode().rstrip(b"\n"))  # BOM, no final line end
    chunks = list(iter_chunks(Files(path), ["text", "i"], block_bytes=block, spans=True))
    assert all(c.payload is None and c.span is not None for c in chunks)
    parsed = [parse_chunk(c, ["text", "i"]) for c in chunks]
    assert [r for p in parsed for r in p.records] == rows
    assert sum(p.lines for p in parsed) == 60


@pytest.mark.parametrize("block", [1, 5, 33, 1 << 20])
def test_byte_span_bad_lines_get_their_file_line_numbers(tmp_path: Path, block: int) -> None:
    lines = [json.dumps({"text": f"doc {i}"}) for i in range(30)]
    lines[11] = "{broken"
    lines[25] = '{"other": 1}'
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n\n")
    numbers = LineNumbers()
    messages: list[str] = []
    records = []
    for chunk in iter_chunks(Files(path), ["text"], block_bytes=block, spans=True):
        parsed = parse_chunk(chunk, ["text"], skip_bad_lines=True)
        messages += numbers.resolve(chunk, parsed, skip_bad_lines=True)
        records += parsed.records
    assert len(records) == 28
    assert [m.split(": ")[0] for m in messages] == [f"{path}:12", f"{path}:26"]
    numbers = LineNumbers()
    with pytest.raises(InputError, match=r"d.jsonl:12: invalid JSON"):
        for chunk in iter_chunks(Files(path), ["text"], block_bytes=block, spans=True):
            numbers.resolve(chunk, parse_chunk(chunk, ["text"]), skip_bad_lines=False)


def test_gzip_files_are_read_here_even_with_spans(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "d.jsonl.gz", "wb") as f:
        f.write(b'{"text": "a"}\n{"text": "b"}\n')
    chunks = list(iter_chunks(Files(tmp_path / "d.jsonl.gz"), ["text"], spans=True))
    assert [c.span for c in chunks] == [None] and chunks[0].start == 1


def test_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    rows = "".join(json.dumps({"text": f"document number {i}"}) + "\n" for i in range(5000))
    data = gzip.compress(rows.encode())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])  # an interrupted download
    with pytest.raises(InputError, match=r"cut\.jsonl\.gz' is truncated"):
        list(iter_records(path))
    path.write_bytes(b"plain text, not gzip\n")
    with pytest.raises(InputError, match=r"cut\.jsonl\.gz' is not a valid gzip file"):
        list(iter_records(path))


def test_corrupt_parquet_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"these bytes are not a parquet file" * 20)
    with pytest.raises(InputError, match=r"broken\.parquet' cannot be read as Parquet"):
        list(iter_records(path))
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(3000)]}), good)
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the footer is gone
    with pytest.raises(InputError, match=r"broken\.parquet' cannot be read as Parquet"):
        list(iter_records(path))
