"""Static importance weights: the DSIR pipeline (hashed n-grams, fit, log weights, resampling).

The streaming reader :func:`iter_records` reads JSONL, Parquet and plain-text files.
"""

from reweight.static.io import Files, InputError, iter_records

__all__ = ["Files", "InputError", "iter_records"]
