"""``python -m reweight.static`` and reweight.static.io on Hugging Face dataset directories
(``Dataset.save_to_disk``), built from tiny in-memory datasets."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")

from reweight.static.cli import main  # noqa: E402
from reweight.static.io import Files, InputError, detect_format, iter_records  # noqa: E402

WORDS_A = ["protein", "cell", "gene", "enzyme", "membrane", "the", "of"]
WORDS_B = ["league", "goal", "striker", "referee", "season", "the", "of"]


def _docs(n: int, words: list[str], seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(words, k=rng.randint(5, 20))) for _ in range(n)]


@pytest.fixture
def corpus(tmp_path: Path) -> dict[str, Path]:
    docs = _docs(60, WORDS_A, 1) + _docs(140, WORDS_B, 2)
    random.Random(3).shuffle(docs)
    raw = datasets.Dataset.from_dict(
        {"id": list(range(len(docs))), "body": docs, "source": ["web"] * len(docs)}
    )
    raw.save_to_disk(str(tmp_path / "raw_ds"))
    with open(tmp_path / "raw.jsonl", "w") as handle:
        for i, doc in enumerate(docs):
            handle.write(json.dumps({"id": i, "body": doc, "source": "web"}) + "\n")
    target = tmp_path / "target.jsonl"
    target.write_text("".join(json.dumps({"body": d}) + "\n" for d in _docs(40, WORDS_A, 4)))
    return {"dir": tmp_path, "raw_ds": tmp_path / "raw_ds", "raw": tmp_path / "raw.jsonl",
            "target": target}  # fmt: skip


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_iter_records_reads_the_rows_in_order(corpus: dict[str, Path]) -> None:
    assert detect_format(corpus["raw_ds"]) == "hf"
    rows = list(iter_records(corpus["raw_ds"], ["body", "id"]))
    from_jsonl = list(iter_records(corpus["raw"], ["body", "id"]))
    assert rows == from_jsonl and len(rows) == 200


def test_cli_on_a_dataset_directory_matches_jsonl(
    corpus: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    d, ds_dir, target = corpus["dir"], str(corpus["raw_ds"]), str(corpus["target"])
    common = ["--text-field", "body", "--no-progress"]
    code, out, err = _run(
        ["fit", "--raw", ds_dir, "--target", target, "--out", str(d / "model"),
         "--workers", "1", *common],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "fitted on 200 raw and 40 target documents" in out
    for raw, name in ((ds_dir, "from_ds.npy"), (str(corpus["raw"]), "from_jsonl.npy")):
        code, out, err = _run(
            ["weights", "--model", str(d / "model"), "--raw", raw, "--out", str(d / name),
             "--workers", "2", "--min-tokens", "0", *common],
            capsys,
        )  # fmt: skip
        assert code == 0, err
    logw = np.load(d / "from_ds.npy")
    np.testing.assert_array_equal(logw, np.load(d / "from_jsonl.npy"))
    code, out, err = _run(
        ["resample", "--weights", str(d / "from_ds.npy"), "--raw", ds_dir, "-k", "30",
         "--top-k", "--out", str(d / "selected.jsonl"), *common],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    selected = [json.loads(line) for line in (d / "selected.jsonl").read_text().splitlines()]
    assert len(selected) == 30 and set(selected[0]) == {"id", "body", "source"}  # whole rows
    chosen = sorted(int(i) for i in np.argsort(-logw, kind="stable")[:30])
    assert [row["id"] for row in selected] == chosen
    code, out, err = _run(
        ["kl", "--model", str(d / "model"), "--selected", str(d / "selected.jsonl"), "--json",
         "--workers", "1", *common],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["kl_reduction"] > 0


def test_missing_column_lists_the_columns(
    corpus: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(
        ["fit", "--raw", str(corpus["raw_ds"]), "--target", str(corpus["target"]),
         "--target-text-field", "body", "--out", str(corpus["dir"] / "m"), "--workers", "1",
         "--no-progress"],
        capsys,
    )  # fmt: skip
    assert code == 2
    assert "no column(s) ['text']; available columns: ['id', 'body', 'source']" in err
    with pytest.raises(InputError, match=r"no column\(s\) \['text'\]; available columns: \['id'"):
        list(iter_records(corpus["raw_ds"]))


def test_null_text_is_a_bad_row(tmp_path: Path) -> None:
    ds = datasets.Dataset.from_dict({"text": ["a", None, "c"]})
    ds.save_to_disk(str(tmp_path / "d"))
    with pytest.raises(InputError, match=r"/d: row 2: null value in column\(s\) \['text'\]"):
        list(iter_records(tmp_path / "d"))
    with pytest.warns(UserWarning, match="skipped 1 bad line"):
        assert [r["text"] for r in iter_records(tmp_path / "d", skip_bad_lines=True)] == ["a", "c"]


def test_dataset_dict_and_plain_directories(tmp_path: Path) -> None:
    dd = datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"text": ["a"]}),
        test=datasets.Dataset.from_dict({"text": ["b"]}),
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(InputError, match=r"DatasetDict with splits \['test', 'train'\]"):
        list(iter_records(tmp_path / "dd"))
    assert [r["text"] for r in iter_records(tmp_path / "dd" / "train")] == ["a"]
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError, match="not a Hugging Face dataset directory"):
        list(iter_records(tmp_path / "plain"))
    (tmp_path / "f.jsonl").write_text('{"text": "a"}\n')
    with pytest.raises(FileNotFoundError, match="is a file; --format hf reads a directory"):
        list(iter_records(tmp_path / "f.jsonl", format="hf"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Files(tmp_path / "nope", format="hf").check_exist()
