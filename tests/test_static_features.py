"""Tests for the hashed n-gram featurizer: specification, golden hashes, determinism."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reweight.static import HashedNgrams
from reweight.static._hashing import stable_hash64
from reweight.static.features import encode_documents

REPO_ROOT = Path(__file__).resolve().parents[1]
TOKEN_RE = re.compile(r"\w+|[^\w\s]+")

GOLDEN_DOCS = [
    "The quick brown fox jumps over the lazy dog.",
    "Ünïcödé — “quotes” & emoji 😀!",
    "x",
]
# Pinned forever: a change here changes every saved model's buckets.
GOLDEN_IDS = [
    7939, 7324, 4959, 1561, 9460, 1365, 5741, 3591, 5078, 3423, 7188, 4138, 7939, 3966, 2329,
    9501, 9511, 2106, 709, 280, 9125, 7985, 419, 7986, 8000, 9783, 4613, 6671, 9908, 5451, 3803,
    8147, 7221, 6687, 259,
]  # fmt: skip
GOLDEN_OFFSETS = [0, 19, 34, 35]

# Characters that stress the tokenizer: ASCII classes, Unicode whitespace (including the ones
# str.splitlines would cut at), letters that change length when lower-cased, combining marks,
# non-Latin digits, CJK, emoji, underscores.
TRICKY = (
    "aZ09_ .,;:!?'\"-—()[]{}#@$%^&*+=/\\|~`<>"
    "\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2028\u2029\u202f\u3000"
    "éÉßẞİıŉǅΣσς\u0301\u0300٣४三語😀🇫🇷\u200b\u200d\ufeff²½"
)


def _python_ids(f: HashedNgrams, docs: list[str]) -> list[int]:
    return [f.bucket(s) for d in docs for s in f.ngram_strings(d)]


def test_golden_hashes() -> None:
    assert stable_hash64(b"") == 0xEFD01F60BA992926
    assert stable_hash64(b"a") == 0x82A2A958A9BECE5B
    assert stable_hash64(b"the") == 0xCB3FF435B889FB31
    assert stable_hash64(b"the cat") == 0x4041C8DE9374F0F7
    assert stable_hash64("naïve café 😀".encode()) == 0x58515673CF24CAD1


def test_bucket_is_multiply_shift_of_the_top_32_bits() -> None:
    h = stable_hash64(b"hello")
    assert HashedNgrams().bucket("hello") == ((h >> 32) * 10_000) >> 32 == 9131
    assert HashedNgrams(num_buckets=1).bucket("anything") == 0
    top = HashedNgrams(num_buckets=2**31 - 1)
    assert 0 <= top.bucket("x") < 2**31 - 1
    assert top.bucket_ids(["x"])[0].tolist() == [top.bucket("x")]


def test_fnv1a_core_matches_the_published_constants() -> None:
    # FNV-1a 64 of "hello" is 0xa430d84680aabd0b; the bucket hash adds murmur3's fmix64.
    h = 0xCBF29CE484222325
    for byte in b"hello":
        h = ((h ^ byte) * 0x100000001B3) % 2**64
    assert h == 0xA430D84680AABD0B


def test_golden_bucket_ids() -> None:
    ids, offsets = HashedNgrams().bucket_ids(GOLDEN_DOCS)
    assert ids.tolist() == GOLDEN_IDS
    assert offsets.tolist() == GOLDEN_OFFSETS
    assert ids.tolist() == _python_ids(HashedNgrams(), GOLDEN_DOCS)


@pytest.mark.slow  # subprocesses each import torch (through reweight)
def test_buckets_identical_across_processes_and_hash_seeds() -> None:
    code = (
        "import json; from reweight.static import HashedNgrams; "
        f"ids, _ = HashedNgrams().bucket_ids({GOLDEN_DOCS!r}); "
        "print(json.dumps([ids.tolist(), hash('salted')]))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO_ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in ("0", "1", "12345")
    ]
    seen = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        seen.append(json.loads(out))
    assert len({s[1] for s in seen}) == 3  # Python's hash() really was salted differently
    for ids, _ in seen:
        assert ids == GOLDEN_IDS


def test_tokenize_is_the_documented_regex() -> None:
    f = HashedNgrams()
    text = "Don't STOP-me now!!! café_au_lait 3.14 — ok?"
    assert f.tokenize(text) == TOKEN_RE.findall(text.lower())
    assert f.tokenize(text) == [
        "don", "'", "t", "stop", "-", "me", "now", "!!!", "café_au_lait", "3", ".", "14", "—",
        "ok", "?",
    ]  # fmt: skip
    assert HashedNgrams(lowercase=False).tokenize("Ab c") == ["Ab", "c"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(TRICKY), max_size=40), max_size=6))
def test_kernel_matches_python_specification_on_tricky_text(docs: list[str]) -> None:
    for f in (HashedNgrams(), HashedNgrams(num_buckets=97, ngrams=3, lowercase=False)):
        ids, offsets = f.bucket_ids(docs)
        assert ids.tolist() == _python_ids(f, docs)
        assert offsets[-1] == ids.size
        for i, doc in enumerate(docs):
            assert offsets[i + 1] - offsets[i] == len(f.ngram_strings(doc))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=60), max_size=5))
def test_kernel_matches_python_specification_on_any_unicode(docs: list[str]) -> None:
    f = HashedNgrams(num_buckets=1000)
    assert f.bucket_ids(docs)[0].tolist() == _python_ids(f, docs)


def test_lone_surrogates_are_punctuation() -> None:
    f = HashedNgrams()
    doc = "a\ud800b \udfff"
    assert f.tokenize(doc) == ["a", "\ud800", "b", "\udfff"]
    assert f.bucket_ids([doc])[0].tolist() == _python_ids(f, [doc])


def test_ngram_orders() -> None:
    assert HashedNgrams(ngrams=1).ngram_strings("a b c") == ["a", "b", "c"]
    assert HashedNgrams(ngrams=3).ngram_strings("a b c") == ["a", "a b", "a b c", "b", "b c", "c"]
    assert HashedNgrams().ngram_strings("") == []
    assert HashedNgrams().ngram_strings(" \t\n") == []


def test_counts_agree_with_bucket_ids() -> None:
    f = HashedNgrams(num_buckets=50)
    docs = ["a b a b", "", "c, d. e!", "a"]
    ids, offsets = f.bucket_ids(docs)
    matrix = f.count_matrix(docs)
    assert matrix.shape == (4, 50)
    for i in range(4):
        expected = np.bincount(ids[offsets[i] : offsets[i + 1]], minlength=50)
        assert matrix[i].tolist() == expected.tolist()
    assert f.total_counts(docs).tolist() == matrix.sum(axis=0).tolist()
    out = np.ones(50, dtype=np.int64)
    assert f.total_counts(docs, out=out) is out
    assert out.sum() == 50 + matrix.sum()


def test_log_weights_sum_the_ratio_over_ngrams() -> None:
    f = HashedNgrams(num_buckets=31)
    ratio = np.random.default_rng(0).normal(size=31)
    docs = ["the cat sat", "", "a a a", "x y z w"]
    expected = [sum(ratio[f.bucket(s)] for s in f.ngram_strings(d)) for d in docs]
    np.testing.assert_allclose(f.log_weights(docs, ratio), expected, rtol=1e-12, atol=1e-12)


def test_long_documents_and_many_documents() -> None:
    f = HashedNgrams()
    long_doc = "word " * 50_000 + "end."
    ids, offsets = f.bucket_ids([long_doc, "x"])
    tokens = 50_000 + 2  # 'word' × 50,000, 'end', '.'
    assert offsets.tolist() == [0, 2 * tokens - 1, 2 * tokens]
    many = [f"doc {i}" for i in range(5000)]
    ids, offsets = f.bucket_ids(many)
    assert ids.size == 5000 * 3


def test_encode_documents() -> None:
    data, offsets = encode_documents(["AB", "", "é"])
    assert bytes(data) == b"ab\xc3\xa9"
    assert offsets.tolist() == [0, 2, 2, 4]
    data, offsets = encode_documents([])
    assert data.size == 0 and offsets.tolist() == [0]


def test_config_round_trip_and_validation() -> None:
    f = HashedNgrams(num_buckets=123, ngrams=3, lowercase=False)
    assert HashedNgrams.from_config(f.config()) == f
    with pytest.raises(ValueError, match="hash 'sha256' is not supported"):
        HashedNgrams.from_config({**f.config(), "hash": "sha256"})
    with pytest.raises(ValueError, match=r"num_buckets must lie in \[1, 2\^31\), got 0"):
        HashedNgrams(num_buckets=0)
    with pytest.raises(TypeError, match="num_buckets must be an int"):
        HashedNgrams(num_buckets=10.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"ngrams must lie in \[1, 8\]"):
        HashedNgrams(ngrams=0)
    with pytest.raises(TypeError, match="not one string"):
        HashedNgrams().bucket_ids("a single string")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="document 1 is int"):
        HashedNgrams().bucket_ids(["ok", 5])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"log_ratio must have shape \(10000,\)"):
        HashedNgrams().log_weights(["a"], np.zeros(5))
    with pytest.raises(ValueError, match="out must be an int64 array"):
        HashedNgrams().total_counts(["a"], out=np.zeros(10_000))


def test_combining_marks_stay_in_their_word() -> None:
    f = HashedNgrams()
    cafe = "cafe\u0301"  # e + COMBINING ACUTE ACCENT
    assert f.tokenize(f"Un {cafe.upper()}!") == ["un", cafe, "!"]
    assert f.tokenize("नमस्ते") == ["नमस्ते"]  # virama and vowel sign are marks (Mn)
    assert f.tokenize("नमस्ते, दुनिया") == ["नमस्ते", ",", "दुनिया"]
    assert f.tokenize("क्\u200dष می\u200cخواهم") == ["क्\u200dष", "می\u200cخواهم"]  # joiners
    # A mark that follows no word character is punctuation, as before.
    assert f.tokenize("\u0301a !\u0301 \u200d") == ["\u0301", "a", "!\u0301", "\u200d"]
    docs = [f"{cafe} नमस्ते", "a\u0301\u0302b_c\u0903 \u0301"]
    assert f.bucket_ids(docs)[0].tolist() == _python_ids(f, docs)
    _, words = f.log_weights_and_tokens([cafe, "नमस्ते दुनिया", "! \u0301 --"], np.zeros(10_000))
    assert words.tolist() == [1, 2, 0]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=60), max_size=5))
def test_ascii_tokens_are_nltks_wordpunct_tokens(docs: list[str]) -> None:
    f = HashedNgrams()
    for doc in docs:
        assert f.tokenize(doc) == TOKEN_RE.findall(doc.lower())
    expected = [f.bucket(" ".join(gram)) for d in docs for gram in _legacy_ngrams(d)]
    assert f.bucket_ids(docs)[0].tolist() == expected


def _legacy_ngrams(doc: str, n: int = 2) -> list[list[str]]:
    tokens = TOKEN_RE.findall(doc.lower())
    return [tokens[t : t + k] for t in range(len(tokens)) for k in range(1, n + 1)
            if t + k <= len(tokens)]  # fmt: skip


def test_models_of_the_previous_tokenizer_load_with_a_warning() -> None:
    config = {**HashedNgrams().config(), "tokenizer": "regex:\\w+|[^\\w\\s]+"}
    with pytest.warns(UserWarning, match="previous tokenizer"):
        assert HashedNgrams.from_config(config) == HashedNgrams()
    with pytest.raises(ValueError, match="tokenizer 'whitespace' is not supported"):
        HashedNgrams.from_config({**config, "tokenizer": "whitespace"})
