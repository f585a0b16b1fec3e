"""Speed and memory of ``ReweightSampler`` against the O(N) re-draw baselines.

For each size N and domain layout it builds a sampler, allocates the dynamic factor with one
``update`` call, then measures draw throughput (``sample`` and the ``iter`` / Sampler-protocol
path), update throughput (batches of 1,024 and 65,536 random items), bytes per item, the
per-step cost of one training step's work: 1,024 updates followed by 1,024 draws, and the
per-batch draw cost of the draw stream: after an update (which discards the draws not yet
handed out), the time to hand out the next batch of 32 or 1,024 items through ``iter``.

The baselines do the same dynamic work the only way they can, by re-drawing from the full weight
vector every step: ``torch.multinomial`` (refuses N > 2^24, so it is always measured at N = 2^24
too, the reference for the speed-up figure) and ``numpy.random.Generator.choice`` with a
normalised ``p`` (measured at N <= 1e7 only; the normalisation is part of its step).

Every throughput is the median over ``--repeats`` repeats. The machine is shared, so compare
the ratios measured within one run rather than absolute numbers across runs.

Usage::

    PYTHONPATH=. python benchmarks/sampler.py                 # table, sizes 1e6,1e7,1e8
    PYTHONPATH=. python benchmarks/sampler.py --json          # one JSON object on stdout
    PYTHONPATH=. python benchmarks/sampler.py --quick --json  # smoke test (sizes 1e5,1e6)

See benchmarks/README.md for the meaning of every JSON key.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from reweight.sampler import ReweightSampler

MULTINOMIAL_MAX = 2**24  # torch.multinomial: "number of categories cannot exceed 2^24"
NUMPY_CHOICE_MAX = 10**7  # numpy choice baseline: run at N <= 1e7 only (O(N) per step)

STEP_UPDATES = 1024  # updates per training step
STEP_DRAWS = 1024  # draws per training step
STEPS = 200  # steps per repeat for our sampler
DRAW_BATCH = 65_536  # sample(DRAW_BATCH) per call
DRAW_TOTAL = 32 * DRAW_BATCH  # 2,097,152 draws per repeat
BATCH_SIZES = (32, 1024)  # batches handed out through iter() after an update
BATCH_CALLS = 200  # batches per repeat
ITER_TOTAL = 1 << 20  # 1,048,576 draws through iter() per repeat
UPDATE_CALLS = {1024: 512, 65_536: 32}  # update() calls per repeat, by batch size
VALUE_LOW, VALUE_HIGH = 0.5, 2.0  # random dynamic factors in [0.5, 2)
MULTINOMIAL_STEPS = 10
NUMPY_STEPS = 5

TARGETS = {
    "n": 10**8,
    "draws_per_s": 2e6,
    "updates_per_s": 2e6,
    "bytes_per_item": 16.0,
    "speedup_vs_multinomial_2p24": 100.0,
}

AGGREGATE = "median"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_sizes(text: str) -> list[int]:
    sizes = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        value = float(part)
        if not value.is_integer() or value < 1:
            raise argparse.ArgumentTypeError(f"size {part!r} is not a positive integer")
        sizes.append(int(value))
    if not sizes:
        raise argparse.ArgumentTypeError("no sizes given")
    return sizes


def aggregate(values: list[float]) -> float:
    return float(statistics.median(values))


def repeat(fn: Callable[[int], float], repeats: int) -> float:
    """Runs ``fn(r)`` for r = 0..repeats-1 (each returns one measurement) and aggregates."""
    values = []
    for r in range(repeats):
        gc.collect()
        values.append(fn(r))
    return aggregate(values)


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    try:
        info["memory_total_bytes"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        info["memory_total_bytes"] = None
    info["numpy"] = np.__version__
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_num_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = None
        info["torch_num_threads"] = None
    try:
        import numba

        info["numba"] = numba.__version__
    except ImportError:
        info["numba"] = None
    return info


# ---------------------------------------------------------------------- layouts


def make_domains(n: int, k: int, layout: str, seed: int) -> np.ndarray:
    """Per-item domain ids; both layouts have the same per-domain sizes for a given seed.

    interleaved: a uniformly random domain per item. contiguous: the same domain sizes with the
    ids sorted, like a concatenation of per-domain data sets.
    """
    dtype = np.uint8 if k <= 256 else np.uint16 if k <= 65_536 else np.int32
    rng = np.random.default_rng([seed, n, k])
    interleaved = rng.integers(0, k, size=n, dtype=dtype)
    interleaved[:k] = np.arange(k, dtype=dtype)  # every domain has items, even at small N
    if layout == "interleaved":
        return interleaved
    counts = np.bincount(interleaved, minlength=k)
    del interleaved
    return np.repeat(np.arange(k, dtype=dtype), counts)


# ---------------------------------------------------------------------- our sampler


def update_batches(rng: np.random.Generator, n: int, size: int, calls: int) -> Iterator[tuple]:
    items = rng.integers(0, n, size=(calls, size), dtype=np.int64)
    values = rng.uniform(VALUE_LOW, VALUE_HIGH, size=(calls, size))
    return zip(items, values, strict=True)


def time_updates(sampler: ReweightSampler, n: int, size: int, seed: int) -> float:
    calls = UPDATE_CALLS[size]
    batches = list(update_batches(np.random.default_rng(seed), n, size, calls))
    start = time.perf_counter()
    for items, values in batches:
        sampler.update(items, values)
    elapsed = time.perf_counter() - start
    return size * calls / elapsed


def time_draws(sampler: ReweightSampler, seed: int) -> float:
    calls = DRAW_TOTAL // DRAW_BATCH
    start = time.perf_counter()
    for c in range(calls):
        sampler.sample(DRAW_BATCH, seed=seed + c)
    return DRAW_TOTAL / (time.perf_counter() - start)


def time_iter(sampler: ReweightSampler) -> float:
    start = time.perf_counter()
    deque(itertools.islice(iter(sampler), ITER_TOTAL), maxlen=0)
    return ITER_TOTAL / (time.perf_counter() - start)


def time_batches(sampler: ReweightSampler, batch: int) -> float:
    """Mean µs to hand out one batch through iter() right after an update (a new clock
    value discards the draws not handed out, as any change of the weights does)."""
    stream = iter(sampler)
    deque(itertools.islice(stream, batch), maxlen=0)
    elapsed = 0.0
    for _ in range(BATCH_CALLS):
        sampler.clock = sampler.clock + 1
        start = time.perf_counter()
        deque(itertools.islice(stream, batch), maxlen=0)
        elapsed += time.perf_counter() - start
    return elapsed / BATCH_CALLS * 1e6


def time_steps(sampler: ReweightSampler, n: int, seed: int) -> float:
    """Mean ms of one step: update(1,024 random items) then sample(1,024)."""
    batches = list(update_batches(np.random.default_rng(seed), n, STEP_UPDATES, STEPS))
    start = time.perf_counter()
    for s, (items, values) in enumerate(batches):
        sampler.update(items, values)
        sampler.sample(STEP_DRAWS, seed=seed + s)
    return (time.perf_counter() - start) / STEPS * 1e3


def bench_sampler(n: int, k: int, layout: str, repeats: int, seed: int) -> dict[str, Any]:
    domains = make_domains(n, k, layout, seed)
    gc.collect()
    start = time.perf_counter()
    sampler = ReweightSampler(domains=domains, num_domains=k, infinite=True, seed=seed)
    build_s = time.perf_counter() - start
    del domains
    log(f"  built in {build_s:.2f} s")

    rng = np.random.default_rng([seed, n, 1])
    start = time.perf_counter()
    items = rng.integers(0, n, size=STEP_UPDATES)
    sampler.update(items, rng.uniform(VALUE_LOW, VALUE_HIGH, size=STEP_UPDATES))
    first_update_s = time.perf_counter() - start
    sampler.sample(STEP_DRAWS, seed=seed)  # warm every path once

    memory = sampler.memory_bytes()
    base = seed * 1_000_003
    draws = repeat(lambda r: time_draws(sampler, base + 100 * r), repeats)
    log(f"  sample(): {draws / 1e6:.2f} M draws/s")
    iter_draws = repeat(lambda r: time_iter(sampler), repeats)
    log(f"  iter():   {iter_draws / 1e6:.2f} M draws/s")
    batch_us = {b: repeat(lambda r, b=b: time_batches(sampler, b), repeats) for b in BATCH_SIZES}
    log("  batch after an update: " + ", ".join(f"{b}: {t:.1f} µs" for b, t in batch_us.items()))
    upd_small = repeat(lambda r: time_updates(sampler, n, 1024, base + 10 + r), repeats)
    upd_large = repeat(lambda r: time_updates(sampler, n, 65_536, base + 20 + r), repeats)
    log(f"  update(): {upd_small / 1e6:.2f} M/s (1,024), {upd_large / 1e6:.2f} M/s (65,536)")
    step_ms = repeat(lambda r: time_steps(sampler, n, base + 1000 * (r + 1)), repeats)
    log(f"  step: {step_ms:.3f} ms")
    return {  # the sampler is freed on return; the caller collects
        "n": n,
        "layout": layout,
        "num_domains": k,
        "build_s": build_s,
        "first_update_s": first_update_s,
        "draws_per_s": draws,
        "iter_draws_per_s": iter_draws,
        **{f"batch_draw_us_{b}": t for b, t in batch_us.items()},
        "updates_per_s_1024": upd_small,
        "updates_per_s_65536": upd_large,
        "memory_bytes": memory,
        "bytes_per_item": memory / n,
        "step_ms": step_ms,
    }


# ---------------------------------------------------------------------- baselines


def bench_multinomial(n: int, repeats: int, seed: int) -> dict[str, Any]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    weights = torch.ones(n, dtype=torch.float64)
    rng = np.random.default_rng([seed, n, 2])

    def one_repeat(r: int) -> float:
        batches = [
            (torch.from_numpy(items), torch.from_numpy(values))
            for items, values in update_batches(rng, n, STEP_UPDATES, MULTINOMIAL_STEPS + 1)
        ]
        items, values = batches[0]  # warm-up step, not timed
        weights[items] = values
        torch.multinomial(weights, STEP_DRAWS, replacement=True, generator=gen)
        start = time.perf_counter()
        for items, values in batches[1:]:
            weights[items] = values
            torch.multinomial(weights, STEP_DRAWS, replacement=True, generator=gen)
        return (time.perf_counter() - start) / MULTINOMIAL_STEPS * 1e3

    step_ms = repeat(one_repeat, repeats)  # weights are freed on return; the caller collects
    return {"name": "torch.multinomial", "n": n, "steps": MULTINOMIAL_STEPS, "step_ms": step_ms}


def bench_numpy_choice(n: int, repeats: int, seed: int) -> dict[str, Any]:
    weights = np.ones(n, dtype=np.float64)
    rng = np.random.default_rng([seed, n, 3])

    def one_repeat(r: int) -> float:
        batches = list(update_batches(rng, n, STEP_UPDATES, NUMPY_STEPS + 1))

        def step(items: np.ndarray, values: np.ndarray) -> None:
            weights[items] = values
            p = weights / weights.sum()
            rng.choice(n, STEP_DRAWS, p=p)

        step(*batches[0])  # warm-up step, not timed
        start = time.perf_counter()
        for items, values in batches[1:]:
            step(items, values)
        return (time.perf_counter() - start) / NUMPY_STEPS * 1e3

    step_ms = repeat(one_repeat, repeats)  # weights are freed on return; the caller collects
    return {"name": "numpy.choice", "n": n, "steps": NUMPY_STEPS, "step_ms": step_ms}


# ---------------------------------------------------------------------- driver


def jit_warmup(seed: int) -> float:
    """Compiles the sampler's kernels on a tiny instance so build times exclude compilation."""
    start = time.perf_counter()
    for layout in ("contiguous", "interleaved"):
        s = ReweightSampler(domains=make_domains(1000, 4, layout, seed), infinite=True)
        s.update(np.arange(10), np.full(10, 1.5))
        s.sample(100, seed=seed)
        deque(itertools.islice(iter(s), 300), maxlen=0)
        s.memory_bytes()
    return time.perf_counter() - start


