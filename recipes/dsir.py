"""DSIR importance weights of the main job's training sequences, as a weight source.

``conf/reweight/static.yaml`` instantiates :func:`dsir_importance` with Hydra's ``_target_``;
the recipe passes the corpus and the training split.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from reweight.sources import StaticImportance

if TYPE_CHECKING:  # pragma: no cover
    from recipes.data import Corpus


def static_log_weights(
    corpus: Corpus, train_idx: Sequence[int] | np.ndarray, target_domain: str, num_buckets: int
) -> np.ndarray:
    """DSIR log importance weights of the training sequences toward ``target_domain``."""
    from reweight.static import fit

    if target_domain not in corpus.domain_names:
        raise ValueError(
            f"reweight.sources.static.target_domain {target_domain!r} is not a domain of this "
            f"corpus; choose one of {corpus.domain_names}."
        )
    idx = np.asarray(train_idx)
    texts = [bytes(row).decode("utf-8", errors="replace") for row in corpus.tokens[idx]]
    target_id = corpus.domain_names.index(target_domain)
    target = [t for t, d in zip(texts, corpus.domains[idx], strict=True) if d == target_id]
    estimator = fit(texts, target, num_buckets=int(num_buckets))
    return estimator.log_importance_weights(texts)


def dsir_importance(
    corpus: Corpus,
    train_idx: Sequence[int] | np.ndarray,
    target_domain: str = "docs",
    num_buckets: int = 10_000,
    **fields: Any,
) -> StaticImportance:
    """A :class:`~reweight.sources.StaticImportance` source from DSIR weights fitted on the
    corpus (``fields``: its ``beta``, ``clip``, ``floor``, ``mode``, ``name``)."""
    log_weights = static_log_weights(corpus, train_idx, target_domain, num_buckets)
    return StaticImportance(log_weights, **fields)
