"""benchmarks/overhead.py runs (smoke mode) and prints its JSON result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_overhead_benchmark_quick_json(tmp_path: Path) -> None:
    env = {**os.environ, "REWEIGHT_CACHE": str(tmp_path / "cache")}
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "overhead.py"), "--quick", "--json"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["benchmark"] == "overhead" and result["target"] == 1.02
    assert result["ratio"] > 0 and len(result["ratio_per_round"]) == result["rounds"]
    assert 0 < result["reweight_share"] < 1
