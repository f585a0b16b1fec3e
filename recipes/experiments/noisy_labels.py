"""Noisy labels: loss-priority sampling chases them, reducible-loss (RHO-LOSS) sampling does not.

    python recipes/experiments/noisy_labels.py                 # 3 methods × 3 seeds, ~1 min
    python recipes/experiments/noisy_labels.py noisy_study.seeds=[0] noisy_study.steps=300

Settings: ``conf/experiment/noisy_labels.yaml``, key ``noisy_study`` (the script composes
``conf/train.yaml`` with ``experiment=noisy_labels``; Hydra-style ``key=value`` arguments
override it; overriding ``noisy_study.steps`` alone sets ``curve_every`` to steps // 120).

Claim. Mindermann et al. (2022), "Prioritized Training on Points that are Learnable, Worth
Learning, and Not Yet Learnt" (RHO-LOSS): on data where a share of the labels is noise,
selecting high-*loss* points keeps selecting the noisy ones (their loss never goes down), while
selecting high-*reducible*-loss points (training loss − the loss of an "irreducible loss
model" trained on held-out data) does not: a noisy point's loss is high under both models.

Setup (the yaml's settings; every draw from ``numpy.random.default_rng(seed)``, the
model's initialisation from ``torch.Generator().manual_seed(seed)``, the batches from the
Reweighter's own seeded sampler; the global RNGs are not touched):

* data: ``d = 20`` Gaussian inputs, ``K = 4`` classes labelled by a fixed random teacher with
  one hidden layer of 16 centred ReLU features (classes roughly balanced); inputs whose teacher
  margin (top-1 minus top-2 score, scores of variance ≈ 1) is below 0.1 are redrawn (≈ 12 %);
* ``N = 8,000`` training items, 20 % of them (fixed per item) *noisy*: the label is redrawn
  uniformly from the K classes (so ≈ 15 % of the items are *mislabelled*, a quarter of the
  redraws hit the true class); a held-out set of 8,000 items with the same noise; a clean test
  set of 4,000;
* model: a one-hidden-layer ReLU MLP (width 64), plain SGD (lr 0.05, no momentum), batches of
  64, 3,000 steps (24 epochs' worth of draws), per-sample cross-entropy reduced by
  ``Reweighter.reduce``; the same initialisation for every method of a seed;
* irreducible losses: the same model trained the same way on the held-out set (uniform draws,
  plain mean loss); its cross-entropy on each training item is ``reference``;
* methods: ``uniform`` (a Reweighter with no sources), ``loss_priority``
  (``LossPriority``) and ``reducible_loss`` (``ReducibleLoss(reference=...)``), both in
  ``mode="sample"`` with the same options: ``priority="rank"``, ``pressure=100`` (the
  library's default: the top item is drawn 100× as often as the bottom one), ``decay=0.9``
  (the default EMA), ``refresh_every=20`` (150 full re-rankings in the run).

Only the baseline was tuned: SGD's learning rate, momentum and the step count were picked for
``uniform``'s clean test error (lr 0.02–0.2, momentum 0 or 0.9, 3,000 or 6,000 steps; 0.05
without momentum was best, 6,000 steps barely better); the priority options are the library's
defaults plus a refresh interval short for this run length, set before any comparison.

Reported per method, mean ± population std over seeds 0, 1, 2: the share of noisy (and of
mislabelled) items among all drawn items, the clean test error at the end, and the final mean
training cross-entropy over the clean and over the noisy training items. Measured with the
command above (50–60 s on 2 busy CPU cores, one torch thread):

    method            noisy drawn  mislabelled drawn     test error     CE clean     CE noisy
    uniform         0.200 ± 0.001      0.150 ± 0.003  0.124 ± 0.013  0.45 ± 0.01  2.05 ± 0.03
    loss_priority   0.439 ± 0.003      0.404 ± 0.003  0.274 ± 0.018  1.10 ± 0.01  1.35 ± 0.00
    reducible_loss  0.151 ± 0.002      0.097 ± 0.003  0.112 ± 0.010  0.40 ± 0.01  2.48 ± 0.02

(the held-out model's own clean test error: 0.117 ± 0.008). As claimed: loss priority draws
noisy items at more than twice the noise rate from the first few hundred steps on, fits them
(train CE on noisy items 1.35 against 2.05 uniform) and ends with more than twice uniform's
test error; reducible loss draws them below the noise rate (most clearly early on, about 0.11
in the first 300 steps, drifting back toward 0.18 as the model converges and the reducible
losses shrink toward zero) and ends with a lower test error than uniform on each of the
three seeds (0.098/0.118/0.119 against 0.106/0.133/0.134). Keep in mind that reducible loss
also benefits from the held-out set's 8,000 extra labels, through its irreducible-loss model.

Outputs: ``OUT/noisy_labels.md`` (the table and settings), ``OUT/noisy_labels.json`` (config,
summary, every run with its curve) and, when matplotlib is installed, ``OUT/noisy_labels.png``
(the noisy share drawn over training per method). ``OUT`` (``--out``, default
``results/noisy_labels``) gets a ``.gitignore`` of ``*`` when this script creates it, so
results stay out of git.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `reweight` and `recipes` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
import torch
import torch.nn.functional as F

import reweight
from recipes.experiments.report import compose_experiment, overridden, settings_from_node

EXPERIMENT = "noisy_labels"  # conf/experiment/noisy_labels.yaml
NODE = "noisy_study"  # its settings' key
METHODS = ("uniform", "loss_priority", "reducible_loss")
DEFAULT_OUT = Path("results") / "noisy_labels"
_HOLDOUT_SEED = 10_000  # the held-out model's draws: another stream than the training runs'


@dataclass(frozen=True)
class Config:
    """The experiment's settings: ``noisy_study`` of ``conf/experiment/noisy_labels.yaml`` (the
    one place their values live, every key commented there; :func:`load_config` reads it)."""

    seeds: tuple[int, ...]
    dim: int
    classes: int
    teacher_hidden: int
    margin: float
    noise: float
    num_items: int
    num_holdout: int
    num_test: int
    hidden: int
    steps: int
    batch_size: int
    lr: float
    momentum: float
    pressure: float
    decay: float
    refresh_every: int
    curve_every: int

    def validate(self) -> None:
        """Raises ValueError naming the bad field, its value and the fix."""
        bad = [s for s in self.seeds if isinstance(s, bool) or not isinstance(s, int) or s < 0]
        if not self.seeds or bad:
            raise ValueError(
                f"seeds must be a non-empty list of integers >= 0, got {list(self.seeds)!r}."
            )
        ints = ("dim", "num_items", "num_holdout", "num_test", "steps", "batch_size")
        for name in (*ints, "refresh_every", "curve_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        if isinstance(self.classes, bool) or not isinstance(self.classes, int) or self.classes < 2:
            raise ValueError(f"classes must be an integer >= 2, got {self.classes!r}.")
        for name, zero in (("hidden", "logistic regression"), ("teacher_hidden", "linear")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0 (0: {zero}), got {value!r}.")
        if not 0.0 <= self.noise < 1.0:
            raise ValueError(f"noise must lie in [0, 1), got {self.noise!r}.")
        if not 0.0 <= self.margin < 1.0:  # scores have variance ~1: keep most inputs
            raise ValueError(f"margin must lie in [0, 1), got {self.margin!r}.")
        for name in ("lr", "pressure"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum!r}.")
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1), got {self.decay!r}.")


def load_config(overrides: Sequence[str] = ()) -> Config:
    """The settings the command line runs with: ``conf/train.yaml`` composed with
    ``experiment=noisy_labels`` and the Hydra ``overrides``, its ``noisy_study`` node,
    validated. Overriding ``steps`` alone sets ``curve_every`` to ``max(1, steps // 120)``.

    Example:
        >>> c = load_config(["noisy_study.seeds=[0]", "noisy_study.steps=300"])
        >>> c.seeds, c.steps, c.curve_every, c.num_items
        ((0,), 300, 2, 8000)
    """
    node = compose_experiment(EXPERIMENT, overrides)[NODE]
    config = settings_from_node(Config, node, NODE)
    if overridden(overrides, f"{NODE}.steps") and not overridden(overrides, f"{NODE}.curve_every"):
        config = replace(config, curve_every=max(1, config.steps // 120))
    config.validate()
    return config


@functools.cache
def default_config() -> Config:
    """:func:`load_config` without overrides (cached): the yaml's settings."""
    return load_config()


@dataclass(frozen=True)
class Problem:
    """Training items (some with noisy labels), a held-out set like them, a clean test set."""

    x: torch.Tensor
    y: torch.Tensor
    noisy: np.ndarray  # the label was redrawn uniformly at random
    mislabelled: np.ndarray  # ... and differs from the teacher's
    x_holdout: torch.Tensor
    y_holdout: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


@dataclass(frozen=True)
class Teacher:
    """Class scores ``x · W`` (linear) or ``h(x) · W`` with ``h`` a layer of centred,
    unit-variance ReLU features (so no class dominates); every score has variance about 1."""

    hidden: np.ndarray | None  # (dim, teacher_hidden) or None
    out: np.ndarray  # (dim or teacher_hidden, classes)

    def scores(self, x: np.ndarray) -> np.ndarray:
        """The class scores of inputs ``x`` (rows)."""
        if self.hidden is None:
            return x @ self.out
        scale = np.linalg.norm(self.hidden, axis=0)  # std of each pre-activation
        mean, var = 1.0 / math.sqrt(2.0 * math.pi), 0.5 - 1.0 / (2.0 * math.pi)
        features = (np.maximum(x @ self.hidden, 0.0) / scale - mean) / math.sqrt(var)
        return features @ self.out


def make_teacher(rng: np.random.Generator, config: Config) -> Teacher:
    """A random teacher (linear when ``teacher_hidden`` is 0)."""
    hidden = None
    width = config.dim
    if config.teacher_hidden:
        hidden = rng.standard_normal((config.dim, config.teacher_hidden))
        width = config.teacher_hidden
    out = rng.standard_normal((width, config.classes)) / math.sqrt(width)
    return Teacher(hidden, out)


def _inputs(
    rng: np.random.Generator, teacher: Teacher, dim: int, count: int, margin: float
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` Gaussian inputs whose teacher margin is >= ``margin``, and their clean labels."""
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    have = 0
    while have < count:
        x = rng.standard_normal((2 * (count - have) + 16, dim))
        scores = teacher.scores(x)
        top2 = np.sort(scores, axis=1)[:, -2:]
        keep = top2[:, 1] - top2[:, 0] >= margin
        xs.append(x[keep])
        ys.append(scores[keep].argmax(axis=1))
        have += int(keep.sum())
    return np.concatenate(xs)[:count], np.concatenate(ys)[:count]


def _noisy_labels(
    rng: np.random.Generator, y: np.ndarray, classes: int, noise: float
) -> tuple[np.ndarray, np.ndarray]:
    """Redraws the labels of a ``noise`` share of the items uniformly at random (returns the
    labels and which items were redrawn)."""
    noisy = np.zeros(y.size, dtype=bool)
    noisy[rng.choice(y.size, size=round(noise * y.size), replace=False)] = True
    y = y.copy()
    y[noisy] = rng.integers(0, classes, size=int(noisy.sum()))
    return y, noisy


def make_problem(config: Config, seed: int) -> Problem:
    """The data of one seed, all from ``numpy.random.default_rng(seed)``.

    Example:
        >>> c = replace(default_config(), num_items=100, num_holdout=50, num_test=30)
        >>> p = make_problem(c, seed=0)
        >>> tuple(p.x.shape), int(p.noisy.sum()), bool(p.mislabelled[~p.noisy].any())
        ((100, 20), 20, False)
    """
    config.validate()
    rng = np.random.default_rng(seed)
    teacher = make_teacher(rng, config)
    x, clean = _inputs(rng, teacher, config.dim, config.num_items, config.margin)
    y, noisy = _noisy_labels(rng, clean, config.classes, config.noise)
    x_hold, clean_hold = _inputs(rng, teacher, config.dim, config.num_holdout, config.margin)
    y_hold, _ = _noisy_labels(rng, clean_hold, config.classes, config.noise)
    x_test, y_test = _inputs(rng, teacher, config.dim, config.num_test, config.margin)
    return Problem(
        x=torch.from_numpy(x).float(),
        y=torch.from_numpy(y),
        noisy=noisy,
        mislabelled=y != clean,
        x_holdout=torch.from_numpy(x_hold).float(),
        y_holdout=torch.from_numpy(y_hold),
        x_test=torch.from_numpy(x_test).float(),
        y_test=torch.from_numpy(y_test),
    )


def make_model(config: Config, seed: int) -> torch.nn.Module:
    """Logistic regression (``hidden=0``) or a one-hidden-layer ReLU MLP, initialised from
    ``torch.Generator().manual_seed(seed)`` (built on the meta device first, so torch's
    default initialisation does not draw from the global RNG).

    Example:
        >>> state = torch.random.get_rng_state()
        >>> a, b = make_model(default_config(), 0), make_model(default_config(), 0)
        >>> torch.equal(a[0].weight, b[0].weight), torch.equal(state, torch.random.get_rng_state())
        (True, True)
    """
    gen = torch.Generator().manual_seed(seed)
    widths = [config.dim, *([config.hidden] if config.hidden else []), config.classes]
    layers: list[torch.nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(widths):
        if layers:
            layers.append(torch.nn.ReLU())
        layers.append(torch.nn.Linear(fan_in, fan_out, device="meta"))
    model = torch.nn.Sequential(*layers).to_empty(device="cpu")
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, torch.nn.Linear):  # torch's default range, zero bias
                bound = 1.0 / math.sqrt(layer.in_features)
                layer.weight.copy_((torch.rand(layer.weight.shape, generator=gen) * 2 - 1) * bound)
                layer.bias.zero_()
    return model


def make_reweighter(
    method: str, config: Config, seed: int, reference: np.ndarray | None = None
) -> reweight.Reweighter:
    """The Reweighter of one method: no sources (uniform), LossPriority or ReducibleLoss, the
    two priority sources with the same options, both in mode ``"sample"``."""
    options: dict[str, Any] = {
        "mode": "sample",
        "priority": "rank",
        "pressure": config.pressure,
        "decay": config.decay,
        "refresh_every": config.refresh_every,
    }
    sources: list[Any]
    if method == "uniform":
        sources = []
    elif method == "loss_priority":
        sources = [reweight.LossPriority(**options)]
    elif method == "reducible_loss":
        if reference is None:
            raise ValueError("reducible_loss needs the irreducible losses (reference=...).")
        sources = [reweight.ReducibleLoss(reference=reference, **options)]
    else:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}.")
    return reweight.Reweighter(config.num_items, sources=sources, seed=seed, infinite=True)


def train(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    rw: reweight.Reweighter,
    config: Config,
) -> np.ndarray:
    """Trains ``model`` on (x, y) with batches drawn from ``rw.sampler``, the loss reduced by
    ``rw``; returns the drawn indices, shape (steps, batch_size)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    draws = iter(rw.sampler)
    drawn = np.empty((config.steps, config.batch_size), dtype=np.int64)
    for step in range(config.steps):
        idx = [next(draws) for _ in range(config.batch_size)]
        drawn[step] = idx
        index = torch.tensor(idx, dtype=torch.int64)
        per_sample = F.cross_entropy(model(x[index]), y[index], reduction="none")
        loss = rw.reduce(per_sample, {"index": index})
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        rw.step()
    return drawn


def _per_item_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return F.cross_entropy(model(x), y, reduction="none").double().numpy()


def _error(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(dim=1) != y).double().mean())


def holdout_model(problem: Problem, config: Config, seed: int) -> torch.nn.Module:
    """RHO-LOSS's irreducible-loss model: the same kind of model, trained on the held-out set
    with uniform draws and the plain mean loss, for the same steps."""
    model = make_model(config, seed)
    rw = reweight.Reweighter(config.num_holdout, seed=seed + _HOLDOUT_SEED, infinite=True)
    train(model, problem.x_holdout, problem.y_holdout, rw, config)
    return model


def irreducible_losses(problem: Problem, config: Config, seed: int) -> np.ndarray:
    """The irreducible loss of every training item: the held-out model's cross-entropy on it."""
    return _per_item_loss(holdout_model(problem, config, seed), problem.x, problem.y)


def run(
    method: str,
    seed: int,
    config: Config,
    problem: Problem | None = None,
    reference: np.ndarray | None = None,
) -> dict[str, Any]:
    """Trains one model with one method's sampler; returns what it drew and how it ended.

    Args:
        method: one of :data:`METHODS`.
        seed: seeds the data, the model's initialisation and the sampler's draws.
        config: the experiment's knobs.
        problem: the data (default: ``make_problem(config, seed)``).
        reference: irreducible losses for ``reducible_loss`` (default: computed).

    Returns:
        A JSON-able dict: ``noisy_share`` (share of all drawn items whose label is noisy),
        ``mislabelled_share`` (... whose label differs from the teacher's), ``test_error``
        (clean test set, at the end), ``train_loss_clean`` / ``train_loss_noisy`` (mean
        cross-entropy at the end over the clean / noisy training items) and ``curve`` (the
        noisy share drawn in windows of ``curve_every`` steps).

    Example:
        >>> c = replace(default_config(), num_items=200, num_holdout=200, num_test=200, steps=20)
        >>> out = run("uniform", 0, c)
        >>> out["noisy_share"] > 0, len(out["curve"]["step"])
        (True, 1)
    """
    config.validate()
    problem = problem if problem is not None else make_problem(config, seed)
    if reference is None and method == "reducible_loss":
        reference = irreducible_losses(problem, config, seed)
    model = make_model(config, seed)
    rw = make_reweighter(method, config, seed, reference)
    drawn = train(model, problem.x, problem.y, rw, config)
    every = config.curve_every
    per_step = problem.noisy[drawn].mean(axis=1)
    starts = range(0, config.steps, every)
    losses = _per_item_loss(model, problem.x, problem.y)
    clean = ~problem.noisy
    return {
        "method": method,
        "seed": seed,
        "noisy_share": float(problem.noisy[drawn].mean()),
        "mislabelled_share": float(problem.mislabelled[drawn].mean()),
        "test_error": _error(model, problem.x_test, problem.y_test),
        "train_loss_clean": float(losses[clean].mean()) if clean.any() else None,
        "train_loss_noisy": float(losses[problem.noisy].mean()) if problem.noisy.any() else None,
        "curve": {
            "step": [min(i + every, config.steps) for i in starts],
            "noisy_share": [float(per_step[i : i + every].mean()) for i in starts],
        },
    }


def run_all(
    config: Config, seeds: Sequence[int], methods: Sequence[str] = METHODS
) -> list[dict[str, Any]]:
    """Every method on every seed; the data and the held-out model are made once per seed
    (each run also carries ``holdout_test_error``, the held-out model's clean test error)."""
    runs = []
    for seed in seeds:
        problem = make_problem(config, seed)
        reference = holdout_error = None
        if "reducible_loss" in methods:
            model = holdout_model(problem, config, seed)
            reference = _per_item_loss(model, problem.x, problem.y)
            holdout_error = _error(model, problem.x_test, problem.y_test)
        for method in methods:
            item = run(method, seed, config, problem, reference)
            runs.append({**item, "holdout_test_error": holdout_error})
    return runs


def _mean_std(values: Sequence[float | None]) -> list[float] | None:
    """[mean, population std] of the values that are not None (std 0 for one value)."""
    kept = [v for v in values if v is not None]
    if not kept:
        return None
    return [statistics.fmean(kept), statistics.pstdev(kept) if len(kept) > 1 else 0.0]


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per method, [mean, std] over seeds of every reported number, and the mean curve."""
    by: dict[str, list[dict[str, Any]]] = {}
    for item in runs:
        by.setdefault(item["method"], []).append(item)
    out: dict[str, dict[str, Any]] = {}
    for method, items in by.items():
        row: dict[str, Any] = {"seeds": len(items)}
        for key in _REPORTED:
            row[key] = _mean_std([i[key] for i in items])
        curves = np.array([i["curve"]["noisy_share"] for i in items])
        row["curve"] = {"step": items[0]["curve"]["step"], "noisy_share": curves.mean(0).tolist()}
        out[method] = row
    return out


_REPORTED = (
    "noisy_share",
    "mislabelled_share",
    "test_error",
    "train_loss_clean",
    "train_loss_noisy",
)
LEGEND = (
    "noisy drawn / mislabelled drawn: share of all drawn items whose label was redrawn / "
    "differs from the teacher's; test error: on the clean test set at the end; CE clean / "
    "CE noisy: final mean training cross-entropy over the clean / noisy training items."
)
_HEADERS = (
    "method",
    "noisy drawn",
    "mislabelled drawn",
    "test error",
    "CE clean",
    "CE noisy",
)


def _cells(summary: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = []
    for method, row in summary.items():
        cells = [method]
        for key in _REPORTED:
            cell = row[key]
            digits = 2 if key.startswith("train_loss") else 3
            cells.append("-" if cell is None else f"{cell[0]:.{digits}f} ± {cell[1]:.{digits}f}")
        rows.append(cells)
    return rows


def format_table(summary: dict[str, dict[str, Any]]) -> str:
    """A readable fixed-width table of :func:`summarize`'s output (mean ± std over seeds)."""
    rows = [list(_HEADERS), *_cells(summary)]
    widths = [max(len(r[j]) for r in rows) for j in range(len(_HEADERS))]
    lines = [
        "  ".join(
            c.ljust(w) if j == 0 else c.rjust(w)
            for j, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def format_markdown(summary: dict[str, dict[str, Any]]) -> str:
    """The same table in Markdown."""
    lines = ["| " + " | ".join(_HEADERS) + " |", "|" + "---|" * len(_HEADERS)]
    lines += ["| " + " | ".join(cells) + " |" for cells in _cells(summary)]
    return "\n".join(lines)


def describe(config: Config, seeds: Sequence[int]) -> str:
    """One paragraph with every setting of the run."""
    teacher = (
        f"a one-hidden-layer ReLU teacher (width {config.teacher_hidden})"
        if config.teacher_hidden
        else "a linear teacher"
    )
    model = (
        f"a one-hidden-layer ReLU MLP (width {config.hidden})"
        if config.hidden
        else "logistic regression"
    )
    return (
        f"{config.classes} classes from {teacher} on d={config.dim} Gaussian inputs (teacher "
        f"margin >= {config.margin}); N={config.num_items} training items, {config.noise:.0%} "
        f"of them with a label redrawn uniformly at random (noisy); held-out set "
        f"{config.num_holdout} items with the same noise; clean test set {config.num_test}. "
        f"Model: {model}, SGD lr={config.lr}, momentum={config.momentum}, batch "
        f"{config.batch_size}, {config.steps} steps, same initialisation for every method. "
        f"Priority sources (both): mode='sample', priority='rank', pressure={config.pressure:g}, "
        f"decay={config.decay}, refresh_every={config.refresh_every}. Seeds "
        f"{', '.join(map(str, seeds))}; mean ± population std over seeds."
    )


def plot(summary: dict[str, dict[str, Any]], config: Config, path: Path) -> bool:
    """A PNG of the noisy share drawn over training per method (mean over seeds); False
    when matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure  # optional; no pyplot, no global backend state
    except ImportError:
        return False
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    for method, row in summary.items():
        ax.plot(row["curve"]["step"], row["curve"]["noisy_share"], label=method, lw=1.5)
    ax.axhline(config.noise, color="grey", ls="--", lw=1, label="noise rate")
    ax.set_xlabel("step")
    ax.set_ylabel(f"noisy share of drawn items (per {config.curve_every} steps)")
    ax.set_ylim(0, 1)
    ax.set_title("Which items does each sampler draw?")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=120)
    return True


def _prepare_out(out: Path) -> None:
    """Creates ``out``; a directory it creates gets a ``.gitignore`` of ``*`` (results are not
    for git, wherever they are written)."""
    if out.exists():
        return
    out.mkdir(parents=True)
    (out / ".gitignore").write_text("# written by recipes/experiments/noisy_labels.py\n*\n")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The command line: runs every method on every seed, prints the table, writes
    ``OUT/noisy_labels.md``, ``OUT/noisy_labels.json`` and (with matplotlib)
    ``OUT/noisy_labels.png``; returns the JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "overrides",
        nargs="*",
        help=f"Hydra overrides of conf/experiment/{EXPERIMENT}.yaml, e.g. {NODE}.steps=300",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    args = parser.parse_intermixed_args(argv)
    from hydra.errors import HydraException

    try:
        config = load_config(args.overrides)
    except (ValueError, TypeError, HydraException) as err:
        parser.error(str(err))
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}.")
    seeds = list(config.seeds)

    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)  # tiny models: one thread is fastest
    start = time.perf_counter()
    try:
        runs = run_all(config, seeds)
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - start
    summary = summarize(runs)
    holdout = _mean_std([r["holdout_test_error"] for r in runs if r["method"] == METHODS[0]])
    settings = describe(config, seeds)
    table = format_table(summary)
    result: dict[str, Any] = {
        "config": asdict(config),
        "seeds": seeds,
        "settings": settings,
        "summary": summary,
        "holdout_test_error": holdout,
        "runs": runs,
        "seconds": seconds,
    }
    _prepare_out(args.out)
    holdout_text = "" if holdout is None else f"{holdout[0]:.3f} ± {holdout[1]:.3f}"
    note = (
        f"Noise rate {config.noise:.0%} (uniform draws ≈ it). The held-out (irreducible-loss) "
        f"model's clean test error: {holdout_text}. Run time {seconds:.0f} s."
    )
    command = "python recipes/experiments/noisy_labels.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    (args.out / "noisy_labels.md").write_text(
        "# Noisy labels: loss priority vs reducible loss (RHO-LOSS)\n\n"
        f"`{command.strip()}`\n\n{settings}\n\n{format_markdown(summary)}\n\n{LEGEND}\n\n"
        f"{note}\n"
    )
    (args.out / "noisy_labels.json").write_text(json.dumps(result, indent=1, allow_nan=False))
    plotted = not args.no_plot and plot(summary, config, args.out / "noisy_labels.png")
    print(settings)
    print(LEGEND)
    print(table)
    print(note)
    print(f"wrote {args.out}/noisy_labels.md, .json" + (", .png" if plotted else ""))
    return result


if __name__ == "__main__":
    main()
