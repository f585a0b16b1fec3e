"""The DSIR command line: ``python -m reweight.static {fit,weights,resample,kl,density}``.

A typical run::

    python -m reweight.static fit --raw raw/*.jsonl --target target.jsonl --out model/
    python -m reweight.static weights --model model/ --raw raw/*.jsonl --out logw.npy
    python -m reweight.static resample --weights logw.npy --raw raw/*.jsonl -k 100000 \\
        --seed 0 --out selected.jsonl
    python -m reweight.static kl --model model/ --selected selected.jsonl

``weights`` gives documents of fewer than 3 word tokens (``--min-tokens``) log weight -inf, so
``resample`` never selects them, and says how many it dropped. Weights written with
``--min-tokens 0`` plug into training as ``reweight.StaticImportance(log_weights="logw.npy")``
(which needs finite values).
Errors in the input are reported as one line (no traceback): exit code 2 for bad input or
arguments, 1 for other failures (e.g. a full disk).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np

from reweight.static.density import DensityRatioEstimator
from reweight.static.dsir import DEFAULT_MIN_TOKENS, DSIRModel, fit
from reweight.static.features import HashedNgrams
from reweight.static.io import FORMATS, Files
from reweight.static.kl import kl_report
from reweight.static.resample import importance_resample, write_selected

__all__ = ["build_parser", "main"]

_EPILOG = "Run `python -m reweight.static COMMAND --help` for the options of each command."


def _add_reading(parser: argparse.ArgumentParser, workers: bool = True) -> None:
    group = parser.add_argument_group("reading input files")
    group.add_argument(
        "--text-field",
        default="text",
        help="JSONL key / Parquet or dataset column holding the document text (default: text)",
    )
    group.add_argument(
        "--format",
        default="auto",
        choices=("auto", *FORMATS),
        help="input format; auto picks it from each file's suffix: .jsonl/.ndjson/.json (+.gz), "
        ".parquet/.pq, .txt (+.gz) = one document per line; a directory = hf, a Hugging Face "
        "dataset written by save_to_disk (needs `pip install datasets`) (default: auto)",
    )
    group.add_argument(
        "--skip-bad-lines",
        action="store_true",
        help="skip (and count) malformed lines instead of stopping at the first one",
    )
    if workers:
        group.add_argument(
            "--workers",
            type=int,
            default=0,
            help="worker processes; 0 = all cores, 1 = no extra process (default: 0)",
        )
    group.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m reweight.static``."""
    parser = argparse.ArgumentParser(
        prog="python -m reweight.static",
        description="DSIR data selection: hashed n-gram importance weights, importance "
        "resampling and the KL-reduction metric (Xie et al. 2023), plus density ratios for "
        "non-text features.",
        epilog=_EPILOG,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "fit",
        help="fit bucket distributions of a raw and a target corpus",
        description="Count hashed n-grams of the raw and target corpora and save the model "
        "(raw_counts.npy, target_counts.npy, log_ratio.npy, model.json) into --out.",
    )
    p.add_argument("--raw", nargs="+", required=True, metavar="PATH", help="raw corpus files")
    p.add_argument("--target", nargs="+", required=True, metavar="PATH", help="target files")
    p.add_argument("--out", required=True, metavar="DIR", help="model directory to write")
    p.add_argument("--num-buckets", type=int, default=10_000, help="hash buckets (default: 10000)")
    p.add_argument(
        "--ngrams", type=int, default=2, help="largest n-gram order; 2 = unigrams + bigrams"
    )
    p.add_argument(
        "--target-smoothing",
        type=float,
        default=0.0,
        help="add-α pseudo-count on every target bucket; 1 = Laplace (default: 0, as DSIR)",
    )
    p.add_argument(
        "--eps", type=float, default=1e-8, help="ε inside log(p + ε) (default: 1e-8, as DSIR)"
    )
    p.add_argument(
        "--max-raw-docs", type=int, default=None, help="fit the raw side on the first N documents"
    )
    p.add_argument(
        "--target-text-field", default=None, help="text field of the target (default: --text-field)"
    )
    _add_reading(p)

    p = sub.add_parser(
        "weights",
        help="log importance weights of raw documents (.npy)",
        description="Compute log w(x) = Σ_b c_b(x)(log p_target[b] − log p_raw[b]) for every "
        "document of --raw, in input order, into a float64 .npy file.",
    )
    p.add_argument("--model", required=True, metavar="DIR", help="model directory from `fit`")
    p.add_argument("--raw", nargs="+", required=True, metavar="PATH", help="documents to weight")
    p.add_argument("--out", required=True, metavar="FILE", help="output .npy file")
    p.add_argument(
        "--min-tokens",
        type=int,
        default=DEFAULT_MIN_TOKENS,
        help="give documents with fewer word tokens (punctuation does not count) log weight "
        "-inf, so `resample` never selects them; 0 keeps every document, as training weights "
        f"need (StaticImportance takes finite values only) (default: {DEFAULT_MIN_TOKENS})",
    )
    _add_reading(p)

    p = sub.add_parser(
        "resample",
        help="select k documents by importance resampling and write them as JSONL",
        description="Select k documents without replacement with probability ∝ w (Gumbel "
        "top-k), or the k largest weights with --top-k, and copy them to --out in input order.",
    )
    p.add_argument("--weights", required=True, metavar="FILE", help="log weights .npy")
    p.add_argument("--raw", nargs="+", required=True, metavar="PATH", help="the weighted files")
    p.add_argument("-k", "--num-select", type=int, required=True, help="documents to select")
    p.add_argument("--out", required=True, metavar="FILE", help="output JSONL file")
    p.add_argument("--seed", type=int, default=0, help="seed of the Gumbel noise (default: 0)")
    p.add_argument("--top-k", action="store_true", help="deterministic top-k instead of sampling")
    p.add_argument("--indices-out", metavar="FILE", help="also save the selected indices (.npy)")
    _add_reading(p, workers=False)

    p = sub.add_parser(
        "kl",
        help="KL reduction of a selection in the hashed n-gram space",
        description="KL reduction = KL(p_target ‖ p_raw) − KL(p_target ‖ p_selected) over hashed "
        "n-gram bucket distributions. Give --model (its target and raw counts) or --target and "
        "--raw files.",
    )
    p.add_argument("--selected", nargs="+", required=True, metavar="PATH", help="selected files")
    p.add_argument("--model", metavar="DIR", help="model directory from `fit`")
    p.add_argument("--target", nargs="+", metavar="PATH", help="target files (without --model)")
    p.add_argument("--raw", nargs="+", metavar="PATH", help="raw files (without --model)")
    p.add_argument("--num-buckets", type=int, default=10_000, help="buckets (without --model)")
    p.add_argument("--ngrams", type=int, default=2, help="n-gram order (without --model)")
    p.add_argument("--eps", type=float, default=1e-8, help="smoothing of p_raw, p_selected")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_reading(p)

    p = sub.add_parser(
        "density",
        help="log density ratios of non-text features (.npy) with a calibrated classifier",
        description="Fit a logistic-regression classifier between --target and --raw rows "
        "(2-D .npy arrays) and write calibrated log p_target(x)/p_raw(x) of every row of "
        "--apply (default: --raw) to --out.",
    )
    p.add_argument("--target", required=True, metavar="FILE", help="target features .npy")
    p.add_argument("--raw", required=True, metavar="FILE", help="raw features .npy")
    p.add_argument("--out", required=True, metavar="FILE", help="output log ratios .npy")
    p.add_argument("--apply", metavar="FILE", help="rows to score (default: --raw)")
    p.add_argument("--features", default="linear", choices=("linear", "quadratic"))
    p.add_argument("--calibration", default="platt", choices=("platt", "temperature", "none"))
    p.add_argument("--holdout", type=float, default=0.2, help="held-out fraction (default 0.2)")
    p.add_argument("--l2", type=float, default=1e-4, help="L2 penalty (default 1e-4)")
    p.add_argument("--max-samples", type=int, default=None, help="rows per class to train on")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    p.add_argument("--model-out", metavar="DIR", help="also save the fitted estimator")
    return parser


