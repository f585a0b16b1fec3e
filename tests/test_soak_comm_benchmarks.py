"""Smoke tests of benchmarks/soak.py and benchmarks/comm.py: --quick --json runs and prints the
documented figures (no timing assertions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--json", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_soak_quick(tmp_path: Path) -> None:
    report = _run("soak.py", tmp_path)
    assert report["config"]["items"] == 10**5 and report["config"]["steps"] == 200
    assert report["sources"] == ["static", "mixing", "in_batch", "loss_priority"]
    points = report["points"]
    assert [p["step"] for p in points] == list(range(20, 201, 20))
    for p in points:
        assert p["rss_mb"] > 0 and p["draws_per_s"] > 0 and p["steps_per_s"] > 0
        assert p["state_bytes"] > 0
    summary = report["summary"]
    assert set(summary["second_half_slope"]) == {"rss_mb_per_1000_steps", "anon_mb_per_1000_steps"}
    assert summary["draws_per_s_last_over_first"] > 0
    assert json.loads((tmp_path / "soak-quick.json").read_text())["points"] == points
    assert (tmp_path / "soak-quick.png").stat().st_size > 0


@pytest.mark.slow
def test_comm_quick(tmp_path: Path) -> None:
    report = _run("comm.py", tmp_path)
    (row,) = report["measured"]
    assert row["batch_per_rank"] == 32 and len(row["ranks"]) == 2
    for rank in row["ranks"]:
        assert rank["world_size"] == 2 and rank["calls_per_step"] >= 1
        # an all-gather: every rank receives what every rank hands in
        assert rank["bytes_out_per_step"] == pytest.approx(2 * rank["bytes_in_per_step"])
        assert rank["collective_s_median"] > 0
    assert [s["world_size"] for s in report["global_batch_cost"]] == [1, 8]
    assert {c["world_size"] for c in report["computed"]} == {8, 1024}
    assert (tmp_path / "comm-quick.json").exists()
