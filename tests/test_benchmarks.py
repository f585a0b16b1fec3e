"""Smoke test of benchmarks/sampler.py: --quick --json prints the documented JSON object."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

RESULT_RATES = (
    "build_s",
    "first_update_s",
    "draws_per_s",
    "iter_draws_per_s",
    "updates_per_s_1024",
    "updates_per_s_65536",
    "memory_bytes",
    "bytes_per_item",
    "step_ms",
    "speedup_vs_multinomial_2p24",
)
TARGET_KEYS = {
    "draws_per_s",
    "updates_per_s_1024",
    "updates_per_s_65536",
    "bytes_per_item",
    "speedup_vs_multinomial_2p24",
}


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


@pytest.mark.slow
def test_quick_json_run() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT)
    proc = subprocess.run(
        [sys.executable, "benchmarks/sampler.py", "--quick", "--json"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout)  # stdout is exactly one JSON object

    assert set(report) == {
        "benchmark",
        "config",
        "machine",
        "jit_warmup_s",
        "targets",
        "multinomial_2p24_step_ms",
        "results",
        "baselines",
    }
    config = report["config"]
    assert config["quick"] is True
    assert config["aggregate"] == "median"
    assert config["sizes"] == [100_000, 1_000_000]
    assert config["layouts"] == ["contiguous", "interleaved"]
    for key in ("platform", "cpu_count", "python", "numpy", "torch", "numba"):
        assert key in report["machine"]
    assert _positive(report["machine"]["cpu_count"])
    assert _positive(report["multinomial_2p24_step_ms"])
    assert set(report["targets"]) == {
        "n",
        "draws_per_s",
        "updates_per_s",
        "bytes_per_item",
        "speedup_vs_multinomial_2p24",
    }

    results = report["results"]
    assert {(r["n"], r["layout"]) for r in results} == {
        (n, layout) for n in config["sizes"] for layout in config["layouts"]
    }
    for r in results:
        assert r["num_domains"] == config["num_domains"]
        for key in RESULT_RATES:
            assert _positive(r[key]), (key, r[key])
        assert r["bytes_per_item"] == pytest.approx(r["memory_bytes"] / r["n"])
        assert r["speedup_vs_multinomial_2p24"] == pytest.approx(
            report["multinomial_2p24_step_ms"] / r["step_ms"]
        )
        assert set(r["meets_targets"]) == TARGET_KEYS
        assert all(isinstance(v, bool) for v in r["meets_targets"].values())

    baselines = report["baselines"]
    multinomial = {b["n"] for b in baselines if b["name"] == "torch.multinomial"}
    numpy_choice = {b["n"] for b in baselines if b["name"] == "numpy.choice"}
    assert multinomial == {100_000, 1_000_000, 2**24}
    assert numpy_choice == {100_000, 1_000_000}
    for b in baselines:
        assert set(b) == {"name", "n", "steps", "step_ms"}
        assert _positive(b["steps"]) and _positive(b["step_ms"])
