"""Compare finished runs: a table and a plot of per-domain validation loss per reweight preset.

    python recipes/compare.py multirun/2026-11-23/12-00-00        # a Hydra multirun directory
    python recipes/compare.py outputs/run-a outputs/run-b --out .  # or any run directories

A run directory holds ``summary.json`` (a flat dict with at least ``"reweight"``, the preset,
``"val/loss"`` and ``"val/loss/<domain>"``; optionally ``"steps"`` and ``"seconds"``) and, if
the run logged it, ``metrics.jsonl`` (see :mod:`recipes.dashboard`). A directory without
``summary.json`` is searched for run directories below it (Hydra's numbered ``0-none``,
``1-full``, ... subdirectories), in natural order.

Writes ``comparison.md`` (the table, also printed) and ``comparison.png`` (grouped bars of the
final per-domain validation loss per run, and the validation-loss curves over steps).

Example:
    >>> import json, tempfile, pathlib
    >>> from recipes.compare import compare
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for i, (preset, loss) in enumerate([("none", 2.0), ("full", 1.8)]):
    ...     run = root / f"{i}-{preset}"
    ...     run.mkdir()
    ...     summary = {"reweight": preset, "val/loss": loss, "val/loss/a": loss - 0.5,
    ...                "val/loss/b": loss + 0.5, "steps": 100, "seconds": 12.0}
    ...     _ = (run / "summary.json").write_text(json.dumps(summary))
    >>> result = compare([root], root)
    >>> [run["label"] for run in result["runs"]], result["domains"]
    (['none', 'full'], ['a', 'b'])
    >>> result["png"].name, result["markdown"].name
    ('comparison.png', 'comparison.md')
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["compare", "find_runs", "load_run", "main"]

PathLike = str | os.PathLike[str]
_VAL_PREFIX = "val/loss/"


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.as_posix())]


def find_runs(paths: Sequence[PathLike]) -> list[Path]:
    """The run directories (those holding ``summary.json``) at or below ``paths``.

    Each path is a run directory itself or is searched recursively; runs are returned in the
    order of ``paths``, natural-sorted below each (``2-x`` before ``10-y``), without duplicates.

    Raises:
        FileNotFoundError: If a path does not exist.
        ValueError: If no run directory is found.
    """
    runs: dict[Path, None] = {}
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; pass run or multirun directories.")
        if (path / "summary.json").is_file():
            runs.setdefault(path, None)
            continue
        found = sorted((s.parent for s in path.rglob("summary.json")), key=_natural_key)
        for run in found:
            if not any(parent in runs for parent in run.parents):  # not nested in a run
                runs.setdefault(run, None)
    if not runs:
        raise ValueError(
            f"no summary.json under {[str(p) for p in paths]}. Pass the run directories of "
            "finished recipes/train.py runs, or the Hydra multirun directory holding them."
        )
    return list(runs)


def load_run(run_dir: PathLike) -> dict[str, Any]:
    """A run's ``summary.json`` (as ``"summary"``) and ``metrics.jsonl`` rows (``"history"``).

    Raises:
        ValueError: If ``summary.json`` is not a JSON object.
    """
    from recipes.dashboard import read_history

    path = Path(run_dir)
    try:
        summary = json.loads((path / "summary.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path / 'summary.json'} is not valid JSON ({exc.msg}).") from None
    if not isinstance(summary, dict):
        raise ValueError(f"{path / 'summary.json'} must hold a JSON object, got {summary!r}.")
    metrics = path / "metrics.jsonl"
    history = read_history(metrics) if metrics.is_file() else []
    return {"dir": path, "summary": summary, "history": history}


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _rows(runs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    domains: dict[str, None] = {}
    for run in runs:
        for key in run["summary"]:
            if key.startswith(_VAL_PREFIX):
                domains.setdefault(key[len(_VAL_PREFIX) :], None)
    names = list(domains)
    presets = [str(run["summary"].get("reweight", "?")) for run in runs]
    rows = []
    for run, preset in zip(runs, presets, strict=True):
        summary = run["summary"]
        label = preset if presets.count(preset) == 1 else f"{preset} ({run['dir'].name})"
        per_domain = {d: _float(summary.get(_VAL_PREFIX + d)) for d in names}
        known = [v for v in per_domain.values() if v is not None]
        rows.append(
            {
                "label": label,
                "dir": str(run["dir"]),
                "reweight": preset,
                "val/loss": _float(summary.get("val/loss")),
                "domain_mean": sum(known) / len(known) if known else None,
                "worst": max(known) if known else None,
                "per_domain": per_domain,
                "steps": _float(summary.get("steps")),
                "seconds": _float(summary.get("seconds")),
            }
        )
    return rows, names


def _markdown(rows: list[dict[str, Any]], domains: list[str]) -> str:
    loss_columns = ["val/loss", "domain_mean", "worst"]
    headers = ["run", "val/loss", "mean over domains", "worst domain", *domains]
    headers += ["steps", "seconds"]

    def column(name: str) -> list[float | None]:
        if name in loss_columns:
            return [row[name] for row in rows]
        return [row["per_domain"][name] for row in rows]

    best = {}
    for name in loss_columns + domains:
        values = [v for v in column(name) if v is not None]
        best[name] = min(values) if values and len(rows) > 1 else None

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cells = [f"`{row['label']}`"]
        for name in loss_columns + domains:
            value = row[name] if name in loss_columns else row["per_domain"][name]
            text = _fmt(value)
            cells.append(f"**{text}**" if value is not None and value == best[name] else text)
        cells.append("–" if row["steps"] is None else f"{row['steps']:.0f}")
        cells.append("–" if row["seconds"] is None else f"{row['seconds']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)

    baseline = next((row for row in rows if row["reweight"] == "none"), None)
    others = [row for row in rows if row is not baseline]
    if baseline is not None and others:
        lines = [
            "",
            "Change in validation loss relative to `none` (negative = better):",
            "",
            "| run | val/loss | worst domain | " + " | ".join(domains) + " |",
            "|" + "---|" * (3 + len(domains)),
        ]
        for row in others:
            cells = [f"`{row['label']}`"]
            pairs = [(row["val/loss"], baseline["val/loss"]), (row["worst"], baseline["worst"])]
            pairs += [(row["per_domain"][d], baseline["per_domain"][d]) for d in domains]
            for value, base in pairs:
                ok = value is not None and base is not None and base != 0
                cells.append(f"{100 * (value - base) / base:+.1f}%" if ok else "–")
            lines.append("| " + " | ".join(cells) + " |")
        text += "\n" + "\n".join(lines)
    return text + "\n"


def _plot(
    runs: list[dict[str, Any]], rows: list[dict[str, Any]], domains: list[str], out: Path
) -> None:
    import numpy as np
    from matplotlib.figure import Figure

    from recipes.dashboard import series

    fig = Figure(figsize=(15, 5.5), layout="constrained")
    ax_bar, ax_curve = fig.subplots(1, 2, width_ratios=[3, 2])
    columns = [*domains, "mean"]
    x = np.arange(len(columns))
    width = 0.8 / max(1, len(rows))
    for i, row in enumerate(rows):
        values = [row["per_domain"][d] for d in domains] + [row["val/loss"]]
        heights = [np.nan if v is None else v for v in values]
        ax_bar.bar(x + (i - (len(rows) - 1) / 2) * width, heights, width, label=row["label"])
    ax_bar.set_xticks(x, columns, rotation=20)
    ax_bar.set_ylabel("validation loss (nats per byte)")
    ax_bar.set_title("final validation loss per domain")
    ax_bar.grid(axis="y", alpha=0.3)
    ax_bar.legend(fontsize=9)
    finite = [
        v for row in rows for v in [*row["per_domain"].values(), row["val/loss"]] if v is not None
    ]
    if finite:
        low, high = min(finite), max(finite)
        ax_bar.set_ylim(max(0.0, low - 0.15 * (high - low + 1e-9)), high + 0.1 * (high - low))

    ax_curve.set_title("validation loss over training")
    drawn = False
    for run, row in zip(runs, rows, strict=True):
        curve_steps, curve = series(run["history"], "val/loss")
        if len(curve):
            ax_curve.plot(curve_steps, curve, "-o", ms=3, label=row["label"])
            drawn = True
    if drawn:
        ax_curve.set_xlabel("step")
        ax_curve.set_ylabel("val/loss")
        ax_curve.grid(alpha=0.3)
        ax_curve.legend(fontsize=9)
    else:
        ax_curve.text(
            0.5,
            0.5,
            "no val/loss curves\n(no metrics.jsonl with val/loss in the runs)",
            ha="center",
            va="center",
            color="0.4",
            transform=ax_curve.transAxes,
        )
        ax_curve.set_xticks([])
        ax_curve.set_yticks([])
    fig.savefig(out, dpi=100, format="png")


def compare(
    run_dirs: Sequence[PathLike], out_dir: PathLike | None = None, *, quiet: bool = True
) -> dict[str, Any]:
    """Compare runs: write ``comparison.md`` and ``comparison.png`` into ``out_dir``.

    Args:
        run_dirs: Run directories and/or directories holding runs (a Hydra multirun).
        out_dir: Where to write (default: the single directory given, else the current one).
        quiet: Do not print the table.

    Returns:
        ``{"runs": [row, ...], "domains": [...], "table": markdown, "markdown": Path,
        "png": Path}``; a row has ``label``, ``dir``, ``reweight``, ``val/loss``,
        ``domain_mean``, ``worst``, ``per_domain`` (name -> loss), ``steps`` and ``seconds``.

    Raises:
        FileNotFoundError, ValueError: See :func:`find_runs` and :func:`load_run`.
    """
    if isinstance(run_dirs, str | os.PathLike):
        run_dirs = [run_dirs]
    runs = [load_run(path) for path in find_runs(run_dirs)]
    rows, domains = _rows(runs)
    if out_dir is None:
        out_dir = run_dirs[0] if len(run_dirs) == 1 else Path.cwd()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = _markdown(rows, domains)
    markdown = out / "comparison.md"
    markdown.write_text(
        f"# Comparison of {len(rows)} runs\n\n{table}\nRuns:\n\n"
        + "".join(f"- `{row['label']}`: {row['dir']}\n" for row in rows),
        encoding="utf-8",
    )
    png = out / "comparison.png"
    _plot(runs, rows, domains, png)
    if not quiet:
        print(table)
        print(f"wrote {markdown} and {png}")
    return {"runs": rows, "domains": domains, "table": table, "markdown": markdown, "png": png}


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python recipes/compare.py RUN_DIR [RUN_DIR ...] [--out DIR]``."""
    parser = argparse.ArgumentParser(
        description="Compare recipes/train.py runs: a table and a plot of validation loss."
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run or multirun directories")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default: the single directory given, else the current one)",
    )
    args = parser.parse_args(argv)
    try:
        compare(args.runs, args.out, quiet=False)
    except (FileNotFoundError, ValueError) as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    # Run as a script (python recipes/compare.py): make the repository root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
