"""Tests for IndexedDataset.from_hf and reweight.hf_data (tiny in-memory datasets only)."""

from __future__ import annotations

import doctest
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

datasets = pytest.importorskip("datasets")

import reweight.hf_data  # noqa: E402
from reweight import IndexedDataset  # noqa: E402
from reweight.hf_data import domain_ids  # noqa: E402

Dataset = datasets.Dataset


def test_doctests() -> None:
    result = doctest.testmod(reweight.hf_data)
    assert result.attempted > 0
    assert result.failed == 0


def _rows() -> Dataset:
    return Dataset.from_dict(
        {
            "text": ["a", "b", "c", "d", "e"],
            "source": ["web", "code", "web", "math", "code"],
            "n": [1, 2, 3, 4, 5],
        }
    )


def test_string_column_sorted_names() -> None:
    ds = IndexedDataset.from_hf(_rows(), domain_column="source")
    assert ds.domain_names == ["code", "math", "web"]
    assert ds.domains.tolist() == [2, 0, 2, 1, 0]  # type: ignore[union-attr]
    assert ds[3] == {"text": "d", "source": "math", "n": 4, "index": 3, "domain": 1}


def test_string_column_with_given_names_order() -> None:
    ds = IndexedDataset.from_hf(
        _rows(), domain_column="source", domain_names=["web", "code", "math", "books"]
    )
    assert ds.domains.tolist() == [0, 1, 0, 2, 1]  # type: ignore[union-attr]
    assert ds.domain_sizes.tolist() == [2, 2, 1, 0]
    with pytest.raises(ValueError, match=r"\['math'\] that are not in domain_names"):
        IndexedDataset.from_hf(_rows(), domain_column="source", domain_names=["web", "code"])


def test_class_label_and_integer_columns() -> None:
    features = datasets.Features(
        {"x": datasets.Value("int64"), "lang": datasets.ClassLabel(names=["en", "fr", "de"])}
    )
    labelled = Dataset.from_dict({"x": [0, 1, 2, 3], "lang": [2, 0, 0, 1]}, features=features)
    ds = IndexedDataset.from_hf(labelled, domain_column="lang")
    assert ds.domain_names == ["en", "fr", "de"] and ds.domains.tolist() == [2, 0, 0, 1]  # type: ignore[union-attr]
    ints = IndexedDataset.from_hf(_rows(), domain_column="n")
    assert ints.domain_names == ["0", "1", "2", "3", "4", "5"]
    with pytest.raises(ValueError, match="negative id -1 at row 1"):
        IndexedDataset.from_hf(Dataset.from_dict({"d": [0, -1]}), domain_column="d")


def test_row_order_of_a_shuffled_view() -> None:
    shuffled = _rows().shuffle(seed=3)
    ds = IndexedDataset.from_hf(shuffled, domain_column="source")
    names = ds.domain_names
    assert [names[d] for d in ds.domains.tolist()] == shuffled["source"][:]  # type: ignore[union-attr]
    selected = _rows().select([4, 0])
    assert IndexedDataset.from_hf(selected, domain_column="source").domains.tolist() == [0, 1]  # type: ignore[union-attr]


def test_domain_column_named_domain_is_replaced_by_the_id() -> None:
    rows = Dataset.from_dict({"x": [1, 2], "domain": ["b", "a"]})
    ds = IndexedDataset.from_hf(rows, domain_column="domain")
    assert ds[0] == {"x": 1, "domain": 1, "index": 0}


def test_missing_column_names_the_columns() -> None:
    with pytest.raises(ValueError) as info:
        IndexedDataset.from_hf(_rows(), domain_column="src")
    message = str(info.value)
    assert "no domain column 'src'" in message and "['text', 'source', 'n']" in message


def test_nulls_and_unsupported_types() -> None:
    with pytest.raises(ValueError, match=r"1 null value.*row 1"):
        IndexedDataset.from_hf(Dataset.from_dict({"d": ["a", None]}), domain_column="d")
    with pytest.raises(TypeError, match=r"strings, a ClassLabel or integer ids.*double"):
        IndexedDataset.from_hf(Dataset.from_dict({"d": [0.5, 1.0]}), domain_column="d")


def test_dict_of_datasets_and_torch_format() -> None:
    web = Dataset.from_dict({"x": [[1, 2], [3, 4]]}).with_format("torch")
    code = Dataset.from_dict({"x": [[5, 6]]}).with_format("torch")
    ds = IndexedDataset.from_hf({"web": web, "code": code})
    assert ds.domain_names == ["web", "code"] and ds.domains.tolist() == [0, 0, 1]  # type: ignore[union-attr]
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert torch.equal(batch["x"], torch.tensor([[1, 2], [3, 4], [5, 6]]))
    assert batch["domain"].tolist() == [0, 0, 1]
    with pytest.raises(TypeError, match="keys already name the domains"):
        IndexedDataset.from_hf({"web": web}, domain_column="source")


def test_no_domains() -> None:
    ds = IndexedDataset.from_hf(_rows())
    assert ds.domains is None and ds[0]["index"] == 0


def test_wrong_kinds_of_dataset() -> None:
    dd = datasets.DatasetDict(train=_rows())
    with pytest.raises(TypeError, match=r"DatasetDict with splits \['train'\]"):
        IndexedDataset.from_hf(dd, domain_column="source")
    streaming = datasets.IterableDataset.from_generator(lambda: iter([{"x": 1}]))
    with pytest.raises(TypeError, match=r"streaming datasets.IterableDataset.*streaming=True"):
        IndexedDataset.from_hf(streaming)
    with pytest.raises(TypeError, match=r"domain 'web' must be a datasets.Dataset, got list"):
        IndexedDataset.from_hf({"web": [1, 2]})
    with pytest.raises(TypeError, match=r"must be a datasets.Dataset, got list"):
        IndexedDataset.from_hf([{"source": "a"}], domain_column="source")


def test_reads_only_the_domain_column(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _rows()
    seen: list[list[str]] = []
    original = Dataset.select_columns

    def spy(self: Dataset, columns: list[str], *args: object, **kwargs: object) -> Dataset:
        seen.append(list(columns))
        return original(self, columns, *args, **kwargs)

    monkeypatch.setattr(Dataset, "select_columns", spy)
    monkeypatch.setattr(Dataset, "__iter__", lambda self: pytest.fail("iterated over rows"))
    ids, names = domain_ids(rows, "source")
    assert seen == [["source"]] and names == ["code", "math", "web"]
    assert isinstance(ids, np.ndarray) and ids.dtype == np.int64


def test_core_import_does_not_import_datasets() -> None:
    code = (
        "import sys, reweight, reweight.data, reweight.token_data; "
        "from reweight import IndexedDataset; print('datasets' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_subclass_of_dataset_is_accepted() -> None:
    class Mine(Dataset):  # type: ignore[misc, valid-type]
        pass

    rows = _rows()
    mine = Mine(rows.data, info=rows.info)
    assert IndexedDataset.from_hf(mine, domain_column="source").domain_names == [
        "code",
        "math",
        "web",
    ]
