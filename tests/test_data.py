"""Tests for reweight.data: IndexedDataset and require_index."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

import reweight.data
from reweight.data import IndexedDataset, require_index


def test_doctests() -> None:
    result = doctest.testmod(reweight.data, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


# ---------------------------------------------------------------- no domains


def test_no_domains_non_mapping_items() -> None:
    ds = IndexedDataset([10, 20, 30])
    assert len(ds) == 3
    assert ds[1] == {"data": 20, "index": 1}
    assert ds.domains is None
    assert ds.domain_names == ["all"]
    assert ds.num_domains == 1
    assert ds.domain_sizes.tolist() == [3]


def test_no_domains_single_name_renames_the_domain() -> None:
    ds = IndexedDataset([1, 2], domain_names=["train"])
    assert ds.domain_names == ["train"]
    with pytest.raises(ValueError, match="no domains were given"):
        IndexedDataset([1, 2], domain_names=["a", "b"])


def test_mapping_items_are_shallow_copied() -> None:
    inner = [1, 2]
    rows = [{"x": inner}, {"x": [3]}]
    ds = IndexedDataset(rows)
    item = ds[0]
    assert item == {"x": [1, 2], "index": 0}
    assert "index" not in rows[0]  # the source is not mutated
    assert item["x"] is inner  # shallow


def test_negative_and_numpy_indices() -> None:
    ds = IndexedDataset([10, 20, 30])
    assert ds[-1] == {"data": 30, "index": 2}
    assert ds[np.int64(1)]["index"] == 1
    assert ds[torch.tensor(0)]["index"] == 0
    with pytest.raises(IndexError, match="out of range"):
        ds[3]
    with pytest.raises(ValueError, match="out of range"):  # ItemIndexError is both
        ds[-4]
    assert [row["index"] for row in ds] == [0, 1, 2]  # iteration stops at the end
    with pytest.raises(TypeError, match="must be integers"):
        ds[1.0]  # type: ignore[index]


def test_existing_index_field() -> None:
    ok = IndexedDataset([{"index": 0}, {"index": np.int64(1)}])
    assert ok[1]["index"] == 1
    bad = IndexedDataset([{"index": 5}])
    with pytest.raises(ValueError, match=r"already has an 'index' field .*\(5\)"):
        bad[0]


# ---------------------------------------------------------------- array domains


@pytest.mark.parametrize(
    "domains",
    [
        [0, 1, 1, 0],
        np.array([0, 1, 1, 0], dtype=np.int32),
        np.array([0, 1, 1, 0], dtype=np.uint8),
        torch.tensor([0, 1, 1, 0]),
        (0, 1, 1, 0),
    ],
)
def test_array_domains(domains: object) -> None:
    ds = IndexedDataset(list("abcd"), domains=domains)
    assert ds.domains is not None
    assert ds.domains.dtype == np.int64
    assert ds.domains.tolist() == [0, 1, 1, 0]
    assert ds.domain_names == ["0", "1"]
    assert ds.num_domains == 2
    assert ds[2] == {"data": "c", "index": 2, "domain": 1}
    assert isinstance(ds[2]["domain"], int)
    assert ds.domain_sizes.tolist() == [2, 2]


def test_domains_array_is_copied_and_read_only() -> None:
    src = np.array([0, 1])
    ds = IndexedDataset([1, 2], domains=src)
    src[0] = 1
    assert ds.domains is not None
    assert ds.domains.tolist() == [0, 1]
    with pytest.raises(ValueError):
        ds.domains[0] = 1


def test_more_names_than_ids_gives_empty_domains() -> None:
    ds = IndexedDataset([1, 2], domains=[0, 0], domain_names=["a", "b", "c"])
    assert ds.num_domains == 3
    assert ds.domain_sizes.tolist() == [2, 0, 0]


def test_default_collate_gives_int64_tensors() -> None:
    ds = IndexedDataset(TensorDataset(torch.arange(6.0)), domains=[0, 0, 1, 1, 2, 2])
    batch = next(iter(DataLoader(ds, batch_size=6)))
    assert batch["index"].dtype == torch.int64
    assert batch["domain"].dtype == torch.int64
    assert batch["index"].tolist() == list(range(6))
    assert batch["domain"].tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(require_index(batch), torch.arange(6))


def test_existing_domain_field_conflict() -> None:
    same = IndexedDataset([{"domain": 1}], domains=[1])
    assert same[0]["domain"] == 1
    ds = IndexedDataset([{"domain": 0}], domains=[1])
    with pytest.raises(ValueError, match="already has a 'domain' field"):
        ds[0]


@pytest.mark.parametrize(
    ("domains", "names", "exc", "pattern"),
    [
        ([0, 1], None, ValueError, "length 2 but the dataset has 3 items"),
        ([0, -1, 1], None, ValueError, "non-negative, got -1 at item 1"),
        ([0, 2, 1], ["a", "b"], ValueError, "2 names .* at least 3 names"),
        ([[0, 1, 2]], None, ValueError, r"1-D .* shape \(1, 3\)"),
        ([0.0, 1.0, 1.0], None, TypeError, "integer ids, got dtype float64"),
        ([True, False, True], None, TypeError, "integer ids, got dtype bool"),
        ({"a": [0, 1, 2]}, None, TypeError, "IndexedDataset.concat"),
        ([0, 1, 1], ["a", "a"], ValueError, "unique"),
        ([0, 1, 1], "ab", TypeError, "sequence of strings"),
        ([0, 1, 1], [0, 1], TypeError, "must all be strings"),
    ],
)
def test_array_domain_validation(
    domains: object, names: object, exc: type[Exception], pattern: str
) -> None:
    with pytest.raises(exc, match=pattern):
        IndexedDataset([1, 2, 3], domains=domains, domain_names=names)  # type: ignore[arg-type]


def test_empty_and_non_map_datasets() -> None:
    with pytest.raises(ValueError, match="empty dataset"):
        IndexedDataset([])

    class Stream(IterableDataset[int]):
        def __iter__(self):  # type: ignore[no-untyped-def]
            yield 1

    with pytest.raises(TypeError, match="map-style"):
        IndexedDataset(Stream())
    with pytest.raises(TypeError, match="map-style"):
        IndexedDataset(iter([1, 2]))


# ---------------------------------------------------------------- key domains


def test_string_key_with_names_sorted() -> None:
    rows = [{"src": "web"}, {"src": "code"}, {"src": "books"}, {"src": "web"}]
    ds = IndexedDataset(rows, domains="src")
    assert ds.domain_names == ["books", "code", "web"]
    assert ds.domains is not None
    assert ds.domains.tolist() == [2, 1, 0, 2]
    assert ds[0] == {"src": "web", "index": 0, "domain": 2}


def test_string_key_with_given_name_order() -> None:
    rows = [{"src": "web"}, {"src": "code"}]
    ds = IndexedDataset(rows, domains="src", domain_names=["web", "code", "math"])
    assert ds.domains is not None
    assert ds.domains.tolist() == [0, 1]
    assert ds.num_domains == 3
    with pytest.raises(ValueError, match=r"\['web'\] that are not in domain_names"):
        IndexedDataset(rows, domains="src", domain_names=["code"])


def test_key_named_domain_is_replaced_by_its_id() -> None:
    ds = IndexedDataset([{"domain": "b"}, {"domain": "a"}], domains="domain")
    assert ds[0]["domain"] == 1
    assert ds.domain_names == ["a", "b"]


def test_int_key_domains() -> None:
    rows = [{"d": 1}, {"d": np.int64(0)}, {"d": torch.tensor(2)}]
    ds = IndexedDataset(rows, domains="d")
    assert ds.domains is not None
    assert ds.domains.tolist() == [1, 0, 2]
    assert ds.domain_names == ["0", "1", "2"]
    with pytest.raises(ValueError, match="at least 3 names"):
        IndexedDataset(rows, domains="d", domain_names=["x", "y"])


def test_key_scans_dataset_once() -> None:
    calls: list[int] = []

    class Counting(torch.utils.data.Dataset[dict[str, int]]):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> dict[str, int]:
            calls.append(i)
            return {"d": i % 2}

    IndexedDataset(Counting(), domains="d")
    assert calls == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("rows", "exc", "pattern"),
    [
        ([{"d": 0}, 5], TypeError, "item 1 is a int, not a Mapping"),
        ([{"d": 0}, {"e": 1}], ValueError, r"item 1 has no 'd' key \(keys: \['e'\]\)"),
        ([{"d": 0}, {"d": "x"}], TypeError, "mixes integer ids and string names"),
        ([{"d": 0}, {"d": 1.5}], TypeError, "got 1.5 \\(float\\) at item 1"),
        ([{"d": True}], TypeError, "got True \\(bool\\) at item 0"),
        ([{"d": 0}, {"d": -2}], ValueError, "non-negative, got item\\['d'\\] = -2 at item 1"),
    ],
)
def test_key_validation(rows: list[object], exc: type[Exception], pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        IndexedDataset(rows, domains="d")


# ---------------------------------------------------------------- concat


def test_concat() -> None:
    web = TensorDataset(torch.arange(3))
    code = [{"text": "x"}, {"text": "y"}]
    ds = IndexedDataset.concat({"web": web, "code": code, "math": [7]})
    assert len(ds) == 6
    assert ds.domain_names == ["web", "code", "math"]
    assert ds.domains is not None
    assert ds.domains.tolist() == [0, 0, 0, 1, 1, 2]
    assert ds.domain_sizes.tolist() == [3, 2, 1]
    assert ds[4] == {"text": "y", "index": 4, "domain": 1}
    assert ds[5] == {"data": 7, "index": 5, "domain": 2}
    assert torch.equal(ds[1]["data"][0], torch.tensor(1))


@pytest.mark.parametrize(
    ("arg", "exc", "pattern"),
    [
        ({}, ValueError, "got no datasets"),
        ({"web": [1], "code": []}, ValueError, "domain 'code' is empty"),
        ([[1], [2]], TypeError, "expects a Mapping"),
        ({0: [1]}, TypeError, "string names"),
        ({"web": iter([1])}, TypeError, "domain 'web'.*map-style"),
    ],
)
def test_concat_validation(arg: object, exc: type[Exception], pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        IndexedDataset.concat(arg)  # type: ignore[arg-type]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=6))
def test_concat_ids_are_contiguous(sizes: list[int]) -> None:
    parts = {f"d{k}": list(range(n)) for k, n in enumerate(sizes)}
    ds = IndexedDataset.concat(parts)
    assert ds.domains is not None
    assert ds.domain_sizes.tolist() == sizes
    assert np.all(np.diff(ds.domains) >= 0)
    for i in range(len(ds)):
        assert ds[i]["index"] == i
        assert ds[i]["domain"] == ds.domains[i]


# ---------------------------------------------------------------- require_index


@pytest.mark.parametrize(
    "raw",
    [torch.tensor([3, 1, 2]), torch.tensor([3, 1, 2], dtype=torch.int32), [3, 1, 2], (3, 1, 2)],
)
def test_require_index_returns_1d_int64(raw: object) -> None:
    idx = require_index({"index": raw})
    assert idx.dtype == torch.int64
    assert idx.tolist() == [3, 1, 2]


def test_require_index_scalar_becomes_1d() -> None:
    assert require_index({"index": torch.tensor(7)}).tolist() == [7]


def test_require_index_errors() -> None:
    hint = r"wrap your dataset in reweight\.IndexedDataset\(dataset\) so every sample carries"
    with pytest.raises(ValueError, match=r"the batch has no 'index' field .*" + hint):
        require_index({"x": torch.zeros(2)})
    with pytest.raises(ValueError, match=r"the batch has no 'index' field \(got a tuple\)"):
        require_index((torch.zeros(2), torch.zeros(2)))
    with pytest.raises(ValueError, match=r"must hold integers, got dtype torch\.float32"):
        require_index({"index": torch.tensor([1.0])})
    with pytest.raises(ValueError, match=r"must be 1-D .* shape \(2, 2\)"):
        require_index({"index": torch.zeros(2, 2, dtype=torch.int64)})
    with pytest.raises(ValueError, match="could not be read as integers"):
        require_index({"index": ["a", "b"]})
