"""DSIR importance weights of the main job's training sequences, as a weight source.

``conf/reweight/static.yaml`` instantiates :func:`dsir_importance` with Hydra's ``_target_``;
the recipe passes the corpus and the training split. DSIR is fitted on text; for token data
(``data=tokens``) the log weights are precomputed and given as a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from reweight.sources import StaticImportance
from reweight.sources.base import load_per_item

if TYPE_CHECKING:  # pragma: no cover
    from recipes.data import AnyCorpus, Corpus


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
    corpus: AnyCorpus,
    train_idx: Sequence[int] | np.ndarray,
    target_domain: str = "docs",
    num_buckets: int = 10_000,
    log_weights: str | None = None,
    **fields: Any,
) -> StaticImportance:
    """A :class:`~reweight.sources.StaticImportance` source from DSIR weights fitted on the
    corpus, or (``log_weights``: a ``.npy`` of one log weight per corpus item, training and
    validation together, in corpus order) from precomputed ones, which token data needs
    (``fields``: its ``beta``, ``clip``, ``floor``, ``mode``, ``name``)."""
    from recipes.data import Corpus

    where = "reweight.sources.static.log_weights"
    if log_weights is not None:
        values = load_per_item(where, log_weights)
        if values.size != corpus.num_docs:
            raise ValueError(
                f"{where} {str(log_weights)!r} holds {values.size} log weights; the data has "
                f"{corpus.num_docs} items (sequences or blocks, training and validation "
                "together): write one per item, in the data's order."
            )
        return StaticImportance(values[np.asarray(train_idx)], **fields)
    if not isinstance(corpus, Corpus):
        raise ValueError(
            "reweight=static fits DSIR on text, and token files hold token ids: pass "
            f"precomputed log weights, {where}=logw.npy (a .npy of one log weight per block, "
            "in the files' order, validation blocks included), or switch the source off with "
            "reweight.sources.static=null."
        )
    return StaticImportance(
        static_log_weights(corpus, train_idx, target_domain, num_buckets), **fields
    )
