"""Tests for reweight.token_data (packed token files) and IndexedDataset.from_token_files."""

from __future__ import annotations

import doctest
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import reweight.token_data
from reweight import DomainMixing, IndexedDataset, Reweighter
from reweight.token_data import TokenBlocks


def test_doctests() -> None:
    result = doctest.testmod(reweight.token_data)
    assert result.attempted > 0
    assert result.failed == 0


@pytest.fixture
def corpus(tmp_path: Path) -> dict[str, Path]:
    np.arange(0, 41, dtype=np.uint16).tofile(tmp_path / "web.bin")  # 41 tokens
    np.save(tmp_path / "code.npy", np.arange(1000, 1017, dtype=np.uint32))  # 17 tokens
    np.arange(500, 510, dtype=np.uint16).tofile(tmp_path / "math-0.bin")  # 10 tokens
    np.arange(600, 613, dtype=np.uint16).tofile(tmp_path / "math-1.bin")  # 13 tokens
    return {
        "web": tmp_path / "web.bin",
        "code": tmp_path / "code.npy",
        "math0": tmp_path / "math-0.bin",
        "math1": tmp_path / "math-1.bin",
    }


def _files(c: dict[str, Path]) -> dict[str, object]:
    return {"web": c["web"], "code": str(c["code"]), "math": [c["math0"], c["math1"]]}


def test_shifted_blocks_overlap_by_one_token(corpus: dict[str, Path]) -> None:
    blocks = TokenBlocks(_files(corpus), block_size=8, dtype="uint16")
    # web: (41-1)//8 = 5 blocks, code: (17-1)//8 = 2, math: (10-1)//8 + (13-1)//8 = 1 + 1.
    assert blocks.domain_sizes.tolist() == [5, 2, 2]
    assert len(blocks) == 9
    assert blocks.domains.tolist() == [0] * 5 + [1] * 2 + [2] * 2
    web = [blocks[i]["input_ids"] for i in range(5)]
    assert all(t.dtype == torch.int64 and t.shape == (9,) for t in web)
    assert web[0].tolist() == list(range(0, 9))
    assert web[4].tolist() == list(range(32, 41))  # the last token is a target of block 4
    x, y = web[1][:-1], web[1][1:]
    assert x.tolist() == list(range(8, 16)) and y.tolist() == list(range(9, 17))
    assert blocks[5]["input_ids"].tolist() == list(range(1000, 1009))
    assert blocks[6]["input_ids"].tolist() == list(range(1008, 1017))
    assert blocks[7]["input_ids"].tolist() == list(range(500, 509))  # never crosses files
    assert blocks[8]["input_ids"].tolist() == list(range(600, 609))
    assert blocks[-1]["input_ids"].tolist() == blocks[8]["input_ids"].tolist()
    assert blocks.num_tokens == 41 + 17 + 10 + 13
    assert blocks.unused_tokens == 0 + 0 + 1 + 4


def test_unshifted_blocks_do_not_overlap(corpus: dict[str, Path]) -> None:
    blocks = TokenBlocks(_files(corpus), block_size=8, dtype="uint16", shift=False)
    assert blocks.domain_sizes.tolist() == [5, 2, 2]
    got = [blocks[i]["input_ids"].tolist() for i in range(5)]
    assert got == [list(range(8 * j, 8 * j + 8)) for j in range(5)]
    assert blocks.unused_tokens == 1 + 1 + 2 + 5


def test_from_token_files_items_and_domains(corpus: dict[str, Path]) -> None:
    ds = IndexedDataset.from_token_files(_files(corpus), block_size=8, dtype="uint16")
    assert ds.domain_names == ["web", "code", "math"]
    assert ds.domain_sizes.tolist() == [5, 2, 2]
    for i in range(len(ds)):
        item = ds[i]
        assert set(item) == {"input_ids", "index", "domain"}
        assert item["index"] == i and item["domain"] == int(ds.domains[i])  # type: ignore[index]
    batch = next(iter(DataLoader(ds, batch_size=9)))
    assert batch["input_ids"].shape == (9, 9) and batch["input_ids"].dtype == torch.int64
    assert batch["domain"].tolist() == ds.domains.tolist()  # type: ignore[union-attr]


