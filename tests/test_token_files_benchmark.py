"""Smoke test of benchmarks/token_files.py: a quick JSON run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_json_run(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "benchmarks/token_files.py", "--quick", "--json", "--draws", "64",
         "--tmp", str(tmp_path)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout)
    assert report["checks"]["blocks_match_the_files"] is True
    assert report["checks"]["all_draws_made"] is True
    results = report["results"]
    assert results["drawn"] == 64 and sum(results["drawn_per_domain"]) == 64
    assert set(results["memory_mb"]) >= {"start", "built", "iterated"}
    assert list(tmp_path.iterdir()) == []  # the temporary token files are removed
