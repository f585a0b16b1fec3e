"""A one-page PNG dashboard of a reweighted run, drawn from its logged metrics.

The history is a list of dicts, one per logged step, each with ``"step"`` and flat metric keys
(or the path of a ``metrics.jsonl`` file of such lines; see :func:`write_history`). Metrics
are sparse: a row holds whatever was logged at that step. The dashboard reads:

=====================================  ====================================================
panel                                  keys
=====================================  ====================================================
temperature τ(t)                       ``reweight/mixing/tau``
domain shares (dashed target,          ``reweight/domain/<name>/target``,
solid realised)                        ``reweight/domain/<name>/realised``
validation loss per domain             ``val/loss/<name>`` (and ``val/loss``, the mean)
effective sample size (fraction)       ``reweight/sampler/ess_fraction``,
                                       ``reweight/loss_weight/ess_fraction``
loss-weight histogram                  the ``weight_samples`` argument
training loss                          ``train/loss``
=====================================  ====================================================

A panel whose keys are missing (e.g. a run with ``reweight=none``) says so instead of failing.

Example:
    >>> import tempfile, pathlib
    >>> from recipes.dashboard import make_dashboard
    >>> rows = [{"step": s, "reweight/mixing/tau": 1 + s / 10, "val/loss/code": 3 - s / 50}
    ...         for s in range(0, 100, 10)]
    >>> png = make_dashboard(rows, pathlib.Path(tempfile.mkdtemp()) / "dash.png")
    >>> png.read_bytes()[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
    True
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DOMAIN_SHARE_KEY",
    "ESS_KEYS",
    "TAU_KEY",
    "TRAIN_LOSS_KEY",
    "VAL_LOSS_KEY",
    "make_dashboard",
    "read_history",
    "series",
    "write_history",
]

TAU_KEY = "reweight/mixing/tau"
DOMAIN_SHARE_KEY = "reweight/domain/{name}/{kind}"  # kind: target | realised
VAL_LOSS_KEY = "val/loss"  # the mean; per domain: val/loss/<name>
ESS_KEYS = ("reweight/sampler/ess_fraction", "reweight/loss_weight/ess_fraction")
TRAIN_LOSS_KEY = "train/loss"

_SHARE_RE = re.compile(r"^reweight/domain/(.+)/(target|realised)$")
_VAL_RE = re.compile(r"^val/loss/(.+)$")
PathLike = str | os.PathLike[str]


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, non-numeric, NaN or infinite)."""
    if value is None or isinstance(value, bool | np.bool_ | str):
        return None
    if isinstance(value, int | float | np.integer | np.floating):
        out = float(value)
    elif hasattr(value, "numel") and hasattr(value, "item") and value.numel() == 1:  # a tensor
        item = value.item()
        if isinstance(item, bool) or not isinstance(item, int | float):
            return None
        out = float(item)
    elif isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iuf":
        out = float(value.item())
    else:
        return None
    return out if math.isfinite(out) else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | bool) or value is None:
        return value
    number = _number(value)
    if number is not None:
        return int(number) if isinstance(value, int | np.integer) else number
    if isinstance(value, float | np.floating):
        return None  # NaN / inf: strict JSON has no spelling for them
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    return str(value)


def write_history(
    path: PathLike, rows: Iterable[Mapping[str, Any]], *, append: bool = False
) -> Path:
    """Write (or append) rows as JSON lines; numpy/torch scalars become numbers, NaN becomes null.

    Args:
        path: The ``metrics.jsonl`` file (parent directories are created).
        rows: Dicts with string keys.
        append: Append to the file instead of replacing it.

    Returns:
        The path written.

    Example:
        >>> import tempfile, pathlib
        >>> from recipes.dashboard import read_history, write_history
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "metrics.jsonl"
        >>> _ = write_history(path, [{"step": 0, "val/loss": 2.5}])
        >>> _ = write_history(path, [{"step": 1, "val/loss": float("nan")}], append=True)
        >>> read_history(path)
        [{'step': 0, 'val/loss': 2.5}, {'step': 1, 'val/loss': None}]
    """
    out = Path(path)
    lines = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"row {i} must be a dict of metrics, got {type(row).__name__}.")
        lines.append(json.dumps(_jsonable(row), allow_nan=False) + "\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a" if append else "w", encoding="utf-8") as handle:
        handle.writelines(lines)
    return out


