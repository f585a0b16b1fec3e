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

import dataclasses
import json
import math
import platform
import statistics
import sys
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "compose_experiment",
    "corpus_manifest",
    "markdown_table",
    "mean_std",
    "overridden",
    "override_list",
    "pm",
    "settings_from_node",
    "write_report",
]

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
_T = TypeVar("_T")


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


def compose_experiment(name: str, overrides: Sequence[str] = ()) -> Any:
    """``conf/train.yaml`` composed with ``experiment=<name>`` and Hydra ``overrides``
    (``key=value`` strings, as on a Hydra command line); raises Hydra's errors for a bad one.

    Example:
        >>> cfg = compose_experiment("upsample_numeric", ["numeric_study.seeds=[4]"])
        >>> list(cfg.numeric_study.seeds)
        [4]
    """
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=[f"experiment={name}", *overrides])


def settings_from_node(cls: type[_T], node: Any, prefix: str, drop: Sequence[str] = ()) -> _T:
    """A dataclass ``cls`` built from a composed config node (or a mapping): every field from
    the node, none missing and none extra (``drop``: keys of the node that are not fields);
    lists become tuples, and an int given for a ``float`` field becomes a float. ``prefix``
    (the node's key) names the keys in errors. Raises ValueError."""
    from omegaconf import DictConfig, OmegaConf

    plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    if not isinstance(plain, Mapping):
        raise ValueError(f"{prefix} must be a mapping of settings, got {plain!r}.")
    values = {str(k): v for k, v in plain.items() if k not in drop}
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    missing = [n for n in names if n not in values]
    unknown = sorted(set(values) - set(names))
    if missing or unknown:
        raise ValueError(
            f"{prefix}: missing keys {missing}, unknown keys {unknown}; the settings are "
            f"{names} (see conf/experiment/)."
        )
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if isinstance(value, list):
            values[name] = tuple(value)
        elif hints[name] is float and isinstance(value, int) and not isinstance(value, bool):
            values[name] = float(value)
    return cls(**values)


def overridden(overrides: Sequence[str], key: str) -> bool:
    """Whether one of the Hydra ``overrides`` sets ``key`` (``key=...``, ``+key=...``).

    Example:
        >>> overridden(["s.steps=40", "s.lr=0.1"], "s.steps"), overridden(["s.steps=4"], "s.step")
        (True, False)
    """
    return any(o.split("=", 1)[0].lstrip("+~") == key for o in overrides)


def override_list(prefix: str, values: Mapping[str, Any]) -> list[str]:
    """Hydra overrides that set ``prefix.<key>`` to each value (lists, null, booleans).

    Example:
        >>> override_list("s", {"steps": 300, "marks": [50, 100], "grid": None})
        ['s.steps=300', 's.marks=[50,100]', 's.grid=null']
    """

    def text(value: Any) -> str:
        if value is None:
            return "null"
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, (list, tuple)):
            return "[" + ",".join(text(v) for v in value) + "]"
        return str(value)

    return [f"{prefix}.{key}={text(value)}" for key, value in values.items()]
