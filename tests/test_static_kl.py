"""Tests for the KL-reduction metric in the hashed n-gram space."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from reweight.static import (
    HashedNgrams,
    fit,
    importance_resample,
    kl_divergence,
    kl_reduction,
    kl_report,
)

SHARED = ["the", "a", "of", "and", "to", "in", "is", "it", "that", "for"]
TOPIC_A = [
    "protein",
    "cell",
    "gene",
    "enzyme",
    "membrane",
    "receptor",
    "dna",
    "mutation",
    "tissue",
    "assay",
]
TOPIC_B = [
    "league",
    "goal",
    "striker",
    "referee",
    "season",
    "match",
    "coach",
    "stadium",
    "penalty",
    "fans",
]


def _topic_docs(n: int, topic: list[str], seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(topic + SHARED, k=rng.randint(20, 60))) for _ in range(n)]


def test_kl_divergence_by_hand() -> None:
    p, q = np.array([3, 1, 0]), np.array([1, 1, 2])
    eps = 1e-8
    q_s = (q / q.sum() + eps) / (1 + 3 * eps)
    expected = 0.75 * math.log(0.75 / q_s[0]) + 0.25 * math.log(0.25 / q_s[1])
    assert kl_divergence(p, q) == pytest.approx(expected, rel=1e-12)
    assert kl_divergence(p, p * 7) == pytest.approx(0.0, abs=1e-7)  # scale-free
    assert kl_divergence([1, 1], [1, 0], eps=0.0) == math.inf
    q_s = np.array([1 + eps, eps]) / (1 + 2 * eps)
    expected = 0.5 * math.log(0.5 / q_s[0]) + 0.5 * math.log(0.5 / q_s[1])
    assert kl_divergence([1, 1], [1, 0]) == pytest.approx(expected, rel=1e-12)
    assert kl_divergence([0, 1], [1, 0], eps=1e-8) > 0


def test_kl_divergence_validation() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        kl_divergence([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="non-negative"):
        kl_divergence([1, -1], [1, 1])
    with pytest.raises(ValueError, match="is empty"):
        kl_divergence([0, 0], [1, 1])
    with pytest.raises(ValueError, match="eps must be >= 0"):
        kl_divergence([1, 1], [1, 1], eps=-1.0)
    with pytest.raises(ValueError, match="1-D array"):
        kl_divergence(np.ones((2, 2)), np.ones((2, 2)))


def test_counts_or_documents_give_the_same_value(tmp_path: Path) -> None:
    f = HashedNgrams(num_buckets=500)
    target = _topic_docs(30, TOPIC_A, 1)
    raw = _topic_docs(30, TOPIC_A, 2) + _topic_docs(60, TOPIC_B, 3)
    selected = raw[:30]
    path = tmp_path / "selected.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in selected))
    from_docs = kl_reduction(selected, target, raw, featurizer=f)
    from_counts = kl_reduction(
        f.total_counts(selected), f.total_counts(target), f.total_counts(raw)
    )
    from_file = kl_reduction(path, target, f.total_counts(raw), featurizer=f)
    assert from_docs == pytest.approx(from_counts, rel=1e-12)
    assert from_file == pytest.approx(from_counts, rel=1e-12)
    report = kl_report(selected, target, raw, featurizer=f)
    assert report["kl_reduction"] == pytest.approx(
        report["kl_target_raw"] - report["kl_target_selected"]
    )
    assert (report["selected_docs"], report["target_docs"], report["raw_docs"]) == (30, 30, 90)


def test_selecting_target_like_documents_reduces_kl() -> None:
    target = _topic_docs(50, TOPIC_A, 4)
    raw = _topic_docs(100, TOPIC_A, 5) + _topic_docs(400, TOPIC_B, 6)
    assert kl_reduction(raw[:100], target, raw) > 0.5
    assert kl_reduction(raw[100:200], target, raw) < 0
    assert kl_reduction(raw, target, raw) == pytest.approx(0.0, abs=1e-12)


def test_dsir_selection_beats_random_selection_on_two_topics() -> None:
    target = _topic_docs(200, TOPIC_A, 7)
    raw = _topic_docs(300, TOPIC_A, 8) + _topic_docs(1200, TOPIC_B, 9)
    random.Random(10).shuffle(raw)
    model = fit(raw, target, target_smoothing=1.0)
    logw = model.log_importance_weights(raw)
    k = 300
    f = model.featurizer
    target_counts = np.asarray(model.target_counts)
    raw_counts = np.asarray(model.raw_counts)
    dsir = importance_resample(logw, k, seed=0)
    chosen = f.total_counts([raw[i] for i in dsir])
    dsir_kl = kl_reduction(chosen, target_counts, raw_counts)
    rng = np.random.default_rng(0)
    random_kls = []
    for _ in range(5):
        pick = rng.choice(len(raw), size=k, replace=False)
        random_kls.append(
            kl_reduction(f.total_counts([raw[i] for i in pick]), target_counts, raw_counts)
        )
    assert dsir_kl > 0.5
    assert dsir_kl > max(random_kls) + 0.4
    assert np.mean([any(w in raw[i].split() for w in TOPIC_A) for i in dsir]) > 0.95


def test_featurizer_mismatch_and_empty_corpora() -> None:
    with pytest.raises(
        ValueError, match="selected counts have 5 buckets but the featurizer has 10000"
    ):
        kl_reduction(np.ones(5), ["a"], ["a"], featurizer=HashedNgrams())
    with pytest.raises(ValueError, match="target counts have 6 buckets but the featurizer has 5"):
        kl_reduction(np.ones(5), np.ones(6), np.ones(5))
    with pytest.raises(ValueError, match="the selected corpus has no n-grams"):
        kl_reduction(["", " "], ["a"], ["a"])
    with pytest.raises(ValueError, match="eps must be >= 0"):
        kl_reduction(["a"], ["a"], ["a"], eps=-1)
