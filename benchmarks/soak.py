"""Soak test: a Reweighter with every source on, updated every step for a long run; resident
memory, draw rate and checkpoint size must stay flat.

    python benchmarks/soak.py                     # 10^7 items, 10,000 steps (tens of minutes)
    python benchmarks/soak.py --json              # JSON only
    python benchmarks/soak.py --quick             # 10^5 items, 200 steps (the test's smoke run)

Every step draws one batch from ``iter(reweighter.sampler)`` (what a DataLoader does), makes
synthetic per-sample losses for it (no model), and calls ``reduce()`` and ``step()``: the
sources are static log weights (as loss weights), ODM online domain mixing (π changes every
step), LinUpper in-batch weights and loss-table priorities (as the proposal, fully refreshed
every ``--refresh-every`` steps). Every ``--record-every`` steps it records the process's
resident memory (VmRSS, RssAnon), the draw rate over the window (draws per second of time
spent drawing, wall clock and the drawing thread's CPU time, which a shared machine's load
does not move), the step rate, and the size of ``torch.save(reweighter.state_dict())``. The
curve is written as JSON and a PNG into ``--out``.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from reweight import Reweighter
from reweight.sources import DomainMixing, InBatchWeights, LossPriority, StaticImportance

RESULTS = Path(__file__).resolve().parent / "results"


def memory_mb() -> dict[str, float]:
    """The process's VmRSS and RssAnon in MB, from /proc/self/status (NaN off Linux)."""
    out = {"rss_mb": float("nan"), "anon_mb": float("nan")}
    keys = {"VmRSS:": "rss_mb", "RssAnon:": "anon_mb"}
    try:
        with open("/proc/self/status") as status:
            for line in status:
                field = line.split()
                if field and field[0] in keys:
                    out[keys[field[0]]] = int(field[1]) / 1024
    except OSError:
        pass
    return out


def build(items: int, domains: int, steps: int, refresh_every: int, seed: int) -> Reweighter:
    """A Reweighter over ``items`` items in ``domains`` interleaved domains, every source on."""
    rng = np.random.default_rng(seed)
    domain_ids = rng.integers(0, domains, size=items, dtype=np.uint8)
    domain_ids[:domains] = np.arange(domains, dtype=np.uint8)  # every domain has items
    log_weights = rng.normal(0.0, 1.0, size=items).astype(np.float32)
    sources = [
        StaticImportance(log_weights, beta=0.3, clip=3.0, mode="weight"),
        DomainMixing({"kind": "odm", "eta": 1.0}, mode="sample"),
        InBatchWeights("linupper", r={"kind": "linear", "start": 1.0, "end": 0.4}),
        LossPriority(pressure=10.0, refresh_every=refresh_every, mode="proposal"),
    ]
    return Reweighter(
        domains=domain_ids,
        domain_names=[f"d{k}" for k in range(domains)],
        sources=sources,
        total_steps=steps,
        seed=seed,
        infinite=True,
    )


def synthetic_losses(
    index: np.ndarray, domain: np.ndarray, progress: float, rng: np.random.Generator
) -> torch.Tensor:
    """Per-sample losses: a per-domain level, a fixed per-item difficulty (a hash of the
    index), noise, and a decay over the run."""
    difficulty = ((index * 2654435761) % 1000) / 1000.0
    level = 2.0 + 0.02 * domain + difficulty + 0.3 * rng.standard_normal(index.size)
    return torch.from_numpy(np.abs(level) * (1.0 - 0.5 * progress))


def state_bytes(rw: Reweighter) -> tuple[int, float]:
    """Size of ``torch.save(rw.state_dict())`` in bytes, and the seconds it took."""
    start = time.perf_counter()
    buffer = io.BytesIO()
    torch.save(rw.state_dict(), buffer)
    return buffer.getbuffer().nbytes, time.perf_counter() - start


