"""Distributed cost of reweighting: bytes each rank communicates per step and the time of the
gather, measured on gloo ranks on the CPU; and the host work of one step's global batch at the
global batch sizes of larger worlds, measured in one process.

    python benchmarks/comm.py                 # 2 ranks, 32 per rank, 300 steps; table
    python benchmarks/comm.py --json          # JSON only
    python benchmarks/comm.py --quick         # 2 ranks, 30 steps, smaller scaling sizes

Each rank runs what a training step runs (no model): a batch of ``--batch`` items from its own
slice of ``iter(reweighter.sampler)``, synthetic per-sample losses, ``reduce()``, ``step()``,
with every source on (the Reweighter of benchmarks/soak.py). The benchmark wraps
``torch.distributed``'s collectives with a counter (calls, bytes in and out, seconds inside),
installed in the rank process only; the library is unchanged. "Bytes in" is what this rank
hands to a collective, "bytes out" the result buffers it receives. Then, in one process with no
communication, ``reduce()`` + ``step()`` are timed on a global batch of world × batch samples
for ``--worlds`` (what every rank computes when the world is that large).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
import torch.distributed as tdist
from soak import RESULTS, build, synthetic_losses

from reweight import Reweighter

COLLECTIVES = (
    "all_gather",
    "all_gather_into_tensor",
    "all_gather_object",
    "all_reduce",
    "all_to_all",
    "barrier",
    "broadcast",
    "broadcast_object_list",
    "reduce_scatter",
)


def _nbytes(value: Any) -> int:
    """Bytes of the tensors in ``value`` (a tensor or a list of them; 0 for anything else)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    return 0


