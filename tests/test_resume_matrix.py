"""Resume equals the uninterrupted run, bitwise (DESIGN.md, "The draw stream contract").

The matrix: {plain PyTorch loop, Lightning} × {num_workers 0, 2 with persistent workers} ×
{1, 2 ranks} × {total_steps given, from Lightning's max_steps, from max_epochs} × {each source
in sample and weight modes, and all together}. A run is stopped after ``stop`` steps (mid-epoch
0, at the end of epoch 0, mid-epoch 1), checkpointed, and resumed in fresh objects; the resumed
run must train on the same items with the same loss weights, end with the same Reweighter
state and the same model parameters as the uninterrupted run. One rank runs every cell in this
process; two ranks run in two gloo processes (the full product over framework × workers ×
length, the sources spread over it). A run killed with SIGKILL at a random step after its first
checkpoint resumes from its last checkpoint the same way.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.ranks import run_ranks
from tests.resume_harness import SOURCES, STEPS, run_case
from tests.state_compare import state_differences

REPO_ROOT = Path(__file__).resolve().parents[1]
STOPS = (3, 5, 7)  # mid-epoch 0, the end of epoch 0, mid-epoch 1 (epochs of 5 steps)


def _cases(full_sources: bool) -> list[dict[str, Any]]:
    """Every cell of framework × workers × length, with every source (``full_sources``) or,
    for Lightning, two sources per cell taken in turn (all of them over the cells)."""
    cells = [("plain", w, "given") for w in (0, 2)]
    cells += [("lightning", w, n) for w in (0, 2) for n in ("given", "max_steps", "max_epochs")]
    in_turn = itertools.cycle(SOURCES)
    cases = []
    for index, (framework, workers, length) in enumerate(cells):
        if full_sources or framework == "plain":
            chosen: tuple[str, ...] = SOURCES
        else:
            chosen = (next(in_turn), next(in_turn))
        for k, source in enumerate(chosen):
            cases.append(
                {
                    "name": f"{framework}-w{workers}-{length}-{source}",
                    "framework": framework,
                    "workers": workers,
                    "length": length,
                    "source": source,
                    "stop": STOPS[(index + k) % len(STOPS)],
                }
            )
    return cases


def _check(case: dict[str, Any], result: dict[str, Any]) -> None:
    a, b, c = result["a"], result["b"], result["c"]
    stop = case["stop"]
    by_step = {t["step"]: t for t in a["trace"]}
    assert [t["step"] for t in a["trace"]] == list(range(STEPS))
    assert [t["step"] for t in b["trace"]] == list(range(stop))
    assert [t["step"] for t in c["trace"]] == list(range(stop, STEPS)), case
    for t in b["trace"] + c["trace"]:
        reference = by_step[t["step"]]
        assert t["items"] == reference["items"], (case["name"], t["step"])
        assert torch.equal(t["weights"], reference["weights"]), (case["name"], t["step"])
    differences = state_differences(a["state"], c["state"])
    assert not differences, (case["name"], differences[:10])
    for p_a, p_c in zip(a["params"], c["params"], strict=True):
        assert torch.equal(p_a, p_c), case["name"]
    assert c["total_steps"] == a["total_steps"] == STEPS
    assert a["matched_every_batch"] and b["matched_every_batch"] and c["matched_every_batch"]


@pytest.mark.slow
@pytest.mark.parametrize("case", _cases(full_sources=True), ids=lambda case: case["name"])
def test_resume_equals_the_uninterrupted_run_on_one_rank(
    case: dict[str, Any], tmp_path: Path
) -> None:
    _check(case, run_case(case, tmp_path))


def _run_ranks(cases: list[dict[str, Any]], out: Path, world: int) -> list[dict[str, Any]]:
    out.mkdir(parents=True, exist_ok=True)
    cases_file = out / "cases.json"
    cases_file.write_text(json.dumps(cases))
    run_ranks("tests.resume_harness", [str(cases_file), str(out)], out, world, timeout=1500)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world)]


@pytest.mark.slow
@pytest.mark.distributed
def test_resume_equals_the_uninterrupted_run_on_two_ranks(tmp_path: Path) -> None:
    cases = _cases(full_sources=False)
    assert {c["source"] for c in cases} == set(SOURCES)
    ranks = _run_ranks(cases, tmp_path, world=2)
    for case in cases:
        for rank in ranks:
            _check(case, rank[case["name"]])
        # Every rank holds the same state (any rank's checkpoint is the whole state).
        assert not state_differences(
            ranks[0][case["name"]]["c"]["state"], ranks[1][case["name"]]["c"]["state"]
        )
        # The ranks trained on disjoint slices of one global sequence.
        a0, a1 = (r[case["name"]]["a"]["trace"] for r in ranks)
        assert [t["items"] for t in a0] != [t["items"] for t in a1]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_a_run_killed_with_sigkill_resumes_as_if_uninterrupted(
    workers: int, tmp_path: Path
) -> None:
    kill_at = random.randint(4, STEPS - 1)  # after the first checkpoint (step 3)
    case = {
        "name": f"killed-w{workers}",
        "framework": "lightning",
        "workers": workers,
        "length": "max_steps",
        "source": "all",
    }
    work = tmp_path / "kill" / "work"
    killed = _run_single(tmp_path / "kill", [{**case, "phase": "kill", "kill_at": kill_at}])
    assert killed.returncode == -9, (kill_at, killed.stderr[-3000:])
    checkpoints = sorted(work.glob(f"{case['name']}-step=*.ckpt"), key=_step_of)
    last = checkpoints[-1]
    # Killed in on_train_batch_end before that step's checkpoint: the last one is older.
    assert _step_of(last) == 3 * ((kill_at - 1) // 3), (kill_at, checkpoints)
    resumed = _run_single(
        tmp_path / "resume", [{**case, "phase": "resume", "checkpoint": str(last)}]
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    uninterrupted = _run_single(tmp_path / "straight", [{**case, "phase": "uninterrupted"}])
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    c = torch.load(tmp_path / "resume" / "rank0.pt", weights_only=False)[case["name"]]
    a = torch.load(tmp_path / "straight" / "rank0.pt", weights_only=False)[case["name"]]
    start = _step_of(last)
    by_step = {t["step"]: t for t in a["trace"]}
    assert [t["step"] for t in c["trace"]] == list(range(start, STEPS)), kill_at
    for t in c["trace"]:
        assert t["items"] == by_step[t["step"]]["items"], (kill_at, t["step"])
        assert torch.equal(t["weights"], by_step[t["step"]]["weights"]), (kill_at, t["step"])
    assert not state_differences(a["state"], c["state"]), kill_at
    for p_a, p_c in zip(a["params"], c["params"], strict=True):
        assert torch.equal(p_a, p_c), kill_at


def _step_of(path: Path) -> int:
    return int(path.stem.rsplit("step=", 1)[1])


def _run_single(out: Path, cases: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "cases.json").write_text(json.dumps(cases))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        env.pop(key, None)
    return subprocess.run(
        [sys.executable, "-m", "tests.resume_harness", str(out / "cases.json"), str(out)],
        cwd=str(REPO_ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
@pytest.mark.distributed
def test_three_ranks_share_one_sequence_and_resume_every_position(tmp_path: Path) -> None:
    cases = [
        {
            "name": f"plain-w{w}-{source}",
            "framework": "plain",
            "workers": w,
            "length": "given",
            "source": source,
            "stop": stop,
        }
        for w, source, stop in ((0, "all", 3), (2, "dynamic-both", 7), (0, "mixing-hybrid", 5))
    ]
    cases.append(
        {
            "name": "lightning-w0-all",
            "framework": "lightning",
            "workers": 0,
            "length": "max_steps",
            "source": "all",
            "stop": 7,
        }
    )
    ranks = _run_ranks(cases, tmp_path, world=3)
    for case in cases:
        for rank in ranks:
            _check(case, rank[case["name"]])
        states = [r[case["name"]]["c"]["state"] for r in ranks]
        assert not state_differences(states[0], states[1])
        assert not state_differences(states[0], states[2])
        # The checkpoint (written by rank 0) held all three ranks' positions.
        consumed = states[0]["sampler"]["stream"]["consumed"].tolist()
        assert len(consumed) == 3 and len(set(consumed)) == 1
