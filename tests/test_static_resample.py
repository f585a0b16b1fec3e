"""Tests for importance_resample (Gumbel top-k) and write_selected."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats

import reweight.static.resample as resample_module
from reweight.static import Files, InputError, importance_resample, write_selected
from reweight.static.io import BadLinesWarning


def test_k1_inclusion_frequencies_are_proportional_to_w() -> None:
    w = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    logw = np.log(w)
    trials = 20_000
    picks = np.array([importance_resample(logw, 1, seed=s)[0] for s in range(trials)])
    observed = np.bincount(picks, minlength=w.size)
    expected = trials * w / w.sum()
    _, p_value = stats.chisquare(observed, expected)
    assert p_value > 1e-3, (observed, expected)
    np.testing.assert_allclose(observed / trials, w / w.sum(), atol=0.01)


def test_k2_inclusion_matches_sampling_without_replacement() -> None:
    w = np.array([1.0, 2.0, 4.0, 8.0])
    total = w.sum()
    # P(i among 2 draws without replacement ∝ w): first pick, or second after some j.
    exact = np.array(
        [
            w[i] / total + sum(w[j] / total * w[i] / (total - w[j]) for j in range(4) if j != i)
            for i in range(4)
        ]
    )
    trials = 20_000
    counts = np.zeros(4)
    for s in range(trials):
        counts[importance_resample(np.log(w), 2, seed=s)] += 1
    np.testing.assert_allclose(counts / trials, exact, atol=0.015)
    np.testing.assert_allclose(exact.sum(), 2.0)


def test_seeded_and_deterministic() -> None:
    logw = np.random.default_rng(0).normal(size=1000)
    a = importance_resample(logw, 100, seed=7)
    assert np.array_equal(a, importance_resample(logw, 100, seed=7))
    assert not np.array_equal(a, importance_resample(logw, 100, seed=8))
    assert a.dtype == np.int64 and np.all(np.diff(a) > 0)  # sorted, unique
    state = np.random.get_state()
    importance_resample(logw, 10, seed=1)
    assert np.array_equal(np.random.get_state()[1], state[1])  # global RNG untouched
    top = importance_resample(logw, 100, deterministic=True)
    assert set(top.tolist()) == set(np.argsort(-logw)[:100].tolist())


def test_deterministic_ties_take_lowest_index() -> None:
    logw = np.array([1.0, 3.0, 3.0, 0.0, 3.0, 3.0])
    assert importance_resample(logw, 3, deterministic=True).tolist() == [1, 2, 4]
    assert importance_resample(np.zeros(5), 2, deterministic=True).tolist() == [0, 1]


def test_blocks_give_the_same_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    logw = np.random.default_rng(1).normal(size=5000)
    logw[::7] = 2.5  # ties
    whole = (
        importance_resample(logw, 50, seed=3),
        importance_resample(logw, 50, deterministic=True),
    )
    monkeypatch.setattr(resample_module, "_BLOCK", 64)
    blocked = (
        importance_resample(logw, 50, seed=3),
        importance_resample(logw, 50, deterministic=True),
    )
    assert np.array_equal(whole[0], blocked[0])
    assert np.array_equal(whole[1], blocked[1])


def test_memory_mapped_weights(tmp_path: Path) -> None:
    logw = np.random.default_rng(2).normal(size=3000)
    np.save(tmp_path / "w.npy", logw)
    mapped = np.load(tmp_path / "w.npy", mmap_mode="r")
    assert np.array_equal(
        importance_resample(mapped, 30, seed=0), importance_resample(logw, 30, seed=0)
    )


def test_minus_inf_is_never_selected() -> None:
    logw = np.array([-np.inf, 0.0, -np.inf, 1.0, 0.5])
    for seed in range(50):
        assert set(importance_resample(logw, 3, seed=seed).tolist()) == {1, 3, 4}
    with pytest.raises(ValueError, match="only 3 of 5 items have a finite log weight"):
        importance_resample(logw, 4, seed=0)


def test_validation() -> None:
    with pytest.raises(ValueError, match=r"NaN or \+inf \(first at item 1: nan\)"):
        importance_resample([0.0, np.nan, 1.0], 1, seed=0)
    with pytest.raises(ValueError, match=r"NaN or \+inf \(first at item 2: inf\)"):
        importance_resample([0.0, 1.0, np.inf], 1, deterministic=True)
    with pytest.raises(ValueError, match=r"k must lie in \[1, 3\]"):
        importance_resample([0.0, 1.0, 2.0], 4, seed=0)
    with pytest.raises(ValueError, match=r"k must lie in \[1, 3\]"):
        importance_resample([0.0, 1.0, 2.0], 0, seed=0)
    with pytest.raises(TypeError, match="k must be an int"):
        importance_resample([0.0, 1.0], 1.5, seed=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="k must be an int"):
        importance_resample([0.0, 1.0], True, seed=0)
    with pytest.raises(ValueError, match="give a seed"):
        importance_resample([0.0, 1.0], 1)
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        importance_resample([0.0, 1.0], 1, seed=-1)
    with pytest.raises(ValueError, match="must be 1-D"):
        importance_resample(np.zeros((2, 2)), 1, seed=0)
    with pytest.raises(TypeError, match="must be numbers"):
        importance_resample(np.array(["a", "b"]), 1, seed=0)


def test_write_selected_jsonl_copies_lines_verbatim(tmp_path: Path) -> None:
    src = tmp_path / "raw.jsonl"
    lines = [
        json.dumps({"text": f"doc {i}", "id": i, "x": [i]}, separators=(",", ":"))
        for i in range(10)
    ]
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "sel.jsonl"
    assert write_selected(src, [7, 2, 9], out, expected_count=10) == 3
    assert out.read_text().splitlines() == [lines[2], lines[7], lines[9]]
    assert write_selected(src, [], out) == 0
    assert out.read_text() == ""


def test_write_selected_parquet_text_and_documents(tmp_path: Path) -> None:
    pq_path = tmp_path / "raw.parquet"
    pq.write_table(pa.table({"text": ["a", "b", "c"], "n": [1, 2, 3]}), pq_path)
    out = tmp_path / "sel.jsonl"
    write_selected(pq_path, [0, 2], out)
    assert [json.loads(x) for x in out.read_text().splitlines()] == [
        {"text": "a", "n": 1},
        {"text": "c", "n": 3},
    ]
    txt = tmp_path / "raw.txt"
    txt.write_text("first\n\nsecond ünï\nthird\n")
    write_selected(txt, [1], out)
    assert [json.loads(x) for x in out.read_text().splitlines()] == [{"text": "second ünï"}]
    write_selected(["x", "y"], [1], out)
    assert out.read_text() == '{"text": "y"}\n'


def test_write_selected_counts_documents_like_the_weights(tmp_path: Path) -> None:
    src = tmp_path / "raw.jsonl"
    src.write_text('{"text": "a"}\nbroken\n{"text": "b"}\n\n{"text": "c"}\n')
    out = tmp_path / "sel.jsonl"
    with pytest.raises(InputError, match=r"raw.jsonl:2: invalid JSON"):
        write_selected(src, [0], out)
    assert not out.exists()  # nothing half-written
    with pytest.warns(BadLinesWarning):
        write_selected(Files(src, skip_bad_lines=True), [1, 2], out, expected_count=3)
    assert [json.loads(x)["text"] for x in out.read_text().splitlines()] == ["b", "c"]


def test_write_selected_errors(tmp_path: Path) -> None:
    src = tmp_path / "raw.jsonl"
    src.write_text('{"text": "a"}\n{"text": "b"}\n')
    out = tmp_path / "sel.jsonl"
    with pytest.raises(InputError, match="refers to document 5 but the input has only 2"):
        write_selected(src, [0, 5], out)
    with pytest.raises(InputError, match="the input has 2 documents but the weights cover 3"):
        write_selected(src, [0], out, expected_count=3)
    assert not out.exists()
    with pytest.raises(ValueError, match="duplicates"):
        write_selected(src, [1, 1], out)
    with pytest.raises(ValueError, match="must be >= 0"):
        write_selected(src, [-1], out)
    with pytest.raises(ValueError, match="1-D array of ints"):
        write_selected(src, [0.5], out)
    assert list(tmp_path.iterdir()) == [src]  # no temporary files left behind


def test_resample_end_to_end_selects_heavy_items() -> None:
    logw = np.concatenate([np.zeros(900), np.full(100, 5.0)])
    chosen = importance_resample(logw, 100, seed=0)
    heavy = np.count_nonzero(chosen >= 900)
    # E[heavy] is about 100 · e^5 / (e^5 + 9) ≈ 94 for the first pick, fewer later.
    assert heavy > 60
    assert np.unique(chosen).size == 100
