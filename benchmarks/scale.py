"""Memory and speed of a whole ``Reweighter`` with every source on, at 10^8 items and beyond.

Each size runs in a fresh subprocess (so no run inherits another's memory): it builds
``Reweighter(domains=..., sources=[static, mixing, in_batch, loss_priority])`` from inputs the
way a caller at this size has them, memory-mapped ``.npy`` files (per-item domain ids as uint8,
log weights as float32, given to ``StaticImportance`` as a path), and measures

* **steady** memory: the bytes per item of every per-item and per-block array the reweighter
  holds (``sampler.memory_bytes()`` plus the loss table's), and the process's anonymous
  resident memory (``RssAnon``: what the reweighter allocated; the mapped inputs are page cache)
  after the steps, when every array has been touched, minus the baseline (after imports and
  numba compilation);
* **peaks**: the highest ``RssAnon`` during each phase (sampled every 10 ms by the parent
  process from ``/proc/<pid>/status``) minus the baseline, as a ratio to steady: the build, the
  training steps, and saving and loading the state;
* **draws**: ``sampler.sample(65536)`` and the DataLoader path ``iter(sampler)``, draws/s;
* **steps**: ``reduce`` of a 1,024-item batch drawn from ``iter(sampler)`` and ``step()``; the
  median ms of a step without a full refresh of the priorities, and the ms of one with it
  (``LossPriority`` refreshes every item at steps 1, 2, 4, 8, ...: O(N));
* **state**, two ways (``--state``): ``files``, ``Reweighter.save`` / ``Reweighter.load`` (a
  directory of ``.npy`` files written from views of the live arrays, read back memory-mapped);
  ``snapshot``, ``state_dict()`` + ``torch.save`` and ``torch.load(mmap=True)`` +
  ``load_state_dict`` (a snapshot copy: about twice the steady memory). Seconds, peaks, and the
  bytes per item on disk.

Every figure is measured in one run on a shared machine; compare ratios, not absolute times.

Usage::

    PYTHONPATH=. python benchmarks/scale.py                       # sizes 1e8,3e8; a table
    PYTHONPATH=. python benchmarks/scale.py --sizes 1e9 --table compact --steps 10 --state files
    PYTHONPATH=. python benchmarks/scale.py --quick               # smoke test at 1e6
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
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


def status_kib(field: str, pid: int | str = "self") -> int:
    """A memory field of /proc/<pid>/status (VmRSS, RssAnon), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def write_inputs(n: int, k: int, layout: str, seed: int, directory: Path) -> tuple[Path, Path]:
    """Domain ids (uint8; every domain has items) and float32 log weights, as ``.npy`` files
    written a chunk at a time (a caller at 10^9 items has them on disk)."""
    rng = np.random.default_rng(seed)
    domains_path, weights_path = directory / f"domains_{n}.npy", directory / f"logw_{n}.npy"
    domains = np.lib.format.open_memmap(domains_path, mode="w+", dtype=np.uint8, shape=(n,))
    log_weights = np.lib.format.open_memmap(weights_path, mode="w+", dtype=np.float32, shape=(n,))
    for start in range(0, n, 1 << 22):
        stop = min(n, start + (1 << 22))
        if layout == "contiguous":
            part = np.arange(start, stop, dtype=np.int64) * k // n
        else:
            part = rng.integers(0, k, stop - start)
        domains[start:stop] = part
        log_weights[start:stop] = rng.standard_normal(stop - start, dtype=np.float32)
    if layout != "contiguous":
        domains[:k] = np.arange(k, dtype=np.uint8)
    domains.flush()
    log_weights.flush()
    del domains, log_weights
    return domains_path, weights_path


def build(domains: np.ndarray, log_weights: Any, track_last_seen: bool = True) -> Any:
    """The Reweighter with every source on (what every size measures); the loss table with
    or without last-seen steps (8 or 4 bytes per item)."""
    from reweight import Reweighter
    from reweight.sources import DomainMixing, InBatchWeights, LossPriority, StaticImportance

    sources = [
        StaticImportance(log_weights, beta=0.5, clip=4.0),
        DomainMixing(3.0),
        InBatchWeights("linupper"),
        LossPriority(refresh_every=1000, track_last_seen=track_last_seen),
    ]
    return Reweighter(domains=domains, sources=sources, total_steps=10_000, infinite=True)


def train_step(rw: Any, draws: Any, rng: np.random.Generator) -> None:
    import torch

    index = torch.tensor(list(itertools.islice(draws, BATCH)))
    rw.reduce(torch.from_numpy(rng.random(BATCH, dtype=np.float32)), {"index": index})
    rw.step()


