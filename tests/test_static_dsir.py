"""Tests for reweight.static fit / DSIRModel: the formula, streaming, processes, persistence."""

from __future__ import annotations

import json
import math
import os
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reweight import Reweighter, StaticImportance
from reweight.static import DSIRModel, Files, HashedNgrams, InputError, count_ngrams, fit
from reweight.static._pipeline import map_ordered, worker_pool
from reweight.static.dsir import DEFAULT_MIN_TOKENS
from reweight.static.io import BadLinesWarning, Chunk

EPS = 1e-8
WORDS_A = [
    "the",
    "model",
    "trains",
    "on",
    "data",
    "with",
    "loss",
    "and",
    "gradient",
    "descent",
    "optimizer",
    "rate",
]
WORDS_B = [
    "the",
    "chef",
    "cooks",
    "pasta",
    "with",
    "tomato",
    "sauce",
    "garlic",
    "olive",
    "oil",
    "in",
    "kitchen",
]


def _corpus(n: int, seed: int, words: list[str], length: int = 30) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(words, k=rng.randint(1, length))) for _ in range(n)]


def _write_jsonl(path: Path, docs: list[str], field: str = "text") -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for i, doc in enumerate(docs):
            handle.write(json.dumps({"id": i, field: doc, "meta": {"k": [1, 2]}}) + "\n")
    return path


def _reference_weights(
    raw: list[str], target: list[str], f: HashedNgrams, alpha: float = 0.0
) -> np.ndarray:
    """DSIR in slow pure Python: Counter of bucket ids, probabilities, Σ_b c_b(x) r[b]."""
    b = f.num_buckets

    def bag(doc: str) -> Counter[int]:
        return Counter(f.bucket(s) for s in f.ngram_strings(doc))

    raw_c: Counter[int] = sum((bag(d) for d in raw), Counter())
    tgt_c: Counter[int] = sum((bag(d) for d in target), Counter())
    raw_total, tgt_total = sum(raw_c.values()), sum(tgt_c.values())
    ratio = [
        math.log((tgt_c[k] + alpha) / (tgt_total + alpha * b) + EPS)
        - math.log(raw_c[k] / raw_total + EPS)
        for k in range(b)
    ]
    return np.array([sum(c * ratio[k] for k, c in bag(d).items()) for d in raw])


def test_log_weight_formula_on_a_hand_computed_example() -> None:
    model = fit(raw=["a b", "c d"], target=["a b"])
    f = model.featurizer
    grams = ["a", "a b", "b", "c", "c d", "d", "a a"]
    assert len({f.bucket(g) for g in grams}) == len(grams)  # no collisions in this example
    # raw: six n-grams, 1/6 each; target: a, "a b", b, 1/3 each.
    up = math.log(1 / 3 + EPS) - math.log(1 / 6 + EPS)
    down = math.log(EPS) - math.log(1 / 6 + EPS)
    logw = model.log_importance_weights(["a b", "c d", "a a", "", "zzz"], min_tokens=0)
    np.testing.assert_allclose(logw, [3 * up, 3 * down, 2 * up, 0.0, 0.0], rtol=1e-12, atol=1e-12)
    assert logw.dtype == np.float64
    # Add-one smoothing of the target: p_t = (c + 1) / (3 + B).
    smooth = fit(raw=["a b", "c d"], target=["a b"], target_smoothing=1.0)
    b = f.num_buckets
    up1 = math.log(2 / (3 + b) + EPS) - math.log(1 / 6 + EPS)
    down1 = math.log(1 / (3 + b) + EPS) - math.log(1 / 6 + EPS)
    np.testing.assert_allclose(
        smooth.log_importance_weights(["a b", "c d"], min_tokens=0),
        [3 * up1, 3 * down1],
        rtol=1e-12,
    )


