"""Smoke test of benchmarks/tokenizer.py: a quick JSON run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_json_run() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "benchmarks/tokenizer.py", "--quick", "--json", "--ascii-mb", "0.5",
         "--mixed-mb", "0.2", "--repeats", "1"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout)
    assert report["checks"] == {"ascii_counts_identical": True}
    ascii_run, mixed = report["results"]["ascii"], report["results"]["mixed"]
    assert ascii_run["ngrams_before"] == ascii_run["ngrams_after"] > 0
    assert mixed["ngrams_after"] < mixed["ngrams_before"]  # marks no longer split words
    assert all(r["ratio"] > 0 and r["before_s"] > 0 for r in (ascii_run, mixed))
