"""What every experiment writes: a Markdown table, a JSON record and a PNG, with the spread over
seeds and the data's manifest.

Example:
    >>> mean_std([1.0, 2.0, 3.0])
    (2.0, 0.816496580927726)
    >>> print(markdown_table(["arm", "loss"], [["uniform", "1.00 ± 0.01"]]))
    | arm | loss |
    |---|---|
    | uniform | 1.00 ± 0.01 |
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["corpus_manifest", "markdown_table", "mean_std", "pm", "write_report"]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation (NaN for no values)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), statistics.pstdev(finite)


def pm(values: Sequence[float], spec: str = ".4f") -> str:
    """``mean ± std`` of ``values``, formatted with ``spec``.

    Example:
        >>> pm([1.0, 3.0], ".1f")
        '2.0 ± 1.0'
    """
    mean, std = mean_std(values)
    return f"{mean:{spec}} ± {std:{spec}}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def corpus_manifest(corpus: Any) -> dict[str, Any]:
    """What a result depends on in the data: the Python version the built-in corpus was read
    from, the domain names and sizes (the built-in corpus differs between Python versions)."""
    manifest = dict(getattr(corpus, "manifest", {}) or {})
    names = list(corpus.domain_names)
    counts = [int((corpus.domains == d).sum()) for d in range(len(names))]
    keep = ("key", "format", "num_docs", "seq_len")
    return {
        "python": manifest.get("python_version", platform.python_version()),
        "domains": dict(zip(names, counts, strict=True)),
        "largest_to_smallest": max(counts) / max(1, min(counts)),
        "build": {k: manifest[k] for k in keep if k in manifest},
    }


def write_report(
    out_dir: str | Path,
    name: str,
    *,
    markdown: str,
    record: Mapping[str, Any],
    figure: Any = None,
) -> list[Path]:
    """Writes ``name.md``, ``name.json`` and (when ``figure`` is a matplotlib figure)
    ``name.png`` into ``out_dir``; returns their paths. The JSON record gets the command line
    and the machine."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.md", out / f"{name}.json"]
    paths[0].write_text(markdown.rstrip() + "\n")
    full = {
        **record,
        "command": " ".join(sys.argv),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }
    paths[1].write_text(json.dumps(full, indent=2, sort_keys=True, default=str) + "\n")
    if figure is not None:
        paths.append(out / f"{name}.png")
        figure.savefig(paths[-1], dpi=120, bbox_inches="tight")
    return paths