@pytest.mark.parametrize(("buckets", "alpha"), [(50, 0.0), (10_000, 0.0), (97, 0.5)])
def test_weights_match_slow_pure_python_reference(buckets: int, alpha: float) -> None:
    raw = [*_corpus(60, 1, WORDS_A + WORDS_B), "", "Ünïcödé, punctuation!!! ..."]
    target = _corpus(20, 2, WORDS_A)
    f = HashedNgrams(num_buckets=buckets)
    model = fit(raw, target, featurizer=f, target_smoothing=alpha)
    expected = _reference_weights(raw, target, f, alpha)
    got = model.log_importance_weights(raw, min_tokens=0)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-9)
    assert np.array_equal(model.log_importance_weights(raw), got)  # default: no filter
    # The selection default drops documents of fewer than DEFAULT_MIN_TOKENS word tokens.
    words = np.array([sum(t[0].isalnum() or t[0] == "_" for t in f.tokenize(d)) for d in raw])
    default = model.log_importance_weights(raw, min_tokens=DEFAULT_MIN_TOKENS)
    assert np.array_equal(np.isneginf(default), words < DEFAULT_MIN_TOKENS)
    kept = words >= DEFAULT_MIN_TOKENS
    assert np.array_equal(default[kept], got[kept]) and (~kept).sum() >= 2


def test_fit_is_deterministic_and_counts_are_consistent() -> None:
    raw, target = _corpus(100, 3, WORDS_A + WORDS_B), _corpus(30, 4, WORDS_A)
    m1, m2 = fit(raw, target), fit(raw, target)
    assert np.array_equal(m1.log_ratio, m2.log_ratio)
    f = m1.featurizer
    assert m1.raw_counts.tolist() == f.total_counts(raw).tolist()
    assert m1.target_counts.tolist() == f.total_counts(target).tolist()
    assert (m1.raw_docs, m1.target_docs) == (100, 30)
    np.testing.assert_allclose(m1.raw_probs.sum(), 1.0)
    np.testing.assert_allclose(m1.target_probs.sum(), 1.0)
    with pytest.raises(ValueError, match="read-only"):
        m1.log_ratio[0] = 1.0  # reads never mutate the model
    assert "DSIRModel(num_buckets=10000" in repr(m1)


def test_target_like_documents_get_higher_weights() -> None:
    raw = _corpus(200, 5, WORDS_A) + _corpus(200, 6, WORDS_B)
    model = fit(raw, _corpus(100, 7, WORDS_A), target_smoothing=1.0)
    logw = model.log_importance_weights(raw, min_tokens=0)
    assert logw[:200].mean() > logw[200:].mean() + 10


def test_streaming_files_equal_in_memory(tmp_path: Path) -> None:
    raw = _corpus(300, 8, WORDS_A + WORDS_B, length=80)
    target = _corpus(50, 9, WORDS_A)
    raw_jsonl = _write_jsonl(tmp_path / "raw.jsonl", raw[:100], field="body")
    raw_txt = tmp_path / "raw.txt"
    raw_txt.write_text("".join(d + "\n" for d in raw[100:200]), encoding="utf-8")
    raw_parquet = tmp_path / "raw.parquet"
    pq.write_table(pa.table({"body": raw[200:]}), raw_parquet, row_group_size=37)
    tgt = _write_jsonl(tmp_path / "target.jsonl", target)

    memory = fit(raw, target)
    # Text files only have "text"; the JSONL and Parquet files use "body".
    files_model = fit(
        [Files([raw_jsonl, raw_parquet], text_field="body"), raw_txt][0],
        tgt,
        block_bytes=512,
    )
    assert files_model.target_counts.tolist() == memory.target_counts.tolist()
    expected_raw = memory.featurizer.total_counts(raw[:100] + raw[200:])
    assert files_model.raw_counts.tolist() == expected_raw.tolist()

    expected = memory.log_importance_weights(raw)
    got = np.concatenate(
        [
            memory.log_importance_weights(Files(raw_jsonl, text_field="body"), block_bytes=300),
            memory.log_importance_weights(raw_txt, block_bytes=300),
            memory.log_importance_weights(Files(raw_parquet, text_field="body")),
        ]
    )
    assert np.array_equal(got, expected)
    out = tmp_path / "w.npy"
    count = memory.save_log_importance_weights(raw_txt, out, block_bytes=256)
    assert count == 100
    assert np.array_equal(np.load(out, allow_pickle=False), expected[100:200])