class Phases:
    """Wall-clock windows of the child's phases, for the parent's memory samples."""

    def __init__(self) -> None:
        self.windows: dict[str, list[float]] = {}

    def start(self, name: str) -> float:
        self.windows[name] = [time.time(), math.inf]
        return time.perf_counter()

    def stop(self, name: str, started: float) -> float:
        self.windows[name][1] = time.time()
        return time.perf_counter() - started


def run_child(args: argparse.Namespace, n: int) -> dict[str, Any]:
    """Every measurement at one size, in this (fresh) process."""
    import torch

    directory = Path(args.dir)
    rng = np.random.default_rng(args.seed)
    small_domains = (np.arange(WARMUP_ITEMS) % args.domains).astype(np.uint8)
    small = build(small_domains, rng.standard_normal(WARMUP_ITEMS).astype(np.float32))
    draws = iter(small.sampler)
    for _ in range(3):
        train_step(small, draws, rng)
    small.sampler.sample(16, seed=0)
    del small, draws
    domains_path, weights_path = write_inputs(n, args.domains, args.layout, args.seed, directory)
    domains = np.load(domains_path, mmap_mode="r")
    phases = Phases()
    base = status_kib("RssAnon")
    started = phases.start("build")
    rw = build(domains, str(weights_path), track_last_seen=args.table == "full")
    build_s = phases.stop("build", started)
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

    plain: list[float] = []
    refresh: list[float] = []
    phases.start("steps")
    for step in range(args.steps):
        start = time.perf_counter()
        train_step(rw, iterator, rng)
        elapsed = time.perf_counter() - start
        after = step + 1  # the step reached: LossPriority refreshes at 1, 2, 4, 8, ...
        (refresh if after & (after - 1) == 0 else plain).append(elapsed)
    phases.stop("steps", 0.0)
    resident = (status_kib("RssAnon") - base) * 1024  # every array touched by now
    log(f"  steps: {statistics.median(plain) * 1e3:.1f} ms, refresh {max(refresh):.1f} s")
    result: dict[str, Any] = {
        "n": n,
        "layout": args.layout,
        "table": args.table,
        "num_domains": args.domains,
        "held_bytes": held,
        "base_anon_kib": base,
        "build_s": build_s,
        "bytes_per_item": held / n,
        "resident_bytes_per_item": resident / n,
        "sample_draws_per_s": sample_rate,
        "iter_draws_per_s": iter_rate,
        "step_ms": statistics.median(plain) * 1e3,
        "refresh_step_s": max(refresh),
    }
    if "files" in args.state:
        path = directory / f"reweighter_{n}"
        started = phases.start("save_files")
        rw.save(path)
        result["files_save_s"] = phases.stop("save_files", started)
        result["files_bytes_per_item"] = sum(f.stat().st_size for f in path.iterdir()) / n
        started = phases.start("load_files")
        rw.load(path)
        result["files_load_s"] = phases.stop("load_files", started)
        shutil.rmtree(path)
        log(f"  files: save {result['files_save_s']:.1f} s, load {result['files_load_s']:.1f} s")
    if "snapshot" in args.state:
        file = directory / f"reweighter_{n}.pt"
        started = phases.start("save_snapshot")
        torch.save(rw.state_dict(), file)
        result["snapshot_save_s"] = phases.stop("save_snapshot", started)
        result["snapshot_bytes_per_item"] = file.stat().st_size / n
        started = phases.start("load_snapshot")
        rw.load_state_dict(torch.load(file, mmap=True, weights_only=False))
        result["snapshot_load_s"] = phases.stop("load_snapshot", started)
        file.unlink()
        log(
            f"  snapshot: save {result['snapshot_save_s']:.1f} s, "
            f"load {result['snapshot_load_s']:.1f} s"
        )
    domains_path.unlink()
    weights_path.unlink()
    result["phases"] = phases.windows
    return result


def watch(pid: int, samples: list[tuple[float, int]], done: threading.Event) -> None:
    """Samples the process's RssAnon (KiB) every 10 ms until ``done`` or its exit."""
    while not done.is_set():
        try:
            samples.append((time.time(), status_kib("RssAnon", pid)))
        except (OSError, KeyError):
            return
        time.sleep(0.01)


PEAKS = {
    "build": "build_peak_ratio",
    "steps": "step_peak_ratio",
    "save_files": "files_save_peak_ratio",
    "load_files": "files_load_peak_ratio",
    "save_snapshot": "snapshot_save_peak_ratio",
    "load_snapshot": "snapshot_load_peak_ratio",
}


