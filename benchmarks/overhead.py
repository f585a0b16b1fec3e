"""Reweighting overhead of the main job: time per optimizer step with ``reweight=full`` over
``reweight=none``, on the default recipe's model and data, alternated in one process.

    python benchmarks/overhead.py                 # default: 5 rounds of 40 steps each
    python benchmarks/overhead.py --json          # JSON only
    python benchmarks/overhead.py --quick         # a smoke run (tiny model, few steps)

Each round trains both setups for ``--steps`` optimizer steps from the same starting weights
(``none`` first in even rounds, ``full`` first in odd ones), each step doing what the recipe
does: draw the batch from the sampler, forward, per-sample loss, ``reduce``, backward, AdamW,
``reweighter.step()``, and every ``--log-every`` steps ``reweighter.metrics()`` (what the
callback logs). The ratio is the median over rounds of full/none time per step; the target is
at most 1.02. The machine is shared, so only the ratio within one run means anything.
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
    reweighter = recipe.build_reweighter(cfg, corpus, split.train, train_set)
    sampler = (
        reweighter.sampler
        if reweighter is not None
        else ReweightSampler(len(train_set), seed=int(cfg.seed), infinite=True)
    )
    loader = DataLoader(train_set, batch_size=int(cfg.batch_size), sampler=sampler)
    return {"cfg": cfg, "reweighter": reweighter, "batches": iter(loader)}


def _run(setup: dict[str, Any], model: torch.nn.Module, steps: int, log_every: int) -> float:
    """Seconds per optimizer step over ``steps`` steps."""
    cfg, rw, batches = setup["cfg"], setup["reweighter"], setup["batches"]
    optimizer = make_optimizer(model, lr=float(cfg.lr), weight_decay=float(cfg.weight_decay))
    start = time.perf_counter()
    for step in range(steps):
        batch = next(batches)
        losses = per_sample_loss(model, batch["tokens"])
        loss = losses.mean() if rw is None else rw.reduce(losses, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if rw is not None:
            rw.step()
            if (step + 1) % log_every == 0:
                rw.metrics()
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per block")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--log-every", type=int, default=10, help="metrics() every N steps")
    parser.add_argument("--quick", action="store_true", help="tiny model, 2 rounds of 5 steps")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args(argv)
    overrides = [f"steps={max(1000, args.steps * args.rounds * 2)}"]
    if args.quick:
        args.steps, args.rounds = 5, 2
        overrides += ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "batch_size=8"]
    torch.manual_seed(0)
    setups = {preset: _setup(preset, overrides) for preset in ("none", "full")}
    cfg = setups["none"]["cfg"]
    base = ByteTransformerLM(seq_len=int(cfg.data.seq_len), seed=0, **dict(cfg.model))
    times: dict[str, list[float]] = {"none": [], "full": []}
    ratios: list[float] = []
    for setup in setups.values():  # warm-up: kernels, numba compilation, allocator
        _run(
            setup, ByteTransformerLM(seq_len=int(cfg.data.seq_len), seed=0, **dict(cfg.model)), 2, 1
        )
    for round_ in range(args.rounds):
        order = ("none", "full") if round_ % 2 == 0 else ("full", "none")
        for preset in order:
            model = ByteTransformerLM(seq_len=int(cfg.data.seq_len), seed=0, **dict(cfg.model))
            model.load_state_dict(base.state_dict())
            times[preset].append(_run(setups[preset], model, args.steps, args.log_every))
        ratios.append(times["full"][-1] / times["none"][-1])
    result = {
        "benchmark": "overhead",
        "steps_per_block": args.steps,
        "rounds": args.rounds,
        "batch_size": int(cfg.batch_size),
        "model": dict(cfg.model),
        "seconds_per_step": {k: statistics.median(v) for k, v in times.items()},
        "ratio_per_round": ratios,
        "ratio": statistics.median(ratios),
        "target": 1.02,
    }
    result["meets_target"] = result["ratio"] <= result["target"]
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{'setup':<8}{'s/step':>10}")
        for key, value in result["seconds_per_step"].items():
            print(f"{key:<8}{value:>10.4f}")
        rounds = " ".join(f"{r:.3f}" for r in ratios)
        print(f"full/none per round: {rounds}")
        print(f"ratio (median): {result['ratio']:.4f}  target ≤ {result['target']}")
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
