"""Sow et al. (2025)'s linear-regression finding, reproduced with the library as a user would.

    python recipes/experiments/linreg_sow.py            # 4 strategies × 5 seeds + lr grid (~2 min)
    python recipes/experiments/linreg_sow.py --json     # also one JSON object on stdout
    python recipes/experiments/linreg_sow.py --quick    # a smoke run (seconds)
    python recipes/experiments/linreg_sow.py linreg_study.lr_grid=null \
        linreg_study.strategies=[uniform,linupper,hard] linreg_study.seeds=[0,1,2]

Settings: ``conf/experiment/linreg_sow.yaml``, key ``linreg_study`` (the script composes
``conf/train.yaml`` with ``experiment=linreg_sow``; Hydra-style ``key=value`` arguments
override it). Outputs: ``OUT/linreg_sow.md`` (settings and both tables), ``OUT/linreg_sow.json``
(settings, summaries, every run with its curve) and ``OUT/linreg_sow.png`` (test-MSE curves per
strategy at the fixed rate, mean over seeds with a min–max band; steps to the target against
the learning rate); ``OUT`` is ``results/linreg_sow`` unless ``--out`` says otherwise.

Claim under test. "Dynamic Loss-Based Sample Reweighting for Improved Large Language Model
Pretraining" (Sow, Woisetschläger, Bulusu, Wang, Jacobsen, Liang; ICLR 2025) weights each
sample of a batch by ``softmax(f(h)/r)`` of its min–max normalised loss ``h ∈ [−1, 1]`` and
finds that deprioritising low-loss ("redundant or uninformative") samples works best. Besides
the LLM runs, their Figure 7 shows test loss against training steps on a toy regression
problem: LinUpper converges fastest, Quadratic also beats uniform weighting; the strategy
shapes are drawn with ``r = 1``.

What we could and could not find. Their repository (sowmaster/Sample-Level-Loss-Reweighting-
ICLR-2025) holds only the GPT-2 code: a README, JSON configs, the data scripts and a trainer
fork — no linear-regression script. The pages we could search carry the abstract, the Figure 7
caption and the strategy definitions, not the toy problem's data generation, sizes, noise,
optimizer or step counts. So the setup below is our own small design, built to match the
paper's description ("data with many redundant samples", deprioritising low-loss samples
speeds convergence, ``r = 1``), and every choice is listed here so it can be argued with.

Data (``make_problem``), all from one ``numpy.random.Generator`` seeded by ``seed``:

* ground truth ``w* ~ N(0, I_d)`` rescaled to ‖w*‖ = 1, ``d = 32``;
* ``N = 4,096`` training items; ``redundant_frac = 0.9`` of them are *redundant*: near-duplicates
  of ``prototypes = 8`` prototype points ``p_k ~ N(0, I_d)``, each item ``p_k + jitter · ξ`` with
  ``jitter = 0.05`` (they sit close to an 8-dimensional subspace, make up most of every batch
  and are fitted within 10–20 steps, after which their losses are the lowest of the batch);
* the other 10 % are *informative*: ``x ~ N(0, I_d)``, the only items that pin down the
  remaining 24 directions of ``w*``;
* every training label is ``y = x · w* + noise · ε`` with ``noise = 0.1``, ``ε ~ N(0, 1)``;
* the test set is 2,048 fresh clean points ``x ~ N(0, I_d)``, ``y = x · w*`` (the population
  the informative items come from, without label noise), so the test MSE is ``‖w − w*‖²`` up
  to sampling error.

Training (``run``): a bias-free ``torch.nn.Linear(d, 1)`` started at zero, plain SGD
(``lr = 0.05``, no momentum, no weight decay), batches of 32 drawn from ``reweighter.sampler``
(uniform draws with replacement, seeded by ``seed``), 1,000 steps. The per-sample loss is the
squared error ``(x · w − y)²`` (``F.mse_loss(..., reduction="none")``), reduced with
``Reweighter.reduce`` — the weights are mean 1 over the batch, so the learning rate keeps its
meaning for every strategy. ``r = 1`` (the value of the paper's Figure 7). Burn-in: 20 uniform
steps (the paper uses 1,000 steps in LLM pretraining; here the redundant items' loss reaches
the label-noise floor within about 10–20 steps, so after 20 steps "low loss" means "redundant").
A run whose loss turns non-finite, or whose test MSE exceeds 1,000× its initial value, is
stopped and counted as diverged. The "hard" strategy (``softmax(loss/τ)``, τ = r) is
optional: it weights raw losses, so its temperature is on the loss scale, not the normalised
one.

Measured every 5 steps on the test set: test MSE and ‖w − w*‖, reported at a few
checkpoints, with the first evaluated step whose test MSE falls to ``threshold = 0.01`` × its
initial value (``null`` if never). The JSON object also carries, per run, the mean loss weight
the strategy gave redundant and informative samples while converging (from the burn-in to
the threshold), which shows *how* a strategy moved the gradient.

A fixed learning rate is only half the comparison: mean-1 weights still rescale the step along
each direction (LinUpper moves weight onto the informative samples, like a larger step along
their directions) and change where SGD becomes unstable (a cluster of redundant items that
overshoots gets a high loss and then a high weight). So the command line also runs every
strategy at the rates of ``linreg_study.lr_grid`` (0.08, 0.1, 0.13, plus ``lr``) and reports
each strategy's best rate — the one with the fewest mean steps to the threshold among those
where every seed got there without diverging — and its speedup over uniform's best
(``linreg_study.lr_grid=null`` skips it). ``--quick`` runs a smaller problem (the yaml's
``linreg_study.quick``: d = 16, N = 1,024, 4 prototypes, 300 steps) for smoke tests.

Determinism: data from ``numpy.random.default_rng(seed)``, draws from the sampler's private
generator seeded with ``seed``, zero initialisation, no dropout — the same arguments give the
same numbers (on the same machine and torch build). No global RNG is touched.
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
from typing import Any, cast

if __package__ in (None, ""):  # run as a script: make `reweight` and `recipes` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
import torch
import torch.nn.functional as F

import reweight
from recipes.experiments.report import (
    compose_experiment,
    markdown_table,
    overridden,
    override_list,
    settings_from_node,
    write_report,
)
from reweight.weights import get_strategy

EXPERIMENT = "linreg_sow"  # conf/experiment/linreg_sow.yaml
NODE = "linreg_study"  # its settings' key
DEFAULT_OUT = Path("results") / "linreg_sow"
_DIVERGED = 1e3  # a test MSE above this multiple of the initial one counts as divergence


@dataclass(frozen=True)
class Config:
    """The experiment's settings: ``linreg_study`` of ``conf/experiment/linreg_sow.yaml`` (the
    one place their values live, every key commented there; :func:`load_config` reads it)."""

    strategies: tuple[str, ...]
    seeds: tuple[int, ...]
    lr_grid: tuple[float, ...] | None
    dim: int
    num_items: int
    redundant_frac: float
    prototypes: int
    jitter: float
    noise: float
    num_test: int
    steps: int
    batch_size: int
    lr: float
    r: float
    burn_in_steps: int
    eval_every: int
    threshold: float
    checkpoints: tuple[int, ...]

    def validate(self) -> None:
        """Raises ValueError naming the bad field, its value and the fix."""
        if not self.strategies:
            raise ValueError("strategies is empty; give e.g. [uniform,linupper].")
        for s in self.strategies:
            get_strategy(s)  # an unknown name fails before any training, listing valid ones
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in self.seeds):
            raise ValueError(f"seeds must be a non-empty list of integers, got {self.seeds!r}.")
        if any(not (lr > 0 and math.isfinite(lr)) for lr in self.lr_grid or ()):
            raise ValueError(f"lr_grid rates must be finite and > 0, got {self.lr_grid!r}.")
        positive_ints = ("dim", "num_items", "prototypes", "num_test", "steps", "batch_size")
        for name in (*positive_ints, "eval_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        if not 0.0 <= self.redundant_frac < 1.0:
            raise ValueError(
                f"redundant_frac must lie in [0, 1) (some items must be informative), got "
                f"{self.redundant_frac!r}."
            )
        for name in ("jitter", "noise"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}.")
        for name in ("lr", "r", "threshold"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
        if isinstance(self.burn_in_steps, bool) or self.burn_in_steps < 0:
            raise ValueError(f"burn_in_steps must be an integer >= 0, got {self.burn_in_steps!r}.")
        bad = [c for c in self.checkpoints if not 1 <= c <= self.steps or c % self.eval_every]
        if not self.checkpoints or bad:
            raise ValueError(
                f"checkpoints {list(self.checkpoints)} must be non-empty multiples of eval_every "
                f"({self.eval_every}) in 1..steps ({self.steps}); bad: {bad}."
            )


def _checkpoints(steps: int, every: int) -> tuple[int, ...]:
    """10%, 20%, 50% and 100% of ``steps``, each rounded to a multiple of ``every``."""
    marks = {max(1, round(f * steps / every)) * every for f in (0.1, 0.2, 0.5, 1.0)}
    return tuple(sorted(m for m in marks if m <= steps))


def compose_config(overrides: Sequence[str] = (), quick: bool = False) -> Any:
    """``conf/train.yaml`` with ``experiment=linreg_sow``; ``quick`` applies the yaml's
    ``linreg_study.quick`` before ``overrides`` (so theirs win)."""
    if quick:
        from omegaconf import OmegaConf

        preset = OmegaConf.to_container(compose_experiment(EXPERIMENT)[NODE].quick)
        overrides = [*override_list(NODE, cast(dict, preset)), *overrides]
    return compose_experiment(EXPERIMENT, overrides)


def load_config(overrides: Sequence[str] = (), quick: bool = False) -> Config:
    """The settings the command line runs with: the composed ``linreg_study`` node, validated.
    Overriding ``steps`` alone moves the checkpoints to 10/20/50/100% of the run.

    Example:
        >>> c = load_config(["linreg_study.steps=40"], quick=True)
        >>> c.dim, c.steps, c.checkpoints
        (16, 40, (5, 10, 20, 40))
    """
    config = settings_from_node(
        Config, compose_config(overrides, quick)[NODE], NODE, drop=("quick",)
    )
    if overridden(overrides, f"{NODE}.steps") and not overridden(overrides, f"{NODE}.checkpoints"):
        config = replace(config, checkpoints=_checkpoints(config.steps, config.eval_every))
    config.validate()
    return config


@functools.cache
def default_config(quick: bool = False) -> Config:
    """:func:`load_config` without overrides (cached): the yaml's settings, or its quick ones."""
    return load_config(quick=quick)