def test_several_files_keep_input_order(tmp_path: Path) -> None:
    docs = _corpus(90, 10, WORDS_A + WORDS_B)
    paths = [_write_jsonl(tmp_path / f"{i}.jsonl", docs[i * 30 : (i + 1) * 30]) for i in range(3)]
    model = fit(docs, docs[:10])
    assert np.array_equal(
        model.log_importance_weights(paths, block_bytes=200), model.log_importance_weights(docs)
    )


class PidTask:
    """A picklable block task that reports which process ran it."""

    def __call__(self, chunk: Chunk) -> int:
        return os.getpid()


def test_worker_pool_runs_blocks_in_other_processes_in_order() -> None:
    chunks = [Chunk("<d>", "docs", i, [str(i)]) for i in range(12)]
    with worker_pool(2) as pool:
        assert pool.workers == 2 and pool.executor is not None
        results = list(map_ordered(PidTask(), chunks, pool))
    assert [c.start for c, _ in results] == list(range(12))
    pids = {pid for _, pid in results}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    with worker_pool(1) as pool:
        assert pool.executor is None
        assert {pid for _, pid in map_ordered(PidTask(), chunks, pool)} == {os.getpid()}


def test_multiprocessing_equals_single_process(tmp_path: Path) -> None:
    raw = _corpus(2500, 11, WORDS_A + WORDS_B, length=60)
    path = _write_jsonl(tmp_path / "raw.jsonl", raw)
    target = _write_jsonl(tmp_path / "target.jsonl", _corpus(200, 12, WORDS_A))
    one = fit(path, target, workers=1, block_bytes=4096, max_raw_docs=1234)
    two = fit(path, target, workers=2, block_bytes=4096, max_raw_docs=1234)
    assert one.raw_docs == two.raw_docs == 1234
    assert np.array_equal(one.raw_counts, two.raw_counts)
    assert np.array_equal(one.target_counts, two.target_counts)
    assert one.raw_counts.tolist() == one.featurizer.total_counts(raw[:1234]).tolist()
    w1 = one.log_importance_weights(path, workers=1, block_bytes=4096)
    w2 = one.log_importance_weights(path, workers=2, block_bytes=4096)
    assert np.array_equal(w1, w2)
    w3 = one.log_importance_weights(raw, workers=2)  # in-memory documents, batched to workers
    assert np.array_equal(w1, w3)


