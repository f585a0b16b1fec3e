"""The plain loops (recipes/train_torchrun.py, recipes/train_fabric.py): a run stopped at a
checkpoint and resumed equals the uninterrupted run bitwise, on one process and on two gloo
ranks, which train on disjoint slices of one global draw sequence."""

from __future__ import annotations

import ast
import importlib
import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from recipes.loop import parser, training_set_and_sources
from reweight import Reweighter
from tests.ranks import run_ranks
from tests.state_compare import state_differences

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["recipes.train_torchrun", "recipes.train_fabric"]
STEPS, STOP, BATCH, SEED = 6, 3, 4, 3
TINY = [
    *("--steps", str(STEPS), "--batch-size", str(BATCH), "--seed", str(SEED)),
    *("--seq-len", "32", "--d-model", "16", "--n-layers", "1", "--warmup-steps", "2"),
    *("--max-docs-per-domain", "1000", "--checkpoint-every", str(STOP), "--log-every", "3"),
]
# Draws follow the losses (a loss table), loss weights are in-batch weights times p/q.
DYNAMIC = """sources:
  in_batch: {_target_: reweight.sources.InBatchWeights, strategy: linupper, r: 0.5,
             burn_in_steps: 0}
  loss_priority: {_target_: reweight.sources.LossPriority, mode: proposal, refresh_every: 2}
"""
# Draws from fixed domain probabilities (so the global sequence can be drawn here without
# training), loss weights corrected back to the natural mixture and weighted in-batch.
FIXED_DRAWS = """sources:
  mixing: {_target_: reweight.sources.DomainMixing, mode: proposal, rule: 10.0}
  in_batch: {_target_: reweight.sources.InBatchWeights, strategy: linupper, r: 0.5,
             burn_in_steps: 0}
"""


@pytest.fixture(scope="module", autouse=True)
def corpus_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One corpus cache for the module, built once here, so that the ranks only read it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REWEIGHT_CACHE", str(tmp_path_factory.mktemp("corpus-cache")))
        patch.setenv("OMP_NUM_THREADS", "1")
        training_set_and_sources(parser("").parse_args([*TINY, "--preset", "none"]))
        yield


def _preset(tmp_path: Path, text: str) -> str:
    path = tmp_path / "preset.yaml"
    path.write_text(text)
    return str(path)


def _load(trace_dir: Path, rank: int) -> dict[str, Any]:
    return torch.load(trace_dir / f"rank{rank}.pt", weights_only=False)


def _assert_resume_is_uninterrupted(full: dict[str, Any], resumed: dict[str, Any]) -> None:
    """The resumed run trained on the uninterrupted run's items after the checkpoint, with its
    loss weights, and ended with its parameters and reweighter state, bit for bit."""
    after = full["steps"][STOP:]
    assert [s["step"] for s in resumed["steps"]] == list(range(STOP, STEPS))
    assert [s["items"] for s in resumed["steps"]] == [s["items"] for s in after]
    assert not state_differences(
        [s["weights"] for s in resumed["steps"]], [s["weights"] for s in after]
    )
    assert not state_differences(resumed["params"], full["params"])
    assert not state_differences(resumed["state"], full["state"])
    # The loss weights are not trivially 1 (the check would then be weak).
    assert any(not torch.all(s["weights"] == 1) for s in full["steps"])


@pytest.mark.parametrize("script", SCRIPTS)
def test_one_process_resume_equals_the_uninterrupted_run(script: str, tmp_path: Path) -> None:
    main = importlib.import_module(script).main
    args = [
        *TINY,
        "--preset",
        _preset(tmp_path, DYNAMIC),
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
    ]
    main([*args, "--trace", str(tmp_path / "full")])
    checkpoint = tmp_path / "ckpt" / f"step-{STOP}.pt"
    main([*args, "--resume", str(checkpoint), "--trace", str(tmp_path / "resumed")])
    _assert_resume_is_uninterrupted(_load(tmp_path / "full", 0), _load(tmp_path / "resumed", 0))


def _global_sequence(preset: str, count: int) -> list[int]:
    """The first ``count`` draws of the one global sequence, drawn on one process."""
    train_set, sources = training_set_and_sources(
        parser("").parse_args([*TINY, "--preset", preset])
    )
    rw = Reweighter.from_dataset(
        train_set, sources=sources, total_steps=STEPS, seed=SEED, infinite=True
    )
    return list(itertools.islice(iter(rw.sampler), count))


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("script", SCRIPTS)
def test_two_ranks_share_one_sequence_and_resume_exactly(script: str, tmp_path: Path) -> None:
    preset = _preset(tmp_path, FIXED_DRAWS)
    args = [*TINY, "--preset", preset, "--checkpoint-dir", str(tmp_path / "ckpt")]
    checkpoint = tmp_path / "ckpt" / f"step-{STOP}.pt"
    for name, extra in (("full", []), ("resumed", ["--resume", str(checkpoint)])):
        (tmp_path / name).mkdir()
        trace = ["--trace", str(tmp_path / name)]
        run_ranks(script, [*args, *extra, *trace], tmp_path / name, world=2, timeout=300)
    full = [_load(tmp_path / "full", rank) for rank in (0, 1)]
    resumed = [_load(tmp_path / "resumed", rank) for rank in (0, 1)]
    # Rank r trained on positions r, r + 2, r + 4, ... of the one global sequence.
    sequence = _global_sequence(preset, 2 * BATCH * STEPS)
    for rank in (0, 1):
        items = [s["items"] for s in full[rank]["steps"]]
        assert items == [
            sequence[2 * BATCH * s : 2 * BATCH * (s + 1)][rank::2] for s in range(STEPS)
        ]
        _assert_resume_is_uninterrupted(full[rank], resumed[rank])
    # Both ranks hold the same model and reweighter state (either rank's checkpoint is whole).
    assert not state_differences(full[0]["params"], full[1]["params"])
    assert not state_differences(full[0]["state"], full[1]["state"])


def _marked_statements(source: str) -> list[str]:
    """The statements holding a ``# reweight (n/4)`` line, in the order n = 1..4."""
    lines = source.splitlines()
    marked = {}
    for number, line in enumerate(lines, start=1):
        for n in range(1, 5):
            if line.rstrip().endswith(f"# reweight ({n}/4)"):
                assert n not in marked, f"reweight ({n}/4) is marked twice"
                marked[n] = number
    assert sorted(marked) == [1, 2, 3, 4], f"marked: {sorted(marked)}"
    tree = ast.parse(source)
    statements = [
        node for node in ast.walk(tree) if isinstance(node, ast.stmt) and not hasattr(node, "body")
    ]
    found = []
    for n in range(1, 5):
        line = marked[n]
        (statement,) = (s for s in statements if s.lineno <= line <= (s.end_lineno or s.lineno))
        found.append(ast.unparse(statement))
    return found


def test_the_readme_shows_the_four_lines_the_scripts_mark() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Plain torchrun loop and Lightning Fabric") :]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None
    shown = [ast.unparse(s) for s in ast.parse(block.group(1)).body]
    assert shown == _marked_statements((ROOT / "recipes" / "train_torchrun.py").read_text())
    assert len(_marked_statements((ROOT / "recipes" / "train_fabric.py").read_text())) == 4
