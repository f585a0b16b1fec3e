"""Smoke test of benchmarks/static.py: our side only, on a small corpus, JSON output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_KEYS = {"startup_s", "fit_s", "weights_s", "resample_s", "raw_docs", "target_docs",
            "fit_docs_per_s", "weights_docs_per_s", "total_s", "pipeline_docs_per_s"}  # fmt: skip


@pytest.mark.slow
def test_quick_json_run_of_our_side(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "benchmarks/static.py", "--quick", "--skip-reference", "--json",
         "--work", str(tmp_path / "work"), "--max-raw-docs", "800", "--scale-docs", "3000",
         "--workers", "2"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout)  # stdout is exactly one JSON object
    assert set(report) == {
        "benchmark", "config", "machine", "corpus", "targets", "reference", "runs",
        "kl_reduction", "topic_share", "scaling", "checks",
    }  # fmt: skip
    assert report["reference"] == {"available": False, "error": "skipped (--skip-reference)"}
    assert report["checks"] == {}
    corpus = report["corpus"]
    assert corpus["raw_stdlib_docs"] == 800
    assert corpus["raw_docs"] == 800 + corpus["raw_topic_docs"]
    assert corpus["target_docs"] > 0 and 500 < corpus["mean_doc_chars"] < 1200
    for name in ("ours_1", "ours_all"):
        run = report["runs"][name]
        assert set(run) == RUN_KEYS
        assert run["raw_docs"] == corpus["raw_docs"]
        assert all(run[key] > 0 for key in RUN_KEYS)
    assert report["config"]["workers"] == 2
    kl = report["kl_reduction"]["ours_space"]
    assert set(kl) == {"ours_1", "ours_nofilter", "ours_alpha0", "random"}
    assert kl["ours_1"] > kl["random"]  # DSIR beats a random selection of the same size
    assert report["topic_share"]["ours_1"] > 2 * report["topic_share"]["raw"]
    scaling = report["scaling"]
    assert scaling["docs"] >= 3000 and scaling["ours_all"]["workers"] == 2
    assert scaling["hardware"]["workers"] == 2 and scaling["hardware"]["speedup"] > 0
    assert scaling["speedup"] == pytest.approx(
        scaling["ours_all"]["weights_docs_per_s"] / scaling["ours_1"]["weights_docs_per_s"]
    )
