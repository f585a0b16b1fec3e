"""Reweighting overhead of the main job: time per optimizer step with ``reweight=full`` over
``reweight=none``, on the default recipe's model and data, alternated in one process.

    python benchmarks/overhead.py                 # default: 30 rounds of 5 steps each
    python benchmarks/overhead.py --json          # JSON only
    python benchmarks/overhead.py --quick         # a smoke run (tiny model, few steps)
    python benchmarks/overhead.py --models tiny,default --defer on   # host time per model
    python benchmarks/overhead.py --device cuda --bf16 --models tiny,gpt100m   # on a GPU

Both setups train their own copy of the same initial model; each round runs ``--steps``
optimizer steps of each (``none`` first in even rounds, ``full`` first in odd ones), short
blocks so that the shared machine's load hits both alike. Each step does what the recipe
does: draw the batch from the sampler, forward, per-sample loss, ``reduce``, backward, AdamW,
``reweighter.step()``, and every ``--log-every`` steps ``reweighter.metrics()`` (what the
callback logs). The ratio is full/none total time per step; the target is at most 1.02. It
also times the reweighting calls themselves (``reduce``, ``step``, ``metrics``) as a share of
the full step — the overhead's direct measure, robust to load on a shared machine — and
that host time over the baseline's step time. ``--defer on`` runs the CUDA code path (weights
computed where the losses are, the host part left for the next call) on any device; on a GPU
each block ends with a synchronisation, so the times are the GPU's.
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
from recipes.model import ByteTransformerLM, make_optimizer, per_sample_loss
from reweight import IndexedDataset, ReweightSampler


def _setup(preset: str, overrides: list[str]) -> dict[str, Any]:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(recipe.CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"reweight={preset}", *overrides])
    corpus = recipe.load_corpus(cfg.data)
    vocab_size = recipe.model_vocab_size(cfg, corpus)
    train_idx, _ = recipe.training_split(cfg, corpus)
    train_set = IndexedDataset(
        recipe.sequences(corpus, train_idx, vocab_size),
        domains=corpus.domains[train_idx],
        domain_names=list(corpus.domain_names),
    )
    # The baseline is plain training (a plain sampler, the mean loss), not reweight=none's
    # Reweighter without sources: the overhead is measured against not reweighting at all.
    reweighter = (
        None if preset == "none" else recipe.build_reweighter(cfg, corpus, train_idx, train_set)
    )
    sampler = (
        reweighter.sampler
        if reweighter is not None
        else ReweightSampler(len(train_set), seed=int(cfg.seed), infinite=True)
    )
    loader = DataLoader(train_set, batch_size=int(cfg.batch_size), sampler=sampler)
    setup = {"cfg": cfg, "reweighter": reweighter, "batches": iter(loader)}
    return {**setup, "vocab_size": vocab_size}


MODELS: dict[str, list[str]] = {
    "tiny": ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "batch_size=8"],
    "default": [],
    "gpt100m": ["model.d_model=768", "model.n_layers=12", "model.n_heads=12"],
}
"""Model presets (Hydra overrides of the recipe): gpt100m is about 85M parameters."""


def _run(
    setup: dict[str, Any],
    model: torch.nn.Module,
    optimizer: Any,
    steps: int,
    log_every: int,
    device: torch.device,
    bf16: bool = False,
) -> tuple[float, float]:
    """(seconds per optimizer step, seconds per step spent in reweighting calls)."""
    rw, batches = setup["reweighter"], setup["batches"]
    inside = 0.0
    start = time.perf_counter()
    for _ in range(steps):
        batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
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
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / steps, inside / steps


def _measure(args: argparse.Namespace, name: str, device: torch.device) -> dict[str, Any]:
    """One model preset: alternating rounds of plain and reweighted training."""
    overrides = [f"steps={max(1000, args.steps * args.rounds * 2)}", *MODELS[name]]
    torch.manual_seed(0)
    setups = {preset: _setup(preset, overrides) for preset in ("none", "full")}
    reweighter = setups["full"]["reweighter"]
    reweighter._defer = {"auto": None, "on": True, "off": False}[args.defer]
    cfg = setups["none"]["cfg"]
    models, optimizers = {}, {}
    vocab_size = setups["none"]["vocab_size"]
    base: ByteTransformerLM = instantiate(cfg.model, vocab_size=vocab_size)
    for preset in setups:
        models[preset] = instantiate(cfg.model, vocab_size=vocab_size).to(device)
        models[preset].load_state_dict(base.state_dict())
        optimizers[preset] = make_optimizer(
            models[preset], lr=float(cfg.lr), weight_decay=float(cfg.weight_decay)
        )
    run = {"steps": args.steps, "log_every": args.log_every, "device": device, "bf16": args.bf16}
    for preset in setups:  # warm-up: kernels, numba compilation, allocator
        _run(setups[preset], models[preset], optimizers[preset], **{**run, "steps": 2})
    times: dict[str, list[float]] = {"none": [], "full": []}
    inside: list[float] = []
    for round_ in range(args.rounds):
        order = ("none", "full") if round_ % 2 == 0 else ("full", "none")
        for preset in order:
            per_step, in_reweight = _run(setups[preset], models[preset], optimizers[preset], **run)
            times[preset].append(per_step)
            if preset == "full":
                inside.append(in_reweight)
    ratios = [f / n for f, n in zip(times["full"], times["none"], strict=True)]
    full_total, none_total = sum(times["full"]), sum(times["none"])
    host = sum(inside) / len(inside)
    result = {
        "benchmark": "overhead",
        "model_preset": name,
        "parameters": sum(p.numel() for p in base.parameters()),
        "device": str(device),
        "bf16": args.bf16,
        "defer": args.defer,
        "steps_per_block": args.steps,
        "rounds": args.rounds,
        "batch_size": int(cfg.batch_size),
        "model": dict(cfg.model),
        "seconds_per_step": {"none": none_total / args.rounds, "full": full_total / args.rounds},
        "ratio_per_round": ratios,
        "ratio": full_total / none_total,
        "ratio_median": statistics.median(ratios),
        "reweight_seconds_per_step": host,
        "reweight_share": sum(inside) / full_total,
        "reweight_over_baseline_step": host * args.rounds / none_total,
        "target": 1.02,
    }
    result["meets_target"] = result["ratio"] <= result["target"]
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps per block")
    parser.add_argument("--rounds", type=int, default=30, help="alternating rounds")
    parser.add_argument("--log-every", type=int, default=10, help="metrics() every N steps")
    parser.add_argument("--quick", action="store_true", help="tiny model, 2 rounds of 2 steps")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--models", default="default", help=f"comma list of {sorted(MODELS)}")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for the model")
    parser.add_argument(
        "--defer",
        choices=("auto", "on", "off"),
        default="auto",
        help="reduce()'s host part: auto (deferred on CUDA), on (deferred), off (at once)",
    )
    args = parser.parse_args(argv)
    names = args.models.split(",")
    if args.quick:
        args.steps, args.rounds, names = 2, 2, ["tiny"]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"unknown model presets {unknown}; choose from {sorted(MODELS)}")
    runs = [_measure(args, name, torch.device(args.device)) for name in names]
    result = runs[0] if len(runs) == 1 else {"benchmark": "overhead", "runs": runs}
    if not args.json:
        print(
            f"{'model':<9}{'params':>11}{'none s/step':>13}{'full s/step':>13}{'ratio':>8}"
            f"{'host ms/step':>14}{'host/none':>11}"
        )
        for run in runs:
            per_step = run["seconds_per_step"]
            print(
                f"{run['model_preset']:<9}{run['parameters']:>11,}{per_step['none']:>13.4f}"
                f"{per_step['full']:>13.4f}{run['ratio']:>8.3f}"
                f"{1000 * run['reweight_seconds_per_step']:>14.2f}"
                f"{run['reweight_over_baseline_step']:>11.3f}"
            )
        print(f"device {args.device}, defer={args.defer}, target ratio ≤ 1.02")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
