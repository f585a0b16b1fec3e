"""Sow et al. (2025)'s linear-regression finding, reproduced with the library as a user would.

    python recipes/experiments/linreg_sow.py            # 4 strategies × 5 seeds + lr grid (~2 min)
    python recipes/experiments/linreg_sow.py --json     # one JSON object on stdout
    python recipes/experiments/linreg_sow.py --quick    # a smoke run (seconds)
    python recipes/experiments/linreg_sow.py --lr-grid none --strategies uniform,linupper,hard

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
strategy at the rates of ``--lr-grid`` (default 0.08, 0.1, 0.13, plus ``--lr``) and reports
each strategy's best rate — the one with the fewest mean steps to the threshold among those
where every seed got there without diverging — and its speedup over uniform's best
(``--lr-grid none`` skips it). ``--quick`` runs a smaller problem (``QUICK``: d = 16, N =
1,024, 4 prototypes, 300 steps) for smoke tests.

Determinism: data from ``numpy.random.default_rng(seed)``, draws from the sampler's private
generator seeded with ``seed``, zero initialisation, no dropout — the same arguments give the
same numbers (on the same machine and torch build). No global RNG is touched.
"""

from __future__ import annotations

import argparse
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

if __package__ in (None, ""):  # run as a script: make `reweight` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
import torch
import torch.nn.functional as F

import reweight
from reweight.weights import get_strategy

DEFAULT_STRATEGIES = ("uniform", "linupper", "quadratic", "extremes")
DEFAULT_LR_GRID = (0.08, 0.1, 0.13)  # besides Config.lr; uniform's best is near 0.13
_DIVERGED = 1e3  # a test MSE above this multiple of the initial one counts as divergence


@dataclass(frozen=True)
class Config:
    """The experiment's knobs (defaults: the setup in the module docstring)."""

    dim: int = 32
    num_items: int = 4096
    redundant_frac: float = 0.9
    prototypes: int = 8
    jitter: float = 0.05
    noise: float = 0.1
    num_test: int = 2048
    steps: int = 1000
    batch_size: int = 32
    lr: float = 0.05
    r: float = 1.0
    burn_in_steps: int = 20
    eval_every: int = 5
    threshold: float = 0.01
    checkpoints: tuple[int, ...] = (100, 200, 500, 1000)

    def validate(self) -> None:
        """Raises ValueError naming the bad field, its value and the fix."""
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


QUICK = Config(
    dim=16,
    num_items=1024,
    prototypes=4,
    num_test=512,
    steps=300,
    checkpoints=(50, 100, 300),
)


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
        >>> p = make_problem(QUICK, seed=0)
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
        config: the experiment's knobs (default :class:`Config`).

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
        >>> out = run("linupper", seed=0, config=replace(QUICK, steps=20, checkpoints=(20,)))
        >>> out["final_test_mse"] < out["initial_test_mse"]
        True
    """
    config = config or Config()
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
        >>> c = replace(QUICK, steps=20, checkpoints=(20,))
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
        >>> c = replace(QUICK, steps=20, checkpoints=(20,))
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


def format_table(summary: dict[str, dict[str, Any]], config: Config) -> str:
    """A readable table of :func:`summarize`'s output (mean±std over seeds)."""
    cols = [f"mse@{c}" for c in config.checkpoints]
    header = (
        f"{'strategy':<10}"
        + "".join(f" {c:>16}" for c in cols)
        + f" {'‖w−w*‖ end':>13} {'steps→thr':>12} {'speedup':>7} {'wins':>5} {'div':>3}"
        + f" {'w_red':>5} {'w_inf':>5}"
    )
    lines = [header, "-" * len(header)]
    for strategy, row in summary.items():
        line = f"{strategy:<10}"
        for c in config.checkpoints:
            cell = row[f"test_mse@{c}"]
            line += " " + ("-" if cell is None else f"{cell[0]:.2e}±{cell[1]:.1e}").rjust(16)
        err = row["param_error_final"]
        line += " " + ("-" if err is None else f"{err[0]:.3f}±{err[1]:.3f}").rjust(13)
        steps = row["steps_to_threshold"]
        text = "never" if steps is None else f"{steps[0]:.0f}±{steps[1]:.0f}"
        if steps is not None and row["reached"] < row["seeds"]:
            text += f"({row['reached']})"
        line += f" {text:>12} {_num(row['speedup_vs_uniform']):>7}"
        line += f" {row['wins_vs_uniform']:>2}/{row['seeds']:<2} {row['diverged']:>3}"
        line += f" {_num(row['weight_redundant']):>5} {_num(row['weight_informative']):>5}"
        lines.append(line)
    return "\n".join(lines)