def test_max_raw_docs_counts_a_prefix(tmp_path: Path) -> None:
    raw = _corpus(100, 13, WORDS_A + WORDS_B)
    path = _write_jsonl(tmp_path / "raw.jsonl", raw)
    for limit in (1, 37, 100, 500):
        model = fit(path, raw[:5], max_raw_docs=limit, block_bytes=300)
        take = min(limit, 100)
        assert model.raw_docs == take
        assert model.raw_counts.tolist() == model.featurizer.total_counts(raw[:take]).tolist()
    with pytest.raises(ValueError, match="max_docs must be a positive int"):
        fit(path, raw[:5], max_raw_docs=0)


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = fit(
        _corpus(50, 14, WORDS_A + WORDS_B),
        _corpus(10, 15, WORDS_A),
        num_buckets=777,
        ngrams=3,
        target_smoothing=0.25,
        eps=1e-6,
    )
    folder = model.save(tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == [
        "log_ratio.npy",
        "model.json",
        "raw_counts.npy",
        "target_counts.npy",
    ]
    meta = json.loads((folder / "model.json").read_text())
    assert meta["featurizer"]["hash"] == "fnv1a64+fmix64+mulshift32"
    back = DSIRModel.load(folder)
    assert back.featurizer == model.featurizer
    assert (back.target_smoothing, back.eps, back.raw_docs) == (0.25, 1e-6, 50)
    assert np.array_equal(back.log_ratio, model.log_ratio)
    docs = _corpus(20, 16, WORDS_B)
    assert np.array_equal(back.log_importance_weights(docs), model.log_importance_weights(docs))


def test_load_validates_everything(tmp_path: Path) -> None:
    model = fit(["a b", "c d"], ["a b"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DSIRModel.load(tmp_path / "nope")

    def fresh(name: str) -> Path:
        return model.save(tmp_path / name)

    folder = fresh("missing")
    (folder / "raw_counts.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks \['raw_counts.npy'\]"):
        DSIRModel.load(folder)

    folder = fresh("ratio")
    np.save(folder / "log_ratio.npy", np.zeros(10_000))
    with pytest.raises(ValueError, match=r"log_ratio.npy does not match"):
        DSIRModel.load(folder)

    folder = fresh("counts")
    counts = np.load(folder / "raw_counts.npy")
    counts[0] += 5
    np.save(folder / "raw_counts.npy", counts)
    with pytest.raises(ValueError, match=r"raw_ngrams is 6 in model.json but the counts sum to 11"):
        DSIRModel.load(folder)

    folder = fresh("pickle")
    np.save(folder / "target_counts.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="is invalid"):
        DSIRModel.load(folder)

    folder = fresh("version")
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(ValueError, match="has version 99"):
        DSIRModel.load(folder)

    folder = fresh("shape")
    np.save(folder / "raw_counts.npy", np.ones(5, dtype=np.int64))
    with pytest.raises(ValueError, match=r"raw_counts must have shape \(10000,\)"):
        DSIRModel.load(folder)

    folder = fresh("json")
    (folder / "model.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        DSIRModel.load(folder)


def test_empty_target_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"target corpus .* has no documents"):
        fit(["a"], [])
    with pytest.raises(ValueError, match="has 2 document\\(s\\) but no tokens"):
        fit(["a"], ["", "   "])
    empty = tmp_path / "target.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match=r"target corpus \(files \[.*target.jsonl'\]\) has no"):
        fit(["a"], empty)
    with pytest.raises(ValueError, match=r"raw corpus .* has no documents"):
        fit([], ["a"])


def test_missing_text_field_names_file_line_and_keys(tmp_path: Path) -> None:
    path = tmp_path / "raw.jsonl"
    path.write_text('{"text": "a"}\n{"content": "b", "id": 2}\n')
    with pytest.raises(
        InputError, match=r"raw.jsonl:2: missing field\(s\) \['text'\]; .*\['content', 'id'\]"
    ):
        fit(path, ["a"])
    with pytest.warns(BadLinesWarning, match=r"raw.jsonl:1: missing field\(s\) \['content'\]"):
        model = fit(Files(path, text_field="content", skip_bad_lines=True), ["b"])
    assert model.raw_docs == 1


def test_malformed_lines_raise_or_are_skipped_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "raw.jsonl"
    path.write_text('{"text": "a b"}\n{"text": oops}\n{"text": 3}\n{"text": "c d"}\n')
    model = fit(["a b", "c d"], ["a b"])
    with pytest.raises(InputError, match=r"raw.jsonl:2: invalid JSON"):
        model.log_importance_weights(path)
    with pytest.warns(BadLinesWarning, match=r"skipped 2 bad line\(s\).*raw.jsonl:2.*raw.jsonl:3"):
        logw = model.log_importance_weights(path, skip_bad_lines=True)
    assert np.array_equal(logw, model.log_importance_weights(["a b", "c d"]))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="eps must be > 0"):
        fit(["a"], ["a"], eps=0.0)
    with pytest.raises(ValueError, match="target_smoothing must be >= 0"):
        fit(["a"], ["a"], target_smoothing=-1.0)
    with pytest.raises(TypeError, match="document 1 is int"):
        fit(["a", 3], ["a"])
    with pytest.raises(TypeError, match="expected documents"):
        fit(42, ["a"])
    with pytest.raises(ValueError, match="workers must be an int >= 0"):
        fit(["a"], ["a"], workers=-1)
    f = HashedNgrams(num_buckets=10)
    with pytest.raises(ValueError, match=r"raw_counts must have shape \(10,\)"):
        DSIRModel(f, np.ones(3, dtype=np.int64), np.ones(10, dtype=np.int64))
    with pytest.raises(TypeError, match="integer counts"):
        DSIRModel(f, np.ones(10), np.ones(10, dtype=np.int64))
    with pytest.raises(ValueError, match="negative counts"):
        DSIRModel(f, -np.ones(10, dtype=np.int64), np.ones(10, dtype=np.int64))
    with pytest.raises(ValueError, match="raw corpus has no n-grams"):
        DSIRModel(f, np.zeros(10, dtype=np.int64), np.ones(10, dtype=np.int64))


def test_count_ngrams() -> None:
    counts, docs, ngrams = count_ngrams(["a b c", "", "d"], HashedNgrams(num_buckets=16))
    assert (docs, ngrams, int(counts.sum())) == (3, 6, 6)
    counts, docs, _ = count_ngrams(["a", "b", "c"], max_docs=2)
    assert docs == 2 and counts.sum() == 2


@pytest.mark.parametrize("mode", ["sample", "weight"])
def test_log_weights_plug_into_reweighter(tmp_path: Path, mode: str) -> None:
    raw = _corpus(40, 17, WORDS_A) + _corpus(60, 18, WORDS_B)
    model = fit(raw, _corpus(30, 19, WORDS_A), target_smoothing=1.0)
    logw = model.log_importance_weights(raw, min_tokens=0)  # training weights: all finite
    path = tmp_path / "logw.npy"
    model.save_log_importance_weights(raw, path, min_tokens=0)
    for source in (logw, path, str(path)):
        static = StaticImportance(log_weights=source, beta=0.5, clip=30.0, mode=mode)
        rw = Reweighter(len(raw), sources=[static])
        factor = static.factor()
        items = np.arange(len(raw))
        q = rw.sampler.probabilities(items)
        if mode == "sample":  # drawn in proportion to the static factor
            np.testing.assert_allclose(q, factor / factor.sum(), rtol=1e-5)
        else:  # drawn uniformly; each loss carries the importance ratio
            np.testing.assert_allclose(q, np.full(len(raw), 1 / len(raw)), rtol=1e-6)
            ratio = rw.importance_ratios(items).numpy()
            np.testing.assert_allclose(ratio / ratio.sum(), factor / factor.sum(), rtol=1e-5)
        assert factor[:40].mean() > factor[40:].mean()  # target-like items favoured


def test_min_tokens_excludes_short_documents_from_selection(tmp_path: Path) -> None:
    docs = ["a b c d e", "a b", "", "a b c d e f g"]
    model = fit(docs, ["a b c"])
    full = model.log_importance_weights(docs, min_tokens=0)
    cut = model.log_importance_weights(docs, min_tokens=5)
    assert np.isfinite(full).all()
    assert np.array_equal(np.isinf(cut), [False, True, True, False])
    assert np.array_equal(cut[[0, 3]], full[[0, 3]])
    out = tmp_path / "w.npy"
    model.save_log_importance_weights(docs, out, min_tokens=5)
    assert np.array_equal(np.load(out), cut)
    with pytest.raises(ValueError, match="min_tokens must be an int >= 0"):
        model.log_importance_weights(docs, min_tokens=-1)
    f = model.featurizer
    _, tokens = f.log_weights_and_tokens(docs, model.log_ratio)
    assert tokens.tolist() == [len(f.tokenize(d)) for d in docs]
    # Word tokens only: punctuation and symbols do not make a document long enough.
    junk = ["--- *** ---", "Hello!!!", "ok, fine.", "a b c", "नमस्ते दुनिया सब"]
    cut = model.log_importance_weights(junk, min_tokens=DEFAULT_MIN_TOKENS)
    assert np.isneginf(cut).tolist() == [True, True, True, False, False]
    _, tokens = f.log_weights_and_tokens(junk, model.log_ratio)
    assert tokens.tolist() == [0, 1, 2, 3, 3]


@pytest.mark.parametrize("block", [3, 100, 1 << 20])
def test_weights_and_errors_do_not_depend_on_block_size(tmp_path: Path, block: int) -> None:
    docs = _corpus(80, 20, WORDS_A + WORDS_B)
    path = _write_jsonl(tmp_path / "raw.jsonl", docs)
    model = fit(docs, docs[:10])
    expected = model.log_importance_weights(docs)
    assert np.array_equal(model.log_importance_weights(path, block_bytes=block), expected)
    lines = path.read_text().splitlines()
    lines[57] = "not json"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"raw.jsonl:58: invalid JSON"):
        model.log_importance_weights(path, block_bytes=block)
    with pytest.warns(BadLinesWarning, match=r"raw.jsonl:58"):
        got = model.log_importance_weights(path, block_bytes=block, skip_bad_lines=True)
    assert np.array_equal(got, np.delete(expected, 57))