def test_out_of_range(corpus: dict[str, Path]) -> None:
    blocks = TokenBlocks({"web": corpus["web"]}, block_size=8, dtype="uint16")
    with pytest.raises(IndexError, match="out of range for 5 blocks"):
        blocks[5]
    with pytest.raises(IndexError):
        blocks[-6]


def test_pickles_without_the_data_and_opens_lazily(corpus: dict[str, Path]) -> None:
    blocks = TokenBlocks(_files(corpus), block_size=8, dtype="uint16")
    assert blocks._files == [None] * 4  # building reads headers and sizes only
    first = blocks[0]["input_ids"]
    assert blocks._files[0] is not None
    payload = pickle.dumps(blocks)
    assert len(payload) < 2000 and b"\x00\x01\x00\x02" not in payload
    copy = pickle.loads(payload)
    assert copy._files == [None] * 4
    assert torch.equal(copy[0]["input_ids"], first)


def test_dataloader_workers_match_the_main_process(corpus: dict[str, Path]) -> None:
    ds = IndexedDataset.from_token_files(_files(corpus), block_size=8, dtype="uint16")
    order = [8, 0, 5, 3, 7, 1, 6, 2, 4]
    one = list(DataLoader(ds, batch_size=3, sampler=order))
    two = list(DataLoader(ds, batch_size=3, sampler=order, num_workers=2))
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["index"], b["index"])


def test_with_a_reweighter_domain_mass(corpus: dict[str, Path]) -> None:
    ds = IndexedDataset.from_token_files(_files(corpus), block_size=8, dtype="uint16")
    rw = Reweighter.from_dataset(
        ds, sources=[DomainMixing({"web": 0.2, "code": 0.3, "math": 0.5})], num_samples=3000
    )
    drawn = np.asarray(list(iter(rw.sampler)))
    share = np.bincount(ds.domains[drawn], minlength=3) / len(drawn)  # type: ignore[index]
    np.testing.assert_allclose(share, [0.2, 0.3, 0.5], atol=0.04)


# ---------------------------------------------------------------- errors


def test_missing_file_names_domain_and_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"'web'.*does not exist|does not exist.*'web'"):
        TokenBlocks({"web": tmp_path / "nope.bin"}, block_size=4, dtype="uint16")


def test_size_not_a_multiple_of_the_dtype(tmp_path: Path) -> None:
    (tmp_path / "odd.bin").write_bytes(b"\x00" * 11)
    with pytest.raises(ValueError, match=r"11 bytes, not a multiple of 2 \(uint16\)"):
        TokenBlocks({"web": tmp_path / "odd.bin"}, block_size=2, dtype="uint16")
    (tmp_path / "six.bin").write_bytes(b"\x00" * 6)
    with pytest.raises(ValueError, match=r"not a multiple of 4 \(uint32\)"):
        TokenBlocks({"web": tmp_path / "six.bin"}, block_size=1, dtype="uint32")


def test_domain_shorter_than_one_block(corpus: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="'code' has 17 tokens, fewer than one block of 18"):
        TokenBlocks(_files(corpus), block_size=17, dtype="uint16")
    # Without the shift a 17-token file holds one block of 17.
    assert TokenBlocks({"code": corpus["code"]}, block_size=17, shift=False).domain_sizes[0] == 1
    with pytest.raises(ValueError, match=r"domain 'math' has 23 tokens"):
        TokenBlocks({"math": [corpus["math0"], corpus["math1"]]}, block_size=13, dtype="uint16")


def test_unknown_and_missing_dtype(corpus: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match=r"unknown token dtype 'float32'; valid dtypes: uint16"):
        TokenBlocks({"web": corpus["web"]}, block_size=4, dtype="float32")
    with pytest.raises(ValueError, match="unknown token dtype 'uint17'"):
        TokenBlocks({"web": corpus["web"]}, block_size=4, dtype="uint17")
    with pytest.raises(ValueError, match=r"raw file.*pass dtype='uint16'"):
        TokenBlocks({"web": corpus["web"]}, block_size=4)
    assert len(TokenBlocks({"web": corpus["web"]}, block_size=4, dtype=np.uint16)) == 10