def finite_or_none(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite_or_none(v) for v in obj]
    return obj


def meets_targets(result: dict[str, Any]) -> dict[str, bool | None]:
    speedup = result.get("speedup_vs_multinomial_2p24")
    return {
        "draws_per_s": result["draws_per_s"] >= TARGETS["draws_per_s"],
        "updates_per_s_1024": result["updates_per_s_1024"] >= TARGETS["updates_per_s"],
        "updates_per_s_65536": result["updates_per_s_65536"] >= TARGETS["updates_per_s"],
        "bytes_per_item": result["bytes_per_item"] <= TARGETS["bytes_per_item"],
        "speedup_vs_multinomial_2p24": (
            None if speedup is None else speedup >= TARGETS["speedup_vs_multinomial_2p24"]
        ),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    layouts = ["contiguous", "interleaved"] if args.layout == "both" else [args.layout]
    log(f"machine: {platform.platform()}, {os.cpu_count()} CPUs")
    warmup_s = jit_warmup(args.seed)
    log(f"JIT warm-up: {warmup_s:.2f} s")

    results = []
    for n in args.sizes:
        for layout in layouts:
            log(f"ReweightSampler N={n:,} layout={layout} K={args.domains}")
            results.append(bench_sampler(n, args.domains, layout, args.repeats, args.seed))
            gc.collect()

    baselines = []
    try:
        import torch  # noqa: F401

        have_torch = True
    except ImportError:  # pragma: no cover - torch is a dependency
        have_torch = False
    multinomial_sizes = sorted({n for n in args.sizes if n <= MULTINOMIAL_MAX} | {MULTINOMIAL_MAX})
    if have_torch:
        for n in multinomial_sizes:
            log(f"baseline torch.multinomial N={n:,}")
            baselines.append(bench_multinomial(n, args.repeats, args.seed))
            gc.collect()
            log(f"  step: {baselines[-1]['step_ms']:.3f} ms")
    for n in sorted(n for n in set(args.sizes) if n <= NUMPY_CHOICE_MAX):
        log(f"baseline numpy.choice N={n:,}")
        baselines.append(bench_numpy_choice(n, args.repeats, args.seed))
        gc.collect()
        log(f"  step: {baselines[-1]['step_ms']:.3f} ms")

    reference = next(
        (
            b["step_ms"]
            for b in baselines
            if b["name"] == "torch.multinomial" and b["n"] == MULTINOMIAL_MAX
        ),
        None,
    )
    for result in results:
        result["speedup_vs_multinomial_2p24"] = (
            None if reference is None else reference / result["step_ms"]
        )
        result["meets_targets"] = meets_targets(result)

    return {
        "benchmark": "reweight.sampler.ReweightSampler",
        "config": {
            "sizes": args.sizes,
            "layouts": layouts,
            "num_domains": args.domains,
            "repeats": args.repeats,
            "aggregate": AGGREGATE,
            "seed": args.seed,
            "quick": args.quick,
            "batch_sizes": list(BATCH_SIZES),
            "batches_per_repeat": BATCH_CALLS,
            "draw_batch": DRAW_BATCH,
            "draws_per_repeat": DRAW_TOTAL,
            "iter_draws_per_repeat": ITER_TOTAL,
            "update_calls_per_repeat": {str(k): v for k, v in UPDATE_CALLS.items()},
            "update_value_range": [VALUE_LOW, VALUE_HIGH],
            "step_updates": STEP_UPDATES,
            "step_draws": STEP_DRAWS,
            "steps_per_repeat": STEPS,
            "multinomial_max_n": MULTINOMIAL_MAX,
            "numpy_choice_max_n": NUMPY_CHOICE_MAX,
        },
        "machine": machine_info(),
        "jit_warmup_s": warmup_s,
        "targets": dict(TARGETS),
        "multinomial_2p24_step_ms": reference,
        "results": results,
        "baselines": baselines,
    }


def fmt_rate(x: float | None) -> str:
    return "-" if x is None else f"{x / 1e6:.2f}M"


def print_table(report: dict[str, Any]) -> None:
    machine = report["machine"]
    cfg = report["config"]
    print(
        f"machine: {machine['platform']} | {machine['cpu_count']} CPUs | numpy {machine['numpy']}"
        f" | torch {machine['torch']} | numba {machine['numba']}"
    )
    print(
        f"K={cfg['num_domains']} domains, {cfg['aggregate']} of {cfg['repeats']} repeat(s); "
        f"step = {cfg['step_updates']} updates + sample({cfg['step_draws']}); "
        f"JIT warm-up {report['jit_warmup_s']:.2f} s (excluded)"
    )
    print()
    header = (
        f"{'N':>13} {'layout':<12} {'build s':>8} {'draws/s':>9} {'iter/s':>9} "
        f"{'upd/s 1K':>9} {'upd/s 64K':>9} {'B/item':>7} {'step ms':>9} {'vs mn 2^24':>11} "
        f"{'batch32 µs':>10} {'batch1K µs':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in report["results"]:
        speedup = r["speedup_vs_multinomial_2p24"]
        print(
            f"{r['n']:>13,} {r['layout']:<12} {r['build_s']:>8.2f} {fmt_rate(r['draws_per_s']):>9} "
            f"{fmt_rate(r['iter_draws_per_s']):>9} {fmt_rate(r['updates_per_s_1024']):>9} "
            f"{fmt_rate(r['updates_per_s_65536']):>9} {r['bytes_per_item']:>7.2f} "
            f"{r['step_ms']:>9.3f} {'-' if speedup is None else f'{speedup:,.0f}x':>11} "
            f"{r['batch_draw_us_32']:>10.1f} {r['batch_draw_us_1024']:>10.1f}"
        )
    print()
    print(f"{'baseline':<20} {'N':>13} {'steps':>6} {'step ms':>10}")
    for b in report["baselines"]:
        print(f"{b['name']:<20} {b['n']:>13,} {b['steps']:>6} {b['step_ms']:>10.3f}")
    print("(numpy.choice runs at N <= 1e7 only; torch.multinomial at N <= 2^24, always at 2^24)")
    print()
    t = report["targets"]
    at_target = [r for r in report["results"] if r["n"] == t["n"]]
    if at_target:
        print(
            f"targets at N={t['n']:,}: draws/s >= {t['draws_per_s']:.0e}, "
            f"updates/s >= {t['updates_per_s']:.0e}, bytes/item <= {t['bytes_per_item']:g}, "
            f"speed-up vs multinomial@2^24 >= {t['speedup_vs_multinomial_2p24']:g}x"
        )
        for r in at_target:
            checks = ", ".join(
                f"{k}={'ok' if v else ('n/a' if v is None else 'MISS')}"
                for k, v in r["meets_targets"].items()
            )
            print(f"  {r['layout']}: {checks}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=None,
        help='comma-separated N values (default "1e6,1e7,1e8"; --quick: "1e5,1e6")',
    )
    parser.add_argument("--domains", type=int, default=64, help="number of domains K (default 64)")
    parser.add_argument("--layout", choices=["contiguous", "interleaved", "both"], default="both")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object on stdout (progress goes to stderr)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="repeats per measurement, median reported (default 3; --quick: 1)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: sizes 1e5,1e6 and one repeat unless given"
    )
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = [10**5, 10**6] if args.quick else [10**6, 10**7, 10**8]
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.domains < 1:
        parser.error("--domains must be >= 1")
    if min(args.sizes) < args.domains:
        parser.error("every size must be >= --domains (each domain needs items)")

    if args.json:
        # Anything a library prints must not corrupt the single JSON object on stdout.
        with contextlib.redirect_stdout(sys.stderr):
            report = run(args)
        print(json.dumps(finite_or_none(report), indent=2, allow_nan=False))
    else:
        report = run(args)
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