def _files(paths: Sequence[str], args: argparse.Namespace, field: str | None = None) -> Files:
    return Files(
        [Path(p) for p in paths],
        text_field=field or args.text_field,
        format=args.format,
        skip_bad_lines=args.skip_bad_lines,
    )


def _cmd_fit(args: argparse.Namespace) -> int:
    model = fit(
        _files(args.raw, args),
        _files(args.target, args, args.target_text_field),
        num_buckets=args.num_buckets,
        ngrams=args.ngrams,
        target_smoothing=args.target_smoothing,
        eps=args.eps,
        max_raw_docs=args.max_raw_docs,
        workers=args.workers,
        progress=not args.no_progress,
    )
    out = model.save(args.out)
    print(
        f"fitted on {model.raw_docs} raw and {model.target_docs} target documents "
        f"({int(model.raw_counts.sum())} and {int(model.target_counts.sum())} n-grams, "
        f"{model.num_buckets} buckets); saved to {out}"
    )
    return 0


def _cmd_weights(args: argparse.Namespace) -> int:
    model = DSIRModel.load(args.model)
    count = model.save_log_importance_weights(
        _files(args.raw, args),
        args.out,
        workers=args.workers,
        progress=not args.no_progress,
        min_tokens=args.min_tokens,
    )
    logw = np.load(args.out, mmap_mode="r")
    finite = np.isfinite(logw)
    dropped = count - int(finite.sum())
    shown = logw[finite] if finite.any() else np.zeros(1)
    print(
        f"wrote {count} log weights to {args.out} (min {float(np.min(shown)):.4g}, "
        f"mean {float(np.mean(shown)):.4g}, max {float(np.max(shown)):.4g} over the finite ones)"
    )
    if args.min_tokens == 0:
        print("min-tokens filter: off (--min-tokens 0); every document can be selected")
        return 0
    print(
        f"min-tokens filter: dropped {dropped} of {count} documents with fewer than "
        f"{args.min_tokens} word tokens (log weight -inf: never selected; --min-tokens 0 "
        "keeps them)"
    )
    if dropped == count:
        warnings.warn(
            f"every document has fewer than {args.min_tokens} word tokens, so none can be "
            "selected; lower --min-tokens (0 keeps every document).",
            stacklevel=1,
        )
    return 0


