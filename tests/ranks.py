"""Launch a test harness on several gloo ranks, one process each, as torchrun would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_ranks(module: str, args: list[str], log_dir: Path, world: int, timeout: float) -> None:
    """Run ``python -m module *args`` on ``world`` ranks and fail with the log of a rank that
    fails. Output goes to files, not pipes: a rank blocked writing to a full pipe that nobody
    reads would stall the other ranks in their next collective."""
    port = str(free_port())
    procs, logs = [], []
    for rank in range(world):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        env.update(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            LOCAL_WORLD_SIZE=str(world),
            NODE_RANK="0",
            WORLD_SIZE=str(world),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
            OMP_NUM_THREADS="1",
        )
        env.pop("CUDA_VISIBLE_DEVICES", None)
        log = log_dir / f"rank{rank}.log"
        logs.append(log)
        with log.open("w") as sink:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", module, *args],
                    cwd=str(REPO_ROOT),
                    env=env,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        for p in procs:
            p.wait(timeout=timeout)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rank, (p, log) in enumerate(zip(procs, logs, strict=True)):
        assert p.returncode == 0, f"rank {rank} exited {p.returncode}:\n{log.read_text()[-8000:]}"
