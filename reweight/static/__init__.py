"""Static importance weights: the DSIR pipeline and density ratios for non-text features.

DSIR (Xie et al. 2023, "Data Selection for Language Models via Importance Resampling") weights
each raw document by w(x) = p_target(f(x)) / p_raw(f(x)) in a hashed n-gram feature space:

- :class:`HashedNgrams` — the featurizer (lower-cased word/punctuation tokens, unigrams and
  bigrams, 10,000 buckets, a seedless 64-bit hash; compiled with numba);
- :func:`fit` → :class:`DSIRModel` — bucket distributions of raw and target, saved as ``.npy``
  plus JSON; :meth:`DSIRModel.log_importance_weights` gives log w for every raw document
  (``min_tokens=DEFAULT_MIN_TOKENS`` for a selection: empty and one-word documents get -inf);
- :func:`importance_resample` — Gumbel top-k selection ∝ w; :func:`write_selected` streams the
  chosen documents out; :func:`kl_reduction` — the paper's data metric;
- :class:`DensityRatioEstimator` — calibrated log density ratios for embeddings and other
  non-text features;
- :func:`iter_records` / :class:`Files` — streaming JSONL, Parquet and plain-text input.

Files of any size are streamed with bounded memory, and ``workers=0`` uses every core (worker
processes come from a ``forkserver`` that imports this package once; as with any
multiprocessing code, a script that uses ``workers > 1`` must guard its entry point with
``if __name__ == "__main__":``).
The log weights plug into training as ``reweight.StaticImportance(log_weights=...)``; the command
line is ``python -m reweight.static {fit,weights,resample,kl,density}``.

Example:
    >>> from reweight.static import DEFAULT_MIN_TOKENS, fit, importance_resample, kl_reduction
    >>> raw = ["the cat sat on the mat", "stocks fell sharply", "the dog sat", "buy now"]
    >>> target = ["the cat sat on the mat", "the dog sat on the cat"]
    >>> model = fit(raw, target)
    >>> logw = model.log_importance_weights(raw, min_tokens=DEFAULT_MIN_TOKENS)  # for selection
    >>> float(logw[3])  # "buy now": under 3 word tokens, never selected
    -inf
    >>> chosen = importance_resample(logw, k=2, deterministic=True)
    >>> chosen.tolist()
    [0, 2]
    >>> kl_reduction([raw[i] for i in chosen], target, raw) > 0
    True
"""

from reweight.static.counting import count_ngrams
from reweight.static.density import DensityRatioEstimator
from reweight.static.dsir import DEFAULT_MIN_TOKENS, DSIRModel, fit
from reweight.static.features import HashedNgrams
from reweight.static.io import Files, InputError, iter_records
from reweight.static.kl import kl_divergence, kl_reduction, kl_report
from reweight.static.resample import importance_resample, write_selected

__all__ = [
    "DEFAULT_MIN_TOKENS",
    "DSIRModel",
    "DensityRatioEstimator",
    "Files",
    "HashedNgrams",
    "InputError",
    "count_ngrams",
    "fit",
    "importance_resample",
    "iter_records",
    "kl_divergence",
    "kl_reduction",
    "kl_report",
    "write_selected",
]