class Counter:
    """Counts calls, bytes in / out and seconds of the ``torch.distributed`` collectives while
    installed (a benchmark's wrapper: the library's hot path stays as it is)."""

    def __init__(self) -> None:
        self.calls = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.seconds = 0.0
        self._saved: dict[str, Callable[..., Any]] = {}

    def reset(self) -> None:
        self.calls, self.bytes_in, self.bytes_out, self.seconds = 0, 0, 0, 0.0

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def counted(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            self.seconds += time.perf_counter() - start
            self.calls += 1
            if name in ("all_gather", "all_gather_into_tensor", "reduce_scatter", "all_to_all"):
                self.bytes_out += _nbytes(args[0])
                self.bytes_in += _nbytes(args[1])
            else:  # in place: all_reduce, broadcast
                self.bytes_in += _nbytes(args[0]) if args else 0
                self.bytes_out += _nbytes(args[0]) if args else 0
            return result

        return counted

    def install(self) -> None:
        for name in COLLECTIVES:
            fn = getattr(tdist, name, None)
            if fn is not None:
                self._saved[name] = fn
                setattr(tdist, name, self._wrap(name, fn))


def _train_step(rw: Reweighter, draws: Iterator[int], batch: int, rng: np.random.Generator) -> None:
    index = np.fromiter(itertools.islice(draws, batch), np.int64, batch)
    losses = synthetic_losses(index, rw.sampler.item_domains(index), rw.progress, rng)
    rw.reduce(losses, {"index": torch.from_numpy(index)})
    rw.step()


def worker(args: argparse.Namespace) -> None:
    """One rank (started with torchrun's environment): runs the steps, writes its figures."""
    tdist.init_process_group("gloo")
    rank, world = tdist.get_rank(), tdist.get_world_size()
    rw = build(args.items, args.domains, args.steps + args.warmup, 100, args.seed)
    draws = iter(rw.sampler)
    rng = np.random.default_rng(args.seed + 1 + rank)
    counter = Counter()
    counter.install()
    for _ in range(args.warmup):
        _train_step(rw, draws, args.batch, rng)
    tdist.barrier()
    counter.reset()
    per_step: dict[str, list[float]] = {"collective_s": [], "reduce_s": [], "step_s": []}
    for _ in range(args.steps):
        before = counter.seconds
        index = np.fromiter(itertools.islice(draws, args.batch), np.int64, args.batch)
        losses = synthetic_losses(index, rw.sampler.item_domains(index), rw.progress, rng)
        t0 = time.perf_counter()
        rw.reduce(losses, {"index": torch.from_numpy(index)})
        t1 = time.perf_counter()
        rw.step()
        per_step["reduce_s"].append(t1 - t0)
        per_step["step_s"].append(time.perf_counter() - t1)
        per_step["collective_s"].append(counter.seconds - before)
    steps = args.steps
    result = {
        "rank": rank,
        "world_size": world,
        "calls_per_step": counter.calls / steps,
        "bytes_in_per_step": counter.bytes_in / steps,
        "bytes_out_per_step": counter.bytes_out / steps,
        **{f"{k}_median": float(np.median(v)) for k, v in per_step.items()},
        **{f"{k}_mean": float(np.mean(v)) for k, v in per_step.items()},
    }
    Path(args.worker).joinpath(f"rank{rank}.json").write_text(json.dumps(result))
    tdist.barrier()
    tdist.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(args: argparse.Namespace, batch: int) -> list[dict[str, Any]]:
    """Runs ``--world`` ranks as torchrun would and returns each rank's figures."""
    with tempfile.TemporaryDirectory() as tmp:
        port, procs = str(_free_port()), []
        for rank in range(args.world):
            env = {
                **os.environ,
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "WORLD_SIZE": str(args.world),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port,
                "OMP_NUM_THREADS": "1",
            }
            cmd = [sys.executable, __file__, "--worker", tmp, "--batch", str(batch)]
            cmd += ["--items", str(args.items), "--steps", str(args.steps)]
            cmd += ["--warmup", str(args.warmup), "--seed", str(args.seed)]
            procs.append(subprocess.Popen(cmd, env=env, stdout=sys.stderr))
        for proc in procs:
            if proc.wait(timeout=1800):
                raise RuntimeError(f"a rank failed with exit code {proc.returncode}")
        return [json.loads((Path(tmp) / f"rank{r}.json").read_text()) for r in range(args.world)]


def global_batch_cost(args: argparse.Namespace, global_batch: int) -> dict[str, float]:
    """Median ms of ``reduce()`` and of ``step()`` on one process for a global batch."""
    steps = max(5, min(args.steps, 2_000_000 // global_batch))
    rw = build(args.items, args.domains, steps + 5, 100, args.seed)
    draws, rng = iter(rw.sampler), np.random.default_rng(args.seed)
    times: dict[str, list[float]] = {"reduce_ms": [], "step_ms": []}
    for i in range(steps + 5):
        index = np.fromiter(itertools.islice(draws, global_batch), np.int64, global_batch)
        losses = synthetic_losses(index, rw.sampler.item_domains(index), rw.progress, rng)
        t0 = time.perf_counter()
        rw.reduce(losses, {"index": torch.from_numpy(index)})
        t1 = time.perf_counter()
        rw.step()
        if i >= 5:  # warm-up excluded
            times["reduce_ms"].append(1000 * (t1 - t0))
            times["step_ms"].append(1000 * (time.perf_counter() - t1))
    return {k: float(np.median(v)) for k, v in times.items()} | {"steps": steps}


def formula(world: int, batch: int, columns: int = 3) -> dict[str, float]:
    """Computed per-step, per-rank figures of the gather: two all-gathers (lengths, then rows of
    ``columns`` float64 values per sample), and a ring's wire bytes."""
    bytes_in = 8 + batch * columns * 8
    return {
        "world_size": world,
        "batch_per_rank": batch,
        "global_batch": world * batch,
        "bytes_in": bytes_in,
        "bytes_out": world * bytes_in,
        "ring_bytes_sent": (world - 1) * bytes_in,
        "ring_latency_hops": 2 * (world - 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--world", type=int, default=2, help="gloo ranks")
    parser.add_argument("--batches", default="32,1024", help="per-rank batch sizes to run")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--items", type=lambda s: int(float(s)), default=10**6)
    parser.add_argument("--domains", type=int, default=64)
    parser.add_argument("--worlds", default="1,8,64,1024", help="worlds of the one-process runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="30 steps, batch 32, worlds 1,8")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # the rank's output directory
    parser.add_argument("--batch", type=int, default=32, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return None
    if args.quick:
        args.steps, args.warmup, args.worlds, args.items = 30, 5, "1,8", 10**5
        args.batches = "32"
    batches = [int(b) for b in args.batches.split(",")]
    measured = []
    for batch in batches:
        ranks = launch(args, batch)
        measured.append({"batch_per_rank": batch, "ranks": ranks, "formula": formula(2, batch)})
    scaling = [
        {"world_size": w, "global_batch": w * batches[0], **global_batch_cost(args, w * batches[0])}
        for w in (int(x) for x in args.worlds.split(","))
    ]
    report = {
        "benchmark": "comm",
        "config": {
            k: v for k, v in vars(args).items() if k not in ("json", "worker", "batch", "out")
        },
        "measured": measured,
        "global_batch_cost": scaling,
        "computed": [formula(w, b) for w in (8, 1024) for b in batches],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = "comm-quick" if args.quick else "comm"
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report) if args.json else table(report))
    return report


def table(report: dict[str, Any]) -> str:
    """The readable tables."""
    lines = [f"measured: {report['config']['world']} gloo ranks on CPU, every source on"]
    lines.append(
        f"{'batch/rank':>10} {'rank':>4} {'calls':>5} {'B in':>7} {'B out':>7} "
        f"{'gather ms':>9} {'reduce ms':>9} {'step ms':>8}"
    )
    for row in report["measured"]:
        for r in row["ranks"]:
            lines.append(
                f"{row['batch_per_rank']:>10} {r['rank']:>4} {r['calls_per_step']:>5.1f} "
                f"{r['bytes_in_per_step']:>7.0f} {r['bytes_out_per_step']:>7.0f} "
                f"{1000 * r['collective_s_median']:>9.3f} {1000 * r['reduce_s_median']:>9.3f} "
                f"{1000 * r['step_s_median']:>8.3f}"
            )
    lines.append("one process, reduce()+step() on the global batch of a world (median ms)")
    lines.append(f"{'world':>6} {'global batch':>12} {'reduce ms':>9} {'step ms':>8}")
    for s in report["global_batch_cost"]:
        lines.append(
            f"{s['world_size']:>6} {s['global_batch']:>12} {s['reduce_ms']:>9.3f} "
            f"{s['step_ms']:>8.3f}"
        )
    lines.append("computed per rank per step (2 all-gathers; 3 float64 columns per sample)")
    lines.append(f"{'world':>6} {'batch':>5} {'B in':>7} {'B out':>11} {'ring B sent':>11}")
    for c in report["computed"]:
        lines.append(
            f"{c['world_size']:>6} {c['batch_per_rank']:>5} {c['bytes_in']:>7} "
            f"{c['bytes_out']:>11,} {c['ring_bytes_sent']:>11,}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