def run_size(args: argparse.Namespace, n: int) -> dict[str, Any]:
    """One size in a fresh process, its anonymous memory sampled from outside."""
    command = [sys.executable, __file__, "--child", str(n), "--layout", args.layout]
    command += ["--domains", str(args.domains), "--seed", str(args.seed), "--dir", args.dir]
    command += [
        "--table",
        args.table,
        "--steps",
        str(args.steps),
        "--state",
        ",".join(sorted(args.state)) or "none",
    ]
    samples: list[tuple[float, int]] = []
    done = threading.Event()
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as child:
        watcher = threading.Thread(target=watch, args=(child.pid, samples, done), daemon=True)
        watcher.start()
        out, _ = child.communicate()
        done.set()
        watcher.join()
    if child.returncode != 0:
        raise SystemExit(f"the run at N = {n} failed (exit {child.returncode}).")
    row = json.loads(out.strip().splitlines()[-1])
    for phase, (t0, t1) in row.pop("phases").items():
        inside = [kib for t, kib in samples if t0 <= t <= t1]
        if inside:
            peak = (max(inside) - row["base_anon_kib"]) * 1024
            row[PEAKS[phase]] = peak / row["held_bytes"]
    row["memory_samples"] = len(samples)
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for n in args.sizes:
        log(f"N = {n:.3g} ({args.layout})")
        rows.append(run_size(args, n))
    return {"targets": TARGETS, "results": rows}


def ratio(row: dict[str, Any], key: str) -> str:
    return f"{row[key]:>6.2f}x" if key in row else f"{'-':>7}"


def seconds(row: dict[str, Any], *keys: str) -> str:
    return f"{sum(row[k] for k in keys):>6.1f}" if keys[0] in row else f"{'-':>6}"


def print_table(report: dict[str, Any]) -> None:
    header = (
        f"{'N':>9} {'layout':>11} {'table':>7} {'B/item':>7} {'RSS':>6} {'build pk':>8} "
        f"{'step pk':>7} "
        f"{'sample/s':>9} {'iter/s':>8} {'step ms':>7} {'refresh s':>9}"
    )
    print(header)
    for r in report["results"]:
        print(
            f"{r['n']:>9.3g} {r['layout']:>11} {r['table']:>7} {r['bytes_per_item']:>7.2f} "
            f"{r['resident_bytes_per_item']:>6.2f} {ratio(r, 'build_peak_ratio')} "
            f"{ratio(r, 'step_peak_ratio')} {r['sample_draws_per_s'] / 1e6:>8.2f}M "
            f"{r['iter_draws_per_s'] / 1e6:>7.2f}M {r['step_ms']:>7.1f} "
            f"{r['refresh_step_s']:>9.2f}"
        )
    print(
        f"\n{'N':>9} {'state':>9} {'save s':>6} {'load s':>6} {'save pk':>7} {'load pk':>7} "
        f"{'disk B/item':>11}"
    )
    for r in report["results"]:
        for way in ("files", "snapshot"):
            if f"{way}_save_s" in r:
                print(
                    f"{r['n']:>9.3g} {way:>9} {r[f'{way}_save_s']:>6.1f} "
                    f"{r[f'{way}_load_s']:>6.1f} {ratio(r, f'{way}_save_peak_ratio')} "
                    f"{ratio(r, f'{way}_load_peak_ratio')} "
                    f"{r[f'{way}_bytes_per_item']:>11.4f}"
                )
    t = report["targets"]
    print(
        f"targets: <= {t['bytes_per_item']} B/item steady, build peak <= "
        f"{t['build_peak_ratio']}x steady (peaks: RssAnon over the baseline / steady bytes)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=None, help="comma-separated N (default 1e8,3e8)")
    parser.add_argument("--layout", default="contiguous", choices=["contiguous", "interleaved"])
    parser.add_argument("--domains", type=int, default=64)
    parser.add_argument(
        "--table",
        default="full",
        choices=["full", "compact"],
        help="the loss table with last-seen steps (full, 8 B/item, the default) or without "
        "(compact: LossPriority(track_last_seen=False), 4 B/item)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=STEPS, help="training steps (>= 3)")
    parser.add_argument(
        "--state",
        default="files,snapshot",
        help="how to save and load: files (Reweighter.save/load), snapshot (state_dict + "
        "torch.save, ~2x steady), both comma-separated, or none",
    )
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="inputs and checkpoints")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="smoke test at N = 1e6")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.state = {way for way in args.state.split(",") if way and way != "none"}
    unknown = args.state - {"files", "snapshot"}
    if unknown:
        parser.error(f"--state: unknown {sorted(unknown)}; use files, snapshot or none")
    if args.steps < 3:
        parser.error(f"--steps must be >= 3 (a step without a refresh), got {args.steps}")
    if args.child is not None:
        print(json.dumps(run_child(args, args.child)))
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
