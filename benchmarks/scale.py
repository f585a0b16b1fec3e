"""Memory and speed of a whole ``Reweighter`` with every source on, at 10^8 items and beyond.

Each size runs in a fresh subprocess (so no run inherits another's memory): it builds
``Reweighter(domains=..., sources=[static, mixing, in_batch, loss_priority])`` and measures

* **steady** memory: the bytes per item of every per-item and per-block array the reweighter
  holds (``sampler.memory_bytes()`` plus the loss table's), and the resident memory after the
  steps (when every array has been touched) minus the baseline: the process after imports,
  numba compilation and the caller's inputs (per-item domain ids as uint8, log weights as
  float32);
* **peaks**: the highest resident memory (``VmHWM``, reset before each phase) minus the
  baseline, as a ratio to steady: during the build, the training steps, saving and loading;
* **draws**: ``sampler.sample(65536)`` and the DataLoader path ``iter(sampler)``, draws/s;
* **steps**: ``reduce`` of a 1,024-item batch drawn from ``iter(sampler)`` and ``step()``; the
  median ms of a step without a full refresh of the priorities, and the ms of one with it
  (``LossPriority`` refreshes every item at steps 1, 2, 4, 8, ...: O(N));
* **state**: ``state_dict()`` and ``torch.save`` to a file, ``torch.load`` (memory-mapped) and
  ``load_state_dict``, in seconds, and the checkpoint's bytes per item.

Every figure is measured in one run on a shared machine; compare ratios, not absolute times.

Usage::

    PYTHONPATH=. python benchmarks/scale.py                       # sizes 1e8,3e8; a table
    PYTHONPATH=. python benchmarks/scale.py --sizes 1e9 --json    # one JSON object on stdout
    PYTHONPATH=. python benchmarks/scale.py --quick               # smoke test at 1e6
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

TARGETS = {"bytes_per_item": 16.0, "build_peak_ratio": 1.25}
DRAW_BATCH = 65_536
DRAW_CALLS = 16
ITER_DRAWS = 1 << 18
BATCH = 1024
STEPS = 40  # includes full refreshes at steps 1, 2, 4, 8, 16, 32
WARMUP_ITEMS = 4096


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def status_kib(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM), in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak() -> None:
    """Resets VmHWM to the current resident size (Linux: clear_refs 5)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def inputs(n: int, k: int, layout: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Domain ids (uint8; every domain has items) and float32 log weights, as a caller has."""
    rng = np.random.default_rng(seed)
    if layout == "contiguous":
        domains = (np.arange(n, dtype=np.int64) * k // n).astype(np.uint8)
    else:
        domains = np.empty(n, dtype=np.uint8)
        for start in range(0, n, 1 << 22):
            stop = min(n, start + (1 << 22))
            domains[start:stop] = rng.integers(0, k, stop - start, dtype=np.uint8)
        domains[:k] = np.arange(k, dtype=np.uint8)
    log_weights = np.empty(n, dtype=np.float32)
    for start in range(0, n, 1 << 22):
        stop = min(n, start + (1 << 22))
        log_weights[start:stop] = rng.standard_normal(stop - start, dtype=np.float32)
    return domains, log_weights


def build(domains: np.ndarray, log_weights: np.ndarray) -> Any:
    """The Reweighter with every source on (what every size measures)."""
    from reweight import Reweighter
    from reweight.sources import DomainMixing, InBatchWeights, LossPriority, StaticImportance

    sources = [
        StaticImportance(log_weights, beta=0.5, clip=4.0),
        DomainMixing(3.0),
        InBatchWeights("linupper"),
        LossPriority(refresh_every=1000),
    ]
    return Reweighter(domains=domains, sources=sources, total_steps=10_000, infinite=True)


def train_step(rw: Any, draws: Any, rng: np.random.Generator) -> None:
    import torch

    index = torch.tensor(list(itertools.islice(draws, BATCH)))
    rw.reduce(torch.from_numpy(rng.random(BATCH, dtype=np.float32)), {"index": index})
    rw.step()


def run_child(
    n: int, k: int, layout: str, seed: int, directory: str, skip_state: bool
) -> dict[str, Any]:
    """Every measurement at one size, in this (fresh) process."""
    import torch

    rng = np.random.default_rng(seed)
    small = build(*inputs(WARMUP_ITEMS, k, layout, seed))  # numba compilation, off the books
    draws = iter(small.sampler)
    for _ in range(3):
        train_step(small, draws, rng)
    small.sampler.sample(16, seed=0)
    del small, draws
    domains, log_weights = inputs(n, k, layout, seed)
    base = status_kib("VmRSS")
    reset_peak()
    start = time.perf_counter()
    rw = build(domains, log_weights)
    build_s = time.perf_counter() - start
    build_peak = (status_kib("VmHWM") - base) * 1024
    held = rw.sampler.memory_bytes() + rw.sources[-1].table.memory_bytes()
    log(f"  built in {build_s:.1f} s: {held / n:.2f} B/item")

    times = []
    for _ in range(3):
        start = time.perf_counter()
        for call in range(DRAW_CALLS):
            rw.sampler.sample(DRAW_BATCH, seed=call)
        times.append(time.perf_counter() - start)
    sample_rate = DRAW_BATCH * DRAW_CALLS / statistics.median(times)
    iterator = iter(rw.sampler)
    start = time.perf_counter()
    for _ in itertools.islice(iterator, ITER_DRAWS):
        pass
    iter_rate = ITER_DRAWS / (time.perf_counter() - start)

    reset_peak()
    plain: list[float] = []
    refresh: list[float] = []
    for step in range(STEPS):
        start = time.perf_counter()
        train_step(rw, iterator, rng)
        elapsed = time.perf_counter() - start
        after = step + 1  # the step reached: LossPriority refreshes at 1, 2, 4, 8, ...
        (refresh if after & (after - 1) == 0 else plain).append(elapsed)
    step_peak = (status_kib("VmHWM") - base) * 1024
    resident = (status_kib("VmRSS") - base) * 1024  # every array touched by now
    log(f"  steps: {statistics.median(plain) * 1e3:.1f} ms, refresh {max(refresh):.1f} s")

    result = {
        "n": n,
        "layout": layout,
        "num_domains": k,
        "build_s": build_s,
        "bytes_per_item": held / n,
        "resident_bytes_per_item": resident / n,
        "build_peak_ratio": build_peak / held,
        "step_peak_ratio": step_peak / held,
        "sample_draws_per_s": sample_rate,
        "iter_draws_per_s": iter_rate,
        "step_ms": statistics.median(plain) * 1e3,
        "refresh_step_s": max(refresh),
    }
    if skip_state:
        return result
    path = Path(directory) / f"reweighter_{n}.pt"
    reset_peak()
    start = time.perf_counter()
    state = rw.state_dict()
    state_dict_s = time.perf_counter() - start
    start = time.perf_counter()
    torch.save(state, path)
    save_s = time.perf_counter() - start
    del state
    save_peak = (status_kib("VmHWM") - base) * 1024
    checkpoint = path.stat().st_size
    reset_peak()
    start = time.perf_counter()
    loaded = torch.load(path, mmap=True, weights_only=False)
    torch_load_s = time.perf_counter() - start
    start = time.perf_counter()
    rw.load_state_dict(loaded)
    load_state_s = time.perf_counter() - start
    del loaded
    load_peak = (status_kib("VmHWM") - base) * 1024
    path.unlink()
    log(f"  state: save {state_dict_s + save_s:.1f} s, load {torch_load_s + load_state_s:.1f} s")
    return {
        **result,
        "save_peak_ratio": save_peak / held,
        "load_peak_ratio": load_peak / held,
        "state_dict_s": state_dict_s,
        "save_s": save_s,
        "torch_load_s": torch_load_s,
        "load_state_dict_s": load_state_s,
        "checkpoint_bytes_per_item": checkpoint / n,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for n in args.sizes:
        log(f"N = {n:.3g} ({args.layout})")
        command = [
            sys.executable,
            __file__,
            "--child",
            str(n),
            "--layout",
            args.layout,
            "--domains",
            str(args.domains),
            "--seed",
            str(args.seed),
            "--dir",
            args.dir,
            *(["--skip-state"] if args.skip_state else []),
        ]
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
        sys.stderr.write(done.stderr)
        if done.returncode != 0:
            raise SystemExit(f"the run at N = {n} failed (exit {done.returncode}).")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {"targets": TARGETS, "results": rows}


def ratio(row: dict[str, Any], key: str) -> str:
    return f"{row[key]:>6.2f}x" if key in row else f"{'-':>7}"


def seconds(row: dict[str, Any], *keys: str) -> str:
    return f"{sum(row[k] for k in keys):>6.1f}" if keys[0] in row else f"{'-':>6}"


def print_table(report: dict[str, Any]) -> None:
    header = (
        f"{'N':>9} {'layout':>11} {'B/item':>7} {'RSS':>6} {'build pk':>8} {'step pk':>7} "
        f"{'save pk':>7} {'load pk':>7} "
        f"{'sample/s':>9} {'iter/s':>8} {'step ms':>7} {'refresh s':>9} {'save s':>6} "
        f"{'load s':>6} {'ckpt B/it':>9}"
    )
    print(header)
    for r in report["results"]:
        print(
            f"{r['n']:>9.3g} {r['layout']:>11} {r['bytes_per_item']:>7.2f} "
            f"{r['resident_bytes_per_item']:>6.2f} {r['build_peak_ratio']:>7.2f}x "
            f"{r['step_peak_ratio']:>6.2f}x {ratio(r, 'save_peak_ratio')} "
            f"{ratio(r, 'load_peak_ratio')} {r['sample_draws_per_s'] / 1e6:>8.2f}M "
            f"{r['iter_draws_per_s'] / 1e6:>7.2f}M {r['step_ms']:>7.1f} "
            f"{r['refresh_step_s']:>9.2f} {seconds(r, 'state_dict_s', 'save_s')} "
            f"{seconds(r, 'torch_load_s', 'load_state_dict_s')} "
            f"{r['checkpoint_bytes_per_item'] if 'save_s' in r else '-':>9.5}"
        )
    t = report["targets"]
    print(
        f"targets: <= {t['bytes_per_item']} B/item steady, build peak <= "
        f"{t['build_peak_ratio']}x steady"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=None, help="comma-separated N (default 1e8,3e8)")
    parser.add_argument("--layout", default="contiguous", choices=["contiguous", "interleaved"])
    parser.add_argument("--domains", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where checkpoints go")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--skip-state", action="store_true", help="no save/load (each peaks at ~2x steady)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke test at N = 1e6")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        result = run_child(
            args.child, args.domains, args.layout, args.seed, args.dir, args.skip_state
        )
        print(json.dumps(result))
        return 0
    text = args.sizes or ("1e6" if args.quick else "1e8,3e8")
    args.sizes = [int(float(x)) for x in text.split(",")]
    report = run(args)
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