def format_lr_table(tuned: dict[str, dict[str, Any]], grid: Sequence[float]) -> str:
    """A readable table of :func:`tune_lr`'s output: steps to the threshold per rate."""
    header = f"{'strategy':<10}" + "".join(f" {'lr=' + repr(lr):>16}" for lr in grid)
    header += f" {'best lr':>8} {'speedup':>7}"
    lines = [header, "-" * len(header)]
    for strategy, row in tuned.items():
        line = f"{strategy:<10}"
        for lr in grid:
            cell = row["by_lr"][repr(lr)]
            steps = cell["steps_to_threshold"]
            text = "never" if steps is None else f"{steps[0]:.0f}±{steps[1]:.0f}"
            if steps is not None and cell["reached"] < cell["seeds"]:
                text += f"({cell['reached']})"
            if cell["diverged"]:
                text = f"div {cell['diverged']}/{cell['seeds']}" + (
                    "" if steps is None else f", {steps[0]:.0f}({cell['reached']})"
                )
            line += f" {text:>16}"
        line += f" {_num(row['best_lr'], 'g'):>8} {_num(row['speedup_vs_uniform']):>7}"
        lines.append(line)
    return "\n".join(lines)


_OVERRIDES = ("steps", "batch_size", "lr", "r", "burn_in_steps", "redundant_frac", "noise")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: every strategy over the seeds; prints a table, or one JSON object."""
    parser = argparse.ArgumentParser(
        description="Sow et al. 2025's linear-regression finding (see the module docstring)."
    )
    parser.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES))
    parser.add_argument("--seeds", type=int, default=5, help="runs seeds 0..SEEDS-1")
    parser.add_argument("--quick", action="store_true", help="a small problem, 300 steps")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument(
        "--lr-grid",
        default=",".join(map(str, DEFAULT_LR_GRID)),
        help="learning rates tried per strategy besides --lr (comma-separated; 'none' skips)",
    )
    defaults = Config()
    for field in _OVERRIDES:
        kind = type(getattr(defaults, field))
        parser.add_argument(f"--{field.replace('_', '-')}", type=kind, default=None)
    args = parser.parse_args(argv)
    config = QUICK if args.quick else defaults
    overrides: dict[str, Any] = {
        f: getattr(args, f) for f in _OVERRIDES if getattr(args, f) is not None
    }
    if "steps" in overrides:  # keep the checkpoints inside the run
        steps, every = overrides["steps"], config.eval_every
        marks = {max(1, round(f * steps / every)) * every for f in (0.1, 0.2, 0.5, 1.0)}
        overrides["checkpoints"] = tuple(sorted(m for m in marks if m <= steps))
    try:
        config = replace(config, **overrides)
        config.validate()
        strategies = [s.strip().lower() for s in args.strategies.split(",") if s.strip()]
        if not strategies:
            raise ValueError("--strategies is empty; give e.g. uniform,linupper.")
        for s in strategies:
            get_strategy(s)  # an unknown name fails before any training, listing valid ones
        text = args.lr_grid.strip().lower()
        grid = [] if text in ("", "none") else [float(v) for v in text.split(",") if v.strip()]
        if any(not (lr > 0 and math.isfinite(lr)) for lr in grid):
            raise ValueError(f"--lr-grid rates must be finite and > 0, got {grid}.")
        if grid:
            grid = sorted({config.lr, *grid})
    except ValueError as err:
        parser.error(str(err))
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}.")
    seeds = list(range(args.seeds))

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
    if args.json:
        print(json.dumps(result, allow_nan=False))
        return result
    print(
        f"Sow et al. 2025, linear regression: d={config.dim}, N={config.num_items} "
        f"({config.redundant_frac:.0%} redundant near-duplicates of {config.prototypes} "
        f"prototypes), label noise {config.noise}; SGD lr={config.lr}, batch "
        f"{config.batch_size}, {config.steps} steps; r={config.r}, burn-in "
        f"{config.burn_in_steps}; {args.seeds} seeds."
    )
    print(
        "mse@k: clean test MSE at step k (initial = ‖w*‖² ≈ 1), mean±std over seeds; "
        f"steps→thr: first step with test MSE ≤ {config.threshold:g}× initial (count if not "
        "all seeds); speedup: uniform's steps / the strategy's; wins: seeds where it got there "
        "first; div: diverged runs; w_red / w_inf: mean loss weight on redundant / "
        "informative samples from the burn-in to the threshold."
    )
    print(format_table(summary, config))
    if tuned is not None:
        print(
            "\nSteps to the threshold at each learning rate (mean±std; (k): seeds that got "
            "there if not all; div k/n: diverged seeds; best lr: fewest steps with every seed "
            "getting there; speedup: uniform's best / the strategy's best):"
        )
        print(format_lr_table(tuned, grid))
    print(f"({result['seconds']:.1f} s)")
    return result


if __name__ == "__main__":
    main()