@dataclass(frozen=True)
class Problem:
    """One seeded regression problem: training items, clean test set and ground truth."""

    x: torch.Tensor  # (N, d) training inputs
    y: torch.Tensor  # (N,) noisy training labels
    redundant: torch.Tensor  # (N,) bool: near-duplicate of a prototype
    x_test: torch.Tensor  # (num_test, d)
    y_test: torch.Tensor  # (num_test,) clean labels
    w_star: torch.Tensor  # (d,)


def make_problem(config: Config, seed: int) -> Problem:
    """Builds the data set of the module docstring from ``numpy.random.default_rng(seed)``.

    Example:
        >>> p = make_problem(default_config(quick=True), seed=0)
        >>> tuple(p.x.shape), int(p.redundant.sum()), round(float(p.w_star.norm()), 6)
        ((1024, 16), 922, 1.0)
    """
    config.validate()
    rng = np.random.default_rng(seed)
    d, n = config.dim, config.num_items
    w_star = rng.standard_normal(d)
    w_star /= np.linalg.norm(w_star)
    num_redundant = round(config.redundant_frac * n)
    if num_redundant >= n:
        raise ValueError(
            f"redundant_frac={config.redundant_frac} leaves no informative item among {n}; "
            "lower it or raise num_items."
        )
    protos = rng.standard_normal((config.prototypes, d))
    which = rng.integers(0, config.prototypes, size=num_redundant)
    redundant_x = protos[which] + config.jitter * rng.standard_normal((num_redundant, d))
    informative_x = rng.standard_normal((n - num_redundant, d))
    x = np.concatenate([redundant_x, informative_x])
    is_redundant = np.arange(n) < num_redundant
    order = rng.permutation(n)  # interleave so item ids say nothing about the kind
    x, is_redundant = x[order], is_redundant[order]
    y = x @ w_star + config.noise * rng.standard_normal(n)
    x_test = rng.standard_normal((config.num_test, d))
    return Problem(
        x=torch.from_numpy(x).float(),
        y=torch.from_numpy(y).float(),
        redundant=torch.from_numpy(is_redundant),
        x_test=torch.from_numpy(x_test).float(),
        y_test=torch.from_numpy(x_test @ w_star).float(),
        w_star=torch.from_numpy(w_star).float(),
    )