def read_history(path: PathLike) -> list[dict[str, Any]]:
    """Read a ``metrics.jsonl`` file: one JSON object per line (blank lines are skipped).

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If a line is not a JSON object (the line number is given).
    """
    rows = []
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number} is not valid JSON ({exc.msg}).") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number} must be a JSON object, got {line.strip()!r}.")
            rows.append(row)
    return rows


def _as_history(history: Sequence[Mapping[str, Any]] | PathLike) -> list[Mapping[str, Any]]:
    if isinstance(history, str | os.PathLike):
        return list(read_history(history))
    if isinstance(history, Mapping) or not isinstance(history, Iterable):
        raise TypeError(
            f"history must be a list of metric dicts or the path of a metrics.jsonl file, got "
            f"{type(history).__name__}."
        )
    rows = list(history)
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"history[{i}] must be a dict of metrics, got {type(row).__name__}.")
    return rows


def series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` of ``key`` over the rows that hold a finite number for it.

    A row without ``"step"`` counts by its position in the history.

    Example:
        >>> from recipes.dashboard import series
        >>> series([{"step": 0, "a": 1.0}, {"step": 5}, {"step": 9, "a": 2}], "a")
        (array([0., 9.]), array([1., 2.]))
    """
    xs, ys = [], []
    for i, row in enumerate(history):
        y = _number(row.get(key))
        if y is None:
            continue
        x = _number(row.get("step"))
        xs.append(float(i) if x is None else x)
        ys.append(y)
    return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)


def _names(history: Sequence[Mapping[str, Any]], pattern: re.Pattern[str]) -> list[str]:
    seen: dict[str, None] = {}
    for row in history:
        for key in row:
            match = pattern.match(key)
            if match:
                seen.setdefault(match.group(1), None)
    return list(seen)


def _note(ax: Any, text: str) -> None:
    ax.text(
        0.5,
        0.5,
        text,
        ha="center",
        va="center",
        wrap=True,
        color="0.4",
        fontsize=10,
        transform=ax.transAxes,
    )
    ax.set_xticks([])
    ax.set_yticks([])


def _weights(weight_samples: Any) -> np.ndarray:
    if weight_samples is None:
        return np.zeros(0)
    if hasattr(weight_samples, "detach"):
        weight_samples = weight_samples.detach().cpu().numpy()
    try:
        arr = np.asarray(weight_samples, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"weight_samples must be an array of numbers (recent per-sample loss weights), got "
            f"{type(weight_samples).__name__} ({exc})."
        ) from None
    return arr[np.isfinite(arr)]


def make_dashboard(
    history: Sequence[Mapping[str, Any]] | PathLike,
    out_png: PathLike,
    *,
    weight_samples: Any = None,
    title: str | None = None,
) -> Path:
    """Draw the run's dashboard (six panels) into a PNG file.

    Args:
        history: Metric rows (dicts with ``"step"`` and flat keys; see the module docstring for
            the keys read) or the path of a ``metrics.jsonl`` file.
        out_png: Where to write the PNG (parent directories are created).
        weight_samples: Recent per-sample loss weights for the histogram (array, list or
            tensor); None leaves a note in that panel.
        title: Figure title (default: "reweight dashboard").

    Returns:
        The path of the PNG.

    Raises:
        TypeError: If ``history`` or ``weight_samples`` has the wrong type.
    """
    from matplotlib.figure import Figure  # lazy: no pyplot, no global backend state

    rows = _as_history(history)
    weights = _weights(weight_samples)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)

    share_names = _names(rows, _SHARE_RE)
    val_names = _names(rows, _VAL_RE)
    all_names = list(dict.fromkeys(share_names + val_names))
    palette = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
        "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    ]  # fmt: skip
    colour = {name: palette[i % len(palette)] for i, name in enumerate(all_names)}

    fig = Figure(figsize=(16, 9), layout="constrained")
    fig.suptitle(title or "reweight dashboard", fontsize=14)
    axes = fig.subplots(2, 3)
    ax_tau, ax_share, ax_val = axes[0]
    ax_ess, ax_hist, ax_train = axes[1]

    # τ(t)
    ax_tau.set_title("domain temperature τ(t)")
    steps, tau = series(rows, TAU_KEY)
    if len(tau):
        ax_tau.plot(steps, tau, color="#d62728", lw=2)
        ax_tau.set_xlabel("step")
        ax_tau.set_ylabel("τ  (p_d ∝ n_d^(1/τ))")
        ax_tau.grid(alpha=0.3)
    else:
        _note(ax_tau, f"no temperature schedule\n({TAU_KEY} not logged)")

    # Target vs realised domain shares.
    ax_share.set_title("domain shares: target (dashed) vs realised (solid)")
    for name in share_names:
        for kind, style in (("target", "--"), ("realised", "-")):
            x, y = series(rows, DOMAIN_SHARE_KEY.format(name=name, kind=kind))
            if len(y):
                label = name if kind == "realised" else None
                ax_share.plot(x, y, style, color=colour[name], lw=1.8, label=label)
    if share_names:
        ax_share.set_xlabel("step")
        ax_share.set_ylabel("share of drawn samples")
        ax_share.set_ylim(bottom=0)
        ax_share.grid(alpha=0.3)
        ax_share.legend(fontsize=8, ncol=2)
    else:
        _note(ax_share, "no domain shares logged\n(reweight/domain/<name>/target|realised)")

    # Validation loss per domain.
    ax_val.set_title("validation loss per domain")
    for name in val_names:
        x, y = series(rows, f"{VAL_LOSS_KEY}/{name}")
        ax_val.plot(x, y, "-o", ms=3, color=colour[name], label=name)
    x, y = series(rows, VAL_LOSS_KEY)
    if len(y):
        ax_val.plot(x, y, "--", color="black", lw=1.5, label="mean")
    if val_names or len(y):
        ax_val.set_xlabel("step")
        ax_val.set_ylabel("nats per byte")
        ax_val.grid(alpha=0.3)
        ax_val.legend(fontsize=8, ncol=2)
    else:
        _note(ax_val, "no validation loss logged\n(val/loss/<name>)")

    # Effective sample size.
    ax_ess.set_title("effective sample size / n")
    found = False
    for key, label in zip(ESS_KEYS, ("sampling distribution", "loss weights"), strict=True):
        x, y = series(rows, key)
        if len(y):
            ax_ess.plot(x, y, lw=2, label=f"{label} ({key.split('/')[1]})")
            found = True
    if found:
        ax_ess.set_ylim(0, 1.05)
        ax_ess.set_xlabel("step")
        ax_ess.set_ylabel("ESS fraction (1 = uniform)")
        ax_ess.grid(alpha=0.3)
        ax_ess.legend(fontsize=8)
    else:
        _note(ax_ess, "no ESS logged\n(" + ", ".join(ESS_KEYS) + ")")

    # Loss-weight histogram.
    ax_hist.set_title("per-sample loss weights (recent)")
    if weights.size:
        ax_hist.hist(weights, bins=min(50, max(5, weights.size // 4)), color="#9467bd", alpha=0.8)
        mean = float(weights.mean())
        ax_hist.axvline(mean, color="black", ls="--", lw=1)
        ess = float(weights.sum() ** 2 / max(np.square(weights).sum(), 1e-300) / weights.size)
        ax_hist.text(
            0.98,
            0.95,
            f"n={weights.size}\nmean={mean:.3g}\nmin={weights.min():.3g}  max={weights.max():.3g}"
            f"\nESS/n={ess:.3f}",
            ha="right",
            va="top",
            fontsize=8,
            transform=ax_hist.transAxes,
        )
        ax_hist.set_xlabel("weight")
        ax_hist.set_ylabel("samples")
    else:
        _note(ax_hist, "no loss weights recorded\n(weight_samples not given)")

    # Training loss.
    ax_train.set_title("training loss")
    x, y = series(rows, TRAIN_LOSS_KEY)
    if len(y):
        ax_train.plot(x, y, color="0.3", lw=1)
        if len(y) >= 10:
            k = max(2, len(y) // 10)
            smooth = np.convolve(y, np.ones(k) / k, mode="valid")
            ax_train.plot(x[k - 1 :], smooth, color="black", lw=2, label=f"mean of {k}")
            ax_train.legend(fontsize=8)
        ax_train.set_xlabel("step")
        ax_train.set_ylabel("nats per byte")
        ax_train.grid(alpha=0.3)
    else:
        _note(ax_train, f"no training loss logged\n({TRAIN_LOSS_KEY})")

    fig.savefig(out, dpi=100, format="png")
    return out