def _cmd_resample(args: argparse.Namespace) -> int:
    path = Path(args.weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {str(path)!r} does not exist; create it with `weights`."
        )
    logw = np.load(path, mmap_mode="r", allow_pickle=False)
    chosen = importance_resample(
        logw, args.num_select, seed=None if args.top_k else args.seed, deterministic=args.top_k
    )
    written = write_selected(
        _files(args.raw, args),
        chosen,
        args.out,
        expected_count=int(logw.shape[0]),
        progress=not args.no_progress,
    )
    if args.indices_out:
        np.save(args.indices_out, chosen, allow_pickle=False)
    how = "top-k" if args.top_k else f"Gumbel top-k, seed {args.seed}"
    never = int(np.count_nonzero(np.isneginf(logw)))
    excluded = f"; {never} with log weight -inf never selected" if never else ""
    print(f"selected {written} of {logw.shape[0]} documents ({how}{excluded}) into {args.out}")
    return 0


def _cmd_kl(args: argparse.Namespace) -> int:
    selected = _files(args.selected, args)
    if args.model:
        if args.target or args.raw:
            raise ValueError("give either --model or --target and --raw, not both.")
        model = DSIRModel.load(args.model)
        featurizer = model.featurizer
        target: Any = np.asarray(model.target_counts)
        raw: Any = np.asarray(model.raw_counts)
    else:
        if not (args.target and args.raw):
            raise ValueError("give --model, or both --target and --raw.")
        featurizer = HashedNgrams(num_buckets=args.num_buckets, ngrams=args.ngrams)
        target, raw = _files(args.target, args), _files(args.raw, args)
    report: dict[str, Any] = kl_report(
        selected,
        target,
        raw,
        featurizer=featurizer,
        eps=args.eps,
        workers=args.workers,
        progress=not args.no_progress,
    )
    report.update(num_buckets=featurizer.num_buckets, ngrams=featurizer.ngrams, eps=args.eps)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"KL(target ‖ raw)      = {report['kl_target_raw']:.6f} nats")
        print(
            f"KL(target ‖ selected) = {report['kl_target_selected']:.6f} nats "
            f"({report['selected_docs']} selected documents)"
        )
        print(f"KL reduction          = {report['kl_reduction']:.6f} nats")
    return 0


def _cmd_density(args: argparse.Namespace) -> int:
    est = DensityRatioEstimator(
        features=args.features,
        calibration=args.calibration,
        holdout=args.holdout,
        l2=args.l2,
        max_samples=args.max_samples,
        seed=args.seed,
    ).fit(args.target, args.raw)
    ratios = est.log_ratio(args.apply or args.raw)
    np.save(args.out, ratios, allow_pickle=False)
    if args.model_out:
        est.save(args.model_out)
    print(
        f"wrote {ratios.size} log density ratios to {args.out} (min {ratios.min():.4g}, "
        f"mean {ratios.mean():.4g}, max {ratios.max():.4g})"
    )
    return 0


_COMMANDS = {
    "fit": _cmd_fit,
    "weights": _cmd_weights,
    "resample": _cmd_resample,
    "kl": _cmd_kl,
    "density": _cmd_density,
}


def _show_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit code (0 ok, 2 bad input, 1 other failure)."""
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return _COMMANDS[args.command](args)
        except (ValueError, TypeError, FileNotFoundError, NotADirectoryError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except (OSError, ImportError, BrokenProcessPool) as exc:
            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