def _evaluate(model: torch.nn.Linear, problem: Problem) -> tuple[float, float]:
    """(test MSE on clean data, ‖w − w*‖)."""
    with torch.no_grad():
        pred = model(problem.x_test).squeeze(1)
        mse = float(F.mse_loss(pred, problem.y_test))
        err = float((model.weight.squeeze(0) - problem.w_star).norm())
    return mse, err


def run(strategy: str, seed: int, config: Config | None = None) -> dict[str, Any]:
    """Trains one model with one loss-weight strategy and returns its curve and summary.

    Args:
        strategy: a :func:`reweight.weights.loss_weights` strategy ("uniform", "linupper",
            "quadratic", "extremes", "upper", "hard", ...).
        seed: seeds the data and the sampler's draws.
        config: the experiment's settings (default: :func:`default_config`).

    Returns:
        A JSON-able dict: ``strategy``, ``seed``, ``initial_test_mse``, ``steps`` (evaluated
        steps), ``test_mse`` and ``param_error`` (one per evaluated step), ``checkpoints`` with
        ``test_mse``/``param_error`` at each, ``steps_to_threshold`` (``None`` if never),
        ``diverged_at`` (the step where SGD blew up, ``None`` if it did not; the curves stop
        there), ``final_test_mse`` and ``final_param_error`` (``None`` if diverged),
        ``mean_weight_redundant`` and ``mean_weight_informative`` (mean loss weight of each
        kind of sample from the burn-in until the threshold was reached; ``None`` if no such
        sample was drawn).

    Example:
        >>> c = replace(default_config(quick=True), steps=20, checkpoints=(20,))
        >>> out = run("linupper", seed=0, config=c)
        >>> out["final_test_mse"] < out["initial_test_mse"]
        True
    """
    config = config or default_config()
    config.validate()
    problem = make_problem(config, seed)
    model = torch.nn.Linear(config.dim, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    rw = reweight.Reweighter(
        config.num_items,
        sources=[reweight.InBatchWeights(strategy, r=config.r, burn_in_steps=config.burn_in_steps)],
        total_steps=config.steps,
        seed=seed,
        infinite=True,
    )
    draws = iter(rw.sampler)

    initial_mse, initial_err = _evaluate(model, problem)
    steps, mses, errs = [0], [initial_mse], [initial_err]
    # per step after the burn-in: (step, Σ weight redundant, count, Σ weight informative, count)
    weight_log: list[tuple[int, float, int, float, int]] = []
    diverged_at: int | None = None
    for step in range(1, config.steps + 1):
        idx = torch.tensor(list(itertools.islice(draws, config.batch_size)), dtype=torch.int64)
        pred = model(problem.x[idx]).squeeze(1)
        per_sample = F.mse_loss(pred, problem.y[idx], reduction="none")
        if not bool(torch.isfinite(per_sample).all()):
            diverged_at = step  # SGD blew up: stop rather than feed inf to the reweighter
            break
        loss = rw.reduce(per_sample, {"index": idx})
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step > config.burn_in_steps:  # reduce() at this step used the strategy's weights
            weights = rw.last_loss_weights  # one per sample, in batch order (one process)
            red = problem.redundant[idx].numpy()
            weight_log.append(
                (
                    step,
                    float(weights[red].sum()),
                    int(red.sum()),
                    float(weights[~red].sum()),
                    int((~red).sum()),
                )
            )
        rw.step()
        if step % config.eval_every == 0:
            mse, err = _evaluate(model, problem)
            if not mse <= _DIVERGED * initial_mse:  # also catches NaN
                diverged_at = step
                break
            steps.append(step)
            mses.append(mse)
            errs.append(err)

    target = config.threshold * initial_mse
    reached = next((s for s, m in zip(steps, mses, strict=True) if m <= target), None)
    at = {s: i for i, s in enumerate(steps)}
    # mean loss weight per kind of sample while converging (after the burn-in, until the
    # threshold is reached, or over the whole run if it never is)
    until = reached if reached is not None else config.steps
    sums = np.array([row[1:] for row in weight_log if row[0] <= until]).reshape(-1, 4).sum(0)
    return {
        "strategy": strategy,
        "seed": seed,
        "lr": config.lr,
        "initial_test_mse": initial_mse,
        "steps": steps,
        "test_mse": mses,
        "param_error": errs,
        "checkpoints": [
            {
                "step": c,
                "test_mse": mses[at[c]] if c in at else None,
                "param_error": errs[at[c]] if c in at else None,
            }
            for c in config.checkpoints
        ],
        "steps_to_threshold": reached,
        "diverged_at": diverged_at,
        "final_test_mse": None if diverged_at is not None else mses[-1],
        "final_param_error": None if diverged_at is not None else errs[-1],
        "mean_weight_redundant": float(sums[0] / sums[1]) if sums[1] else None,
        "mean_weight_informative": float(sums[2] / sums[3]) if sums[3] else None,
    }


def _mean_std(values: Sequence[float]) -> list[float]:
    """[mean, population std] (std 0 for one value)."""
    return [statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0]


def _reached(item: dict[str, Any]) -> int | None:
    """Steps to the threshold, counting a run that later diverged as never reaching it."""
    return None if item["diverged_at"] is not None else item["steps_to_threshold"]


def summarize(runs: Sequence[dict[str, Any]], config: Config) -> dict[str, dict[str, Any]]:
    """Per-strategy statistics over seeds, each strategy against uniform on the same seeds.

    Test MSE and parameter error are averaged over the runs that did not diverge.
    ``steps_to_threshold`` is [mean, std] over the runs that reached it (and did not
    diverge later); ``speedup_vs_uniform`` is uniform's mean steps over the strategy's, on
    the seeds where both reached it; ``wins_vs_uniform`` counts seeds where the strategy
    reached it strictly earlier than uniform did on the same data and draws (or uniform never
    did).

    Example:
        >>> c = replace(default_config(quick=True), steps=20, checkpoints=(20,))
        >>> s = summarize([run("uniform", 0, c), run("linupper", 0, c)], c)
        >>> sorted(s["linupper"])[:4]
        ['diverged', 'param_error_final', 'reached', 'seeds']
    """
    by: dict[str, list[dict[str, Any]]] = {}
    for item in runs:
        by.setdefault(item["strategy"], []).append(item)
    uniform = {item["seed"]: _reached(item) for item in by.get("uniform", [])}
    out: dict[str, dict[str, Any]] = {}
    for strategy, items in by.items():
        alive = [i for i in items if i["diverged_at"] is None]
        row: dict[str, Any] = {"seeds": len(items), "diverged": len(items) - len(alive)}
        for j, c in enumerate(config.checkpoints):
            values = [i["checkpoints"][j]["test_mse"] for i in alive]
            row[f"test_mse@{c}"] = _mean_std(values) if values else None
        errors = [i["final_param_error"] for i in alive]
        row["param_error_final"] = _mean_std(errors) if errors else None
        hits = [h for h in map(_reached, items) if h is not None]
        row["reached"] = len(hits)
        row["steps_to_threshold"] = _mean_std(hits) if hits else None
        for kind in ("redundant", "informative"):
            values = [i[f"mean_weight_{kind}"] for i in items if i[f"mean_weight_{kind}"]]
            row[f"weight_{kind}"] = statistics.fmean(values) if values else None
        pairs = [(uniform[i["seed"]], _reached(i)) for i in items if i["seed"] in uniform]
        both = [(u, s) for u, s in pairs if u is not None and s is not None]
        row["speedup_vs_uniform"] = (
            statistics.fmean(u for u, _ in both) / statistics.fmean(s for _, s in both)
            if both
            else None
        )
        row["wins_vs_uniform"] = sum(1 for u, s in pairs if s is not None and (u is None or s < u))
        out[strategy] = row
    return out


def tune_lr(
    strategies: Sequence[str],
    seeds: Sequence[int],
    config: Config,
    grid: Sequence[float],
    done: Sequence[dict[str, Any]] = (),
) -> dict[str, dict[str, Any]]:
    """Each strategy at every learning rate of ``grid``; its best is the rate with the fewest
    mean steps to the threshold among those where every seed got there without diverging.

    Answers whether a strategy beats uniform weighting once each has its own learning rate:
    loss weights of mean 1 still change the effective step size along each direction, so a
    fixed-rate comparison mixes "better weights" with "a different step size".

    Args:
        strategies, seeds, config: as for :func:`run`; ``config.lr`` is ignored.
        grid: learning rates to try.
        done: runs already made (their ``lr`` is read), reused instead of run again.

    Example:
        >>> c = replace(default_config(quick=True), steps=20, checkpoints=(20,))
        >>> sorted(tune_lr(["uniform"], [0], c, [0.05])["uniform"])
        ['best_lr', 'best_steps', 'by_lr', 'speedup_vs_uniform']
    """
    cache = {(i["strategy"], i["seed"], i["lr"]): i for i in done}
    out: dict[str, dict[str, Any]] = {}
    for strategy in strategies:
        by_lr: dict[str, dict[str, Any]] = {}
        best: tuple[float, float, list[float]] | None = None
        for lr in grid:
            items = [
                cache.get((strategy, seed, lr)) or run(strategy, seed, replace(config, lr=lr))
                for seed in seeds
            ]
            hits = [h for h in map(_reached, items) if h is not None]
            steps = _mean_std(hits) if hits else None
            by_lr[repr(lr)] = {
                "seeds": len(items),
                "reached": len(hits),
                "diverged": sum(i["diverged_at"] is not None for i in items),
                "steps_to_threshold": steps,
            }
            if (
                steps is not None
                and len(hits) == len(items)
                and (best is None or steps[0] < best[1])
            ):
                best = (lr, steps[0], steps)
        out[strategy] = {
            "by_lr": by_lr,
            "best_lr": None if best is None else best[0],
            "best_steps": None if best is None else best[2],
            "speedup_vs_uniform": None,
        }
    base = out.get("uniform", {}).get("best_steps")
    for row in out.values():
        if base is not None and row["best_steps"] is not None:
            row["speedup_vs_uniform"] = base[0] / row["best_steps"][0]
    return out


def _num(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _pm(cell: Sequence[float] | None, spec: str, sep: str) -> str:
    return "-" if cell is None else f"{cell[0]:{spec}}{sep}{cell[1]:{spec}}"


def _steps_text(cell: dict[str, Any], sep: str) -> str:
    """Mean±std steps to the threshold, with ``(k)`` seeds that got there if not all."""
    steps = cell["steps_to_threshold"]
    if steps is None:
        return "never"
    text = _pm(steps, ".0f", sep)
    return text + (f" ({cell['reached']})" if cell["reached"] < cell["seeds"] else "")


def summary_rows(
    summary: dict[str, dict[str, Any]], config: Config, sep: str = "±"
) -> tuple[list[str], list[list[str]]]:
    """The header and rows of :func:`summarize`'s table (mean{sep}std over seeds)."""
    header = [
        "strategy",
        *(f"mse@{c}" for c in config.checkpoints),
        "‖w−w*‖ end",
        "steps→thr",
        "speedup",
        "wins",
        "div",
        "w_red",
        "w_inf",
    ]
    rows = []
    for strategy, row in summary.items():
        mse = [row[f"test_mse@{c}"] for c in config.checkpoints]
        rows.append(
            [
                strategy,
                *("-" if m is None else f"{m[0]:.2e}{sep}{m[1]:.1e}" for m in mse),
                _pm(row["param_error_final"], ".3f", sep),
                _steps_text(row, sep),
                _num(row["speedup_vs_uniform"]),
                f"{row['wins_vs_uniform']}/{row['seeds']}",
                str(row["diverged"]),
                _num(row["weight_redundant"]),
                _num(row["weight_informative"]),
            ]
        )
    return header, rows


def lr_rows(
    tuned: dict[str, dict[str, Any]], grid: Sequence[float], sep: str = "±"
) -> tuple[list[str], list[list[str]]]:
    """The header and rows of :func:`tune_lr`'s table: steps to the threshold per rate."""
    header = ["strategy", *(f"lr={lr!r}" for lr in grid), "best lr", "speedup"]
    rows = []
    for strategy, row in tuned.items():
        cells = [strategy]
        for lr in grid:
            cell = row["by_lr"][repr(lr)]
            text = _steps_text(cell, sep)
            if cell["diverged"]:
                steps = cell["steps_to_threshold"]
                text = f"div {cell['diverged']}/{cell['seeds']}" + (
                    "" if steps is None else f", {steps[0]:.0f} ({cell['reached']})"
                )
            cells.append(text)
        cells += [_num(row["best_lr"], "g"), _num(row["speedup_vs_uniform"])]
        rows.append(cells)
    return header, rows


def _text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A fixed-width table: the first column left-aligned, the others right-aligned."""
    table = [list(header), *map(list, rows)]
    widths = [max(len(r[j]) for r in table) for j in range(len(header))]
    lines = [
        " ".join(
            c.ljust(w) if j == 0 else c.rjust(w)
            for j, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in table
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def format_table(summary: dict[str, dict[str, Any]], config: Config) -> str:
    """A readable table of :func:`summarize`'s output (mean±std over seeds)."""
    return _text_table(*summary_rows(summary, config))


def format_lr_table(tuned: dict[str, dict[str, Any]], grid: Sequence[float]) -> str:
    """A readable table of :func:`tune_lr`'s output: steps to the threshold per rate."""
    return _text_table(*lr_rows(tuned, grid))


def describe(config: Config) -> str:
    """One paragraph with every setting of the run."""
    return (
        f"Sow et al. 2025, linear regression: d={config.dim}, N={config.num_items} "
        f"({config.redundant_frac:.0%} redundant near-duplicates of {config.prototypes} "
        f"prototypes, jitter {config.jitter}), label noise {config.noise}, {config.num_test} "
        f"clean test points; SGD lr={config.lr}, batch {config.batch_size}, {config.steps} "
        f"steps; r={config.r}, burn-in {config.burn_in_steps}; strategies "
        f"{', '.join(config.strategies)}; seeds {', '.join(map(str, config.seeds))}."
    )


def legend(config: Config) -> str:
    """What the columns of the fixed-rate table mean."""
    return (
        "mse@k: clean test MSE at step k (initial = ‖w*‖² ≈ 1), mean±std over seeds; "
        f"steps→thr: first step with test MSE ≤ {config.threshold:g}× initial ((k): seeds that "
        "got there if not all); speedup: uniform's steps / the strategy's; wins: seeds where it "
        "got there first; div: diverged runs; w_red / w_inf: mean loss weight on redundant / "
        "informative samples from the burn-in to the threshold."
    )


LR_LEGEND = (
    "Steps to the threshold at each learning rate (mean±std; (k): seeds that got there if not "
    "all; div k/n: diverged seeds; best lr: fewest steps with every seed getting there; "
    "speedup: uniform's best / the strategy's best)."
)


def figure(
    runs: Sequence[dict[str, Any]], tuned: dict[str, dict[str, Any]] | None, config: Config
) -> Any:
    """Left: clean test MSE against steps per strategy at the fixed rate (mean over the seeds
    that did not diverge, min–max band). Right: steps to the threshold against the learning
    rate per strategy (rates where every seed got there; ± std). None without matplotlib."""
    try:
        from matplotlib.figure import Figure  # optional; no pyplot, no global backend state
    except ImportError:  # pragma: no cover - matplotlib is part of the recipes extra
        return None
    fig = Figure(figsize=(11, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    strategies = list(dict.fromkeys(r["strategy"] for r in runs))
    colors = {s: f"C{i}" for i, s in enumerate(strategies)}
    for strategy in strategies:
        alive = [r for r in runs if r["strategy"] == strategy and r["diverged_at"] is None]
        if not alive:
            continue
        steps = alive[0]["steps"]
        curves = np.array([r["test_mse"] for r in alive])
        left.plot(steps, curves.mean(0), color=colors[strategy], lw=1.5, label=strategy)
        left.fill_between(steps, curves.min(0), curves.max(0), color=colors[strategy], alpha=0.2)
    initial = statistics.fmean(r["initial_test_mse"] for r in runs)
    left.axhline(config.threshold * initial, color="grey", ls="--", lw=1, label="target")
    left.set(yscale="log", xlabel="step", ylabel="clean test MSE")
    left.set_title(f"lr = {config.lr:g}: mean over seeds, min–max band")
    left.grid(alpha=0.3)
    left.legend()
    plotted = False
    if tuned:
        for strategy, row in tuned.items():
            points = [
                (float(lr), cell["steps_to_threshold"])
                for lr, cell in row["by_lr"].items()
                if cell["reached"] == cell["seeds"] and not cell["diverged"]
            ]
            if not points:
                continue
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            right.errorbar(
                xs,
                [y[0] for y in ys],
                yerr=[y[1] for y in ys],
                marker="o",
                capsize=3,
                color=colors.get(strategy),
                label=strategy,
            )
            plotted = True
    if plotted:
        right.set(xlabel="learning rate", ylabel=f"steps to {config.threshold:g}× initial MSE")
        right.set_title("Steps to the target per learning rate (every seed got there)")
        right.grid(alpha=0.3)
        right.legend()
    else:
        why = (
            "no rate where every seed reached the target"
            if tuned
            else "learning-rate grid not run\n(linreg_study.lr_grid=null)"
        )
        right.text(0.5, 0.5, why, ha="center")
        right.set_axis_off()
    return fig


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: every strategy over the seeds (and the learning-rate grid); writes
    ``OUT/linreg_sow.{md,json,png}``, prints the tables (or, with ``--json``, one JSON object)
    and returns the JSON object."""
    parser = argparse.ArgumentParser(
        description="Sow et al. 2025's linear-regression finding (see the module docstring)."
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        help=f"Hydra overrides of conf/experiment/{EXPERIMENT}.yaml, e.g. {NODE}.seeds=[0,1]",
    )
    parser.add_argument("--quick", action="store_true", help=f"apply {NODE}.quick: a small problem")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object on stdout instead of tables"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    args = parser.parse_intermixed_args(argv)
    from hydra.errors import HydraException

    try:
        config = load_config(args.overrides, quick=args.quick)
    except (ValueError, TypeError, HydraException) as err:
        parser.error(str(err))
    grid = sorted({config.lr, *config.lr_grid}) if config.lr_grid else []
    strategies, seeds = list(config.strategies), list(config.seeds)

    start = time.perf_counter()
    runs = [run(s, seed, config) for s in strategies for seed in seeds]
    summary = summarize(runs, config)
    tuned = tune_lr(strategies, seeds, config, grid, done=runs) if grid else None
    result: dict[str, Any] = {
        "config": asdict(config),
        "strategies": strategies,
        "seeds": seeds,
        "summary": summary,
        "lr_grid": tuned,
        "runs": runs,
        "seconds": time.perf_counter() - start,
    }
    command = "python recipes/experiments/linreg_sow.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    parts = [
        "# Sow et al. 2025: linear regression",
        f"`{command.strip()}`",
        describe(config),
        f"Fixed learning rate {config.lr:g}:",
        markdown_table(*summary_rows(summary, config, sep=" ± ")),
        legend(config),
    ]
    if tuned is not None:
        parts += [LR_LEGEND, markdown_table(*lr_rows(tuned, grid, sep=" ± "))]
    parts.append(f"Run time {result['seconds']:.1f} s.")
    paths = write_report(
        args.out,
        EXPERIMENT,
        markdown="\n\n".join(parts),
        record=result,
        figure=figure(runs, tuned, config),
    )
    if args.json:
        print(json.dumps(result, allow_nan=False))
        return result
    print(describe(config))
    print(legend(config))
    print(format_table(summary, config))
    if tuned is not None:
        print("\n" + LR_LEGEND)
        print(format_lr_table(tuned, grid))
    print(f"({result['seconds']:.1f} s)")
    print("wrote " + ", ".join(map(str, paths)))
    return result


if __name__ == "__main__":
    main()
