"""KL reduction (Xie et al. 2023, DSIR), measured in the hashed n-gram feature space.

With p̂_target, q̂_raw and q̂_selected the bag-of-n-grams bucket distributions (bucket counts
summed over each corpus and normalised),

    KL reduction = KL(p̂_target ‖ q̂_raw) − KL(p̂_target ‖ q̂_selected)

— how much closer the selection is to the target than the raw corpus is. Positive is better;
the DSIR paper reports it correlates with downstream accuracy.

Smoothing: the target distribution is used as counted. The second argument of each KL is
smoothed as q̃ = (q̂ + ε) / (1 + B·ε) (B buckets, ε = 1e-8 by default — the constant DSIR's
reference code adds to its bucket probabilities), so a bucket the target uses but the selection
lacks costs a large finite amount instead of making the KL infinite, and q̃ stays a
distribution (so KL ≥ 0).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reweight.static._pipeline import worker_pool
from reweight.static.counting import count_ngrams_in_pool
from reweight.static.features import HashedNgrams

__all__ = ["kl_divergence", "kl_reduction", "kl_report"]


def _counts(name: str, counts: Any) -> np.ndarray:
    array = np.asarray(counts, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a 1-D array of bucket counts, got shape {array.shape}.")
    if not np.isfinite(array).all() or (array < 0).any():
        raise ValueError(f"{name} must hold finite, non-negative counts.")
    if array.sum() <= 0:
        raise ValueError(f"{name} is empty (all counts are 0): it has no n-grams.")
    return array


def kl_divergence(p_counts: Any, q_counts: Any, eps: float = 1e-8) -> float:
    """KL(p̂ ‖ q̃) in nats between two bucket-count vectors (normalised here).

    q̃ = (q̂ + ε) / (1 + B·ε); terms with p̂_b = 0 contribute 0.

    Example:
        >>> round(kl_divergence([1, 1], [1, 1]), 6)
        0.0
        >>> round(kl_divergence([3, 1], [1, 1]), 4)  # 0.75 ln 1.5 + 0.25 ln 0.5
        0.1308
    """
    p = _counts("p_counts", p_counts)
    q = _counts("q_counts", q_counts)
    if p.shape != q.shape:
        raise ValueError(f"count vectors differ in length: {p.size} and {q.size} buckets.")
    if not np.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}.")
    p = p / p.sum()
    q = (q / q.sum() + eps) / (1.0 + q.size * eps)
    support = p > 0
    if (q[support] == 0).any():
        return float("inf")
    return float(np.sum(p[support] * (np.log(p[support]) - np.log(q[support]))))


def kl_report(
    selected: Any,
    target: Any,
    raw: Any,
    *,
    featurizer: HashedNgrams | None = None,
    eps: float = 1e-8,
    text_field: str = "text",
    skip_bad_lines: bool = False,
    format: str = "auto",
    workers: int = 1,
    progress: bool = False,
    block_bytes: int | None = None,
) -> dict[str, float]:
    """The KL reduction and its two terms, with the document counts of corpora given as text.

    Arguments as for :func:`kl_reduction`. Returns ``kl_target_raw``, ``kl_target_selected``,
    ``kl_reduction`` (nats) and ``{name}_docs`` for each corpus featurised here.

    Example:
        >>> report = kl_report(["a b"], target=["a b"], raw=["a b", "c d"])
        >>> round(report["kl_target_raw"], 3), round(report["kl_target_selected"], 3)
        (0.693, 0.0)
        >>> report["selected_docs"], report["raw_docs"]
        (1, 2)
    """
    given = {"selected": selected, "target": target, "raw": raw}
    sizes = {name: v.size for name, v in given.items() if isinstance(v, np.ndarray)}
    if featurizer is None:
        featurizer = (
            HashedNgrams(num_buckets=next(iter(sizes.values()))) if sizes else HashedNgrams()
        )
    for name, size in sizes.items():
        if size != featurizer.num_buckets:
            raise ValueError(
                f"{name} counts have {size} buckets but the featurizer has "
                f"{featurizer.num_buckets}; count every corpus with the same featurizer."
            )
    if not np.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}.")
    counts: dict[str, np.ndarray] = {}
    for name, value in given.items():
        if isinstance(value, np.ndarray):
            counts[name] = _counts(f"{name} counts", value)
    report: dict[str, float] = {}
    corpora = {name: value for name, value in given.items() if name not in counts}
    with worker_pool(workers if corpora else 1) as pool:
        for name, value in corpora.items():
            found, docs, _ = count_ngrams_in_pool(
                value,
                featurizer,
                pool,
                max_docs=None,
                text_field=text_field,
                skip_bad_lines=skip_bad_lines,
                format=format,
                progress=progress,
                desc=f"kl {name}",
                block_bytes=block_bytes,
            )
            if found.sum() == 0:
                raise ValueError(
                    f"the {name} corpus has no n-grams ({docs} document(s)); it must contain text."
                )
            counts[name] = found
            report[f"{name}_docs"] = docs
    kl_raw = kl_divergence(counts["target"], counts["raw"], eps)
    kl_selected = kl_divergence(counts["target"], counts["selected"], eps)
    return {
        "kl_target_raw": kl_raw,
        "kl_target_selected": kl_selected,
        "kl_reduction": kl_raw - kl_selected,
        **report,
    }


def kl_reduction(
    selected: Any,
    target: Any,
    raw: Any,
    *,
    featurizer: HashedNgrams | None = None,
    eps: float = 1e-8,
    text_field: str = "text",
    skip_bad_lines: bool = False,
    format: str = "auto",
    workers: int = 1,
    progress: bool = False,
    block_bytes: int | None = None,
) -> float:
    """KL(p̂_target ‖ q̃_raw) − KL(p̂_target ‖ q̃_selected), in nats (see the module docstring).

    Each of ``selected``, ``target`` and ``raw`` is either a precomputed bucket-count vector
    (a 1-D numpy array, e.g. ``DSIRModel.raw_counts`` or ``HashedNgrams.total_counts(docs)``)
    or a corpus — documents (an iterable of strings) or files (a path, a list of Paths,
    :class:`~reweight.static.io.Files`) — which is featurised with ``featurizer`` (default
    :class:`HashedNgrams`() with as many buckets as the count vectors given).

    Args:
        selected, target, raw: the three corpora or their bucket counts.
        featurizer: featurizer for corpora given as documents or files.
        eps: smoothing of the selected and raw distributions.
        text_field, skip_bad_lines, format, workers, progress, block_bytes: how to read and
            featurise corpora given as files (see :func:`~reweight.static.fit`).

    Example:
        >>> target = ["the cat sat on the mat"] * 3
        >>> raw = ["the cat sat on the mat", "stocks fell sharply today", "buy now"]
        >>> kl_reduction(selected=raw[:1], target=target, raw=raw) > 0
        True
        >>> kl_reduction(selected=raw[1:2], target=target, raw=raw) < 0
        True
    """
    return kl_report(
        selected,
        target,
        raw,
        featurizer=featurizer,
        eps=eps,
        text_field=text_field,
        skip_bad_lines=skip_bad_lines,
        format=format,
        workers=workers,
        progress=progress,
        block_bytes=block_bytes,
    )["kl_reduction"]