def _window_median(points: list[dict[str, Any]], key: str, first: bool, steps: int) -> float:
    """Median of ``key`` over the records of the first (or last) 10% of the run's steps (the
    median: a shared machine's load spikes hit single windows)."""
    tenth = max(1, steps // 10)
    chosen = [
        p[key] for p in points if (p["step"] <= tenth if first else p["step"] > steps - tenth)
    ]
    return float(np.median(chosen)) if chosen else float("nan")


def summarize(points: list[dict[str, Any]], steps: int) -> dict[str, Any]:
    """RSS slope over the second half (least squares), draw rate first vs last 10%, state size
    spread."""
    half = [p for p in points if p["step"] >= steps // 2]
    x = np.array([p["step"] for p in half], dtype=np.float64)
    slope = {}
    for key in ("rss_mb", "anon_mb"):
        y = np.array([p[key] for p in half], dtype=np.float64)
        per_step = float(np.polyfit(x, y, 1)[0]) if x.size >= 2 else float("nan")
        slope[f"{key}_per_1000_steps"] = 1000 * per_step
    first = _window_median(points, "draws_per_s", True, steps)
    last = _window_median(points, "draws_per_s", False, steps)
    first_cpu = _window_median(points, "draws_per_cpu_s", True, steps)
    last_cpu = _window_median(points, "draws_per_cpu_s", False, steps)
    sizes = [p["state_bytes"] for p in points]
    rss = [p["rss_mb"] for p in points]
    return {
        "second_half_slope": slope,
        "rss_mb_min_max": [min(rss), max(rss)],
        "draws_per_s_first_10pct": first,
        "draws_per_s_last_10pct": last,
        "draws_per_s_last_over_first": last / first,
        "draws_per_cpu_s_first_10pct": first_cpu,
        "draws_per_cpu_s_last_10pct": last_cpu,
        "draws_per_cpu_s_last_over_first": last_cpu / first_cpu,
        "steps_per_s_first_10pct": _window_median(points, "steps_per_s", True, steps),
        "steps_per_s_last_10pct": _window_median(points, "steps_per_s", False, steps),
        "state_bytes_min_max": [min(sizes), max(sizes)],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Builds, soaks and returns the report (curve and summary)."""
    warm = build(1000, args.domains, 10, 2, args.seed)  # compiles the kernels: not timed
    warm_draws = iter(warm.sampler)
    for _ in range(4):
        index = np.fromiter(itertools.islice(warm_draws, 8), np.int64, 8)
        warm.reduce(torch.ones(8, dtype=torch.float64), {"index": torch.from_numpy(index)})
        warm.step()
    del warm, warm_draws
    memory = {"start": memory_mb()}
    t0 = time.perf_counter()
    rw = build(args.items, args.domains, args.steps, args.refresh_every, args.seed)
    build_s = time.perf_counter() - t0
    memory["built"] = memory_mb()
    rng = np.random.default_rng(args.seed + 1)
    draws = iter(rw.sampler)
    points: list[dict[str, Any]] = []
    draw_time = draw_cpu = step_time = 0.0
    window_start = 0
    for step in range(1, args.steps + 1):
        t0, c0 = time.perf_counter(), time.thread_time()
        index = np.fromiter(itertools.islice(draws, args.batch_size), np.int64, args.batch_size)
        t1 = time.perf_counter()
        draw_cpu += time.thread_time() - c0
        losses = synthetic_losses(index, rw.sampler.item_domains(index), rw.progress, rng)
        rw.reduce(losses, {"index": torch.from_numpy(index)})
        rw.step()
        draw_time += t1 - t0
        step_time += time.perf_counter() - t0
        if step % args.record_every and step != args.steps:
            continue
        size, save_s = state_bytes(rw)
        window = step - window_start
        points.append(
            {
                "step": step,
                **memory_mb(),
                "draws_per_s": window * args.batch_size / draw_time,
                "draws_per_cpu_s": window * args.batch_size / max(draw_cpu, 1e-9),
                "steps_per_s": window / step_time,
                "state_bytes": size,
                "state_save_s": save_s,
            }
        )
        print(
            f"step {step}: rss {points[-1]['rss_mb']:.1f} MB, "
            f"{points[-1]['draws_per_s']:.0f} draws/s, state {size / 1e6:.1f} MB",
            file=sys.stderr,
        )
        draw_time = draw_cpu = step_time = 0.0
        window_start = step
    return {
        "benchmark": "soak",
        "config": {k: v for k, v in vars(args).items() if k not in ("json", "out")},
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "torch_num_threads": torch.get_num_threads(),
        },
        "sources": rw.source_names,
        "build_s": build_s,
        "memory": memory,
        "points": points,
        "summary": summarize(points, args.steps),
    }


def plot(report: dict[str, Any], path: Path) -> None:
    """RSS, draw rate and state size against the step, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points, cfg = report["points"], report["config"]
    steps = [p["step"] for p in points]
    fig, axes = plt.subplots(3, 1, figsize=(7, 7.5), sharex=True)
    axes[0].plot(steps, [p["rss_mb"] for p in points], label="VmRSS")
    axes[0].plot(steps, [p["anon_mb"] for p in points], label="RssAnon")
    axes[0].set_ylabel("MB")
    axes[0].legend()
    axes[1].plot(steps, [p["draws_per_s"] / 1e3 for p in points], label="per wall second")
    axes[1].plot(steps, [p["draws_per_cpu_s"] / 1e3 for p in points], label="per CPU second")
    axes[1].legend()
    axes[1].set_ylabel(f"draws/s (k, batches of {cfg['batch_size']})")
    axes[2].plot(steps, [p["state_bytes"] / 1e6 for p in points])
    axes[2].set_ylabel("state_dict MB")
    axes[2].set_xlabel("step")
    for ax in axes:
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    fig.suptitle(f"soak: {cfg['items']:.0e} items, every source, update every step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(report: dict[str, Any]) -> str:
    """The readable summary."""
    cfg, summary = report["config"], report["summary"]
    lines = [
        f"soak: {cfg['items']:,} items, {cfg['domains']} domains, {cfg['steps']:,} steps of "
        f"{cfg['batch_size']}, sources {', '.join(report['sources'])}; "
        f"build {report['build_s']:.1f} s",
        f"{'step':>7} {'rss MB':>9} {'anon MB':>9} {'draws/s':>10} {'steps/s':>9} {'state MB':>9}",
    ]
    stride = max(1, len(report["points"]) // 20)
    shown = report["points"][::stride]
    if shown[-1] is not report["points"][-1]:
        shown.append(report["points"][-1])
    for p in shown:
        lines.append(
            f"{p['step']:>7} {p['rss_mb']:>9.1f} {p['anon_mb']:>9.1f} {p['draws_per_s']:>10.0f} "
            f"{p['steps_per_s']:>9.1f} {p['state_bytes'] / 1e6:>9.2f}"
        )
    slope = summary["second_half_slope"]
    lo, hi = summary["state_bytes_min_max"]
    lines += [
        f"RSS slope over the second half: {slope['rss_mb_per_1000_steps']:+.3f} MB / 1000 steps "
        f"(anon {slope['anon_mb_per_1000_steps']:+.3f}); RSS range "
        f"{summary['rss_mb_min_max'][0]:.1f}–{summary['rss_mb_min_max'][1]:.1f} MB",
        f"draw rate (median of windows): first 10% {summary['draws_per_s_first_10pct']:.0f}/s, "
        "last 10% "
        f"{summary['draws_per_s_last_10pct']:.0f}/s (last/first "
        f"{summary['draws_per_s_last_over_first']:.3f}); steps/s "
        f"{summary['steps_per_s_first_10pct']:.1f} → {summary['steps_per_s_last_10pct']:.1f}",
        f"draws per CPU second of the drawing thread: first 10% "
        f"{summary['draws_per_cpu_s_first_10pct']:.0f}, last 10% "
        f"{summary['draws_per_cpu_s_last_10pct']:.0f} (last/first "
        f"{summary['draws_per_cpu_s_last_over_first']:.3f})",
        f"state_dict: {lo:,}–{hi:,} bytes",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--items", type=lambda s: int(float(s)), default=10**7)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=32, help="global batch per step")
    parser.add_argument("--domains", type=int, default=64)
    parser.add_argument("--record-every", type=int, default=100, help="steps between records")
    parser.add_argument("--refresh-every", type=int, default=100, help="LossPriority refresh")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="10^5 items, 200 steps")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for JSON + PNG")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args(argv)
    if args.quick:
        args.items, args.steps, args.record_every = 10**5, 200, 20
    report = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "soak-quick" if args.quick else "soak"
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    plot(report, args.out / f"{name}.png")
    print(json.dumps(report) if args.json else table(report))
    return report


if __name__ == "__main__":
    main()