def test_empty_and_malformed_mappings(corpus: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="files is empty"):
        IndexedDataset.from_token_files({}, block_size=4, dtype="uint16")
    with pytest.raises(TypeError, match="Mapping of domain name"):
        TokenBlocks([corpus["web"]], block_size=4, dtype="uint16")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="domain 'web' has no files"):
        TokenBlocks({"web": []}, block_size=4, dtype="uint16")
    with pytest.raises(TypeError, match="domain names must be strings"):
        TokenBlocks({0: corpus["web"]}, block_size=4, dtype="uint16")  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="block_size must be a positive int"):
        TokenBlocks({"web": corpus["web"]}, block_size=0, dtype="uint16")
    with pytest.raises(ValueError, match="is not a file"):
        TokenBlocks({"web": tmp_path}, block_size=4, dtype="uint16")


def test_npy_must_be_flat_integers(tmp_path: Path) -> None:
    np.save(tmp_path / "two_d.npy", np.zeros((4, 8), dtype=np.uint16))
    with pytest.raises(ValueError, match=r"shape \(4, 8\).*reshape\(-1\)"):
        TokenBlocks({"web": tmp_path / "two_d.npy"}, block_size=4)
    np.save(tmp_path / "floats.npy", np.zeros(8, dtype=np.float32))
    with pytest.raises(ValueError, match="unknown token dtype"):
        TokenBlocks({"web": tmp_path / "floats.npy"}, block_size=4)


def test_big_endian_npy_and_close(tmp_path: Path) -> None:
    np.save(tmp_path / "be.npy", np.arange(300, 309, dtype=">u2"))
    blocks = TokenBlocks({"be": tmp_path / "be.npy"}, block_size=4)
    assert blocks[1]["input_ids"].tolist() == [304, 305, 306, 307, 308]
    blocks.close()
    assert blocks._files == [None]
    assert blocks[0]["input_ids"].tolist() == [300, 301, 302, 303, 304]  # opened again


def test_a_file_changed_after_building_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "web.bin"
    np.arange(20, dtype=np.uint16).tofile(path)
    blocks = TokenBlocks({"web": path}, block_size=4, dtype="uint16")
    np.arange(12, dtype=np.uint16).tofile(path)
    with pytest.raises(ValueError, match="changed after the dataset was built"):
        blocks[0]


def test_readme_your_data_snippets_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("### Your data") :]
    tokens_code, hf_code = re.findall(r"```python\n(.*?)```", section, re.S)[:2]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    for name in ("web", "code-0", "code-1"):
        np.arange(3000, dtype=np.uint16).tofile(tmp_path / "data" / f"{name}.bin")
    np.save(tmp_path / "data" / "math.npy", np.arange(2100, dtype=np.uint32))
    namespace: dict[str, object] = {}
    exec(compile(tokens_code, "README.md", "exec"), namespace)
    x, y = namespace["x"], namespace["y"]
    assert x.shape == y.shape == (8, 1024)  # type: ignore[attr-defined]
    assert torch.equal(x[:, 1:], y[:, :-1])  # type: ignore[index]
    datasets = pytest.importorskip("datasets")
    rows = {"text": ["a", "b"], "source": ["web", "code"]}
    hf_namespace: dict[str, object] = {
        "IndexedDataset": IndexedDataset,
        "dataset": datasets.Dataset.from_dict(rows),
        "web_dataset": datasets.Dataset.from_dict({"text": ["a"]}),
        "code_dataset": datasets.Dataset.from_dict({"text": ["b"]}),
    }
    exec(compile(hf_code, "README.md", "exec"), hf_namespace)
    assert hf_namespace["ds"].domain_names == ["web", "code"]  # type: ignore[attr-defined]
