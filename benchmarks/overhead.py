"""Reweighting overhead of the main job: time per optimizer step with ``reweight=full`` over
``reweight=none``, on the default recipe's model and data, alternated in one process.

    python benchmarks/overhead.py                 # default: 30 rounds of 5 steps each
    python benchmarks/overhead.py --json          # JSON only
    python benchmarks/overhead.py --quick         # a smoke run (tiny model, few steps)

Both setups train their own copy of the same initial model; each round runs ``--steps``
optimizer steps of each (``none`` first in even rounds, ``full`` first in odd ones), short
blocks so that the shared machine's load hits both alike. Each step does what the recipe
does: draw the batch from the sampler, forward, per-sample loss, ``reduce``, backward, AdamW,
``reweighter.step()``, and every ``--log-every`` steps ``reweighter.metrics()`` (what the
callback logs). The ratio is full/none total time per step; the target is at most 1.02. It
also times the reweighting calls themselves (``reduce``, ``step``, ``metrics``) as a share of
the full step — the overhead's direct measure, robust to load on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from recipes import train as recipe
from recipes.data import ByteLMDataset
from recipes.model import ByteTransformerLM, make_optimizer, per_sample_loss
from reweight import ReweightSampler


def _setup(preset: str, overrides: list[str]) -> dict[str, Any]:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(recipe.CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"reweight={preset}", *overrides])
    corpus = recipe.load_corpus(cfg.data)
    split = corpus.split(float(cfg.data.val_fraction), seed=int(cfg.seed))
    train_set = ByteLMDataset(corpus, split.train).indexed()
    # The baseline is plain training (a plain sampler, the mean loss), not reweight=none's
    # Reweighter without sources: the overhead is measured against not reweighting at all.
    reweighter = (
        None if preset == "none" else recipe.build_reweighter(cfg, corpus, split.train, train_set)
    )
    sampler = (
        reweighter.sampler
        if reweighter is not None
        else ReweightSampler(len(train_set), seed=int(cfg.seed), infinite=True)
    )
    loader = DataLoader(train_set, batch_size=int(cfg.batch_size), sampler=sampler)
    return {"cfg": cfg, "reweighter": reweighter, "batches": iter(loader)}


def _run(
    setup: dict[str, Any], model: torch.nn.Module, optimizer: Any, steps: int, log_every: int
) -> tuple[float, float]:
    """(seconds per optimizer step, seconds per step spent in reweighting calls)."""
    rw, batches = setup["reweighter"], setup["batches"]
    inside = 0.0
    start = time.perf_counter()
    for _ in range(steps):
        batch = next(batches)
        losses = per_sample_loss(model, batch["tokens"])
        if rw is None:
            loss = losses.mean()
        else:
            t0 = time.perf_counter()
            loss = rw.reduce(losses, batch)
            inside += time.perf_counter() - t0
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if rw is not None:
            t0 = time.perf_counter()
            rw.step()
            if rw.global_step % log_every == 0:
                rw.metrics()
            inside += time.perf_counter() - t0
    return (time.perf_counter() - start) / steps, inside / steps


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps per block")
    parser.add_argument("--rounds", type=int, default=30, help="alternating rounds")
    parser.add_argument("--log-every", type=int, default=10, help="metrics() every N steps")
    parser.add_argument("--quick", action="store_true", help="tiny model, 2 rounds of 5 steps")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args(argv)
    overrides = [f"steps={max(1000, args.steps * args.rounds * 2)}"]
    if args.quick:
        args.steps, args.rounds = 2, 2
        overrides += ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "batch_size=8"]
    torch.manual_seed(0)
    setups = {preset: _setup(preset, overrides) for preset in ("none", "full")}
    cfg = setups["none"]["cfg"]
    models, optimizers = {}, {}
    base: ByteTransformerLM = instantiate(cfg.model)
    for preset in setups:
        models[preset] = instantiate(cfg.model)
        models[preset].load_state_dict(base.state_dict())
        optimizers[preset] = make_optimizer(
            models[preset], lr=float(cfg.lr), weight_decay=float(cfg.weight_decay)
        )
    for preset in setups:  # warm-up: kernels, numba compilation, allocator
        _run(setups[preset], models[preset], optimizers[preset], 2, 1)
    times: dict[str, list[float]] = {"none": [], "full": []}
    inside: list[float] = []
    for round_ in range(args.rounds):
        order = ("none", "full") if round_ % 2 == 0 else ("full", "none")
        for preset in order:
            per_step, in_reweight = _run(
                setups[preset], models[preset], optimizers[preset], args.steps, args.log_every
            )
            times[preset].append(per_step)
            if preset == "full":
                inside.append(in_reweight)
    ratios = [f / n for f, n in zip(times["full"], times["none"], strict=True)]
    full_total, none_total = sum(times["full"]), sum(times["none"])
    result = {
        "benchmark": "overhead",
        "steps_per_block": args.steps,
        "rounds": args.rounds,
        "batch_size": int(cfg.batch_size),
        "model": dict(cfg.model),
        "seconds_per_step": {"none": none_total / args.rounds, "full": full_total / args.rounds},
        "ratio_per_round": ratios,
        "ratio": full_total / none_total,
        "ratio_median": statistics.median(ratios),
        "reweight_seconds_per_step": sum(inside) / len(inside),
        "reweight_share": sum(inside) / full_total,
        "target": 1.02,
    }
    result["meets_target"] = result["ratio"] <= result["target"]
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{'setup':<8}{'s/step':>10}")
        for key, value in result["seconds_per_step"].items():
            print(f"{key:<8}{value:>10.4f}")
        print(f"full/none per round: {' '.join(f'{r:.3f}' for r in ratios)}")
        print(f"ratio (total time): {result['ratio']:.4f}  target ≤ {result['target']}")
        print(
            f"time inside reweighting calls: {1000 * result['reweight_seconds_per_step']:.2f} ms "
            f"per step = {100 * result['reweight_share']:.2f}% of a full step"
        )
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
