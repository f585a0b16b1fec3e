"""The main job runs end to end and reweighting helps the smallest domain."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "train.py"


def _load_recipe():
    spec = importlib.util.spec_from_file_location("recipe_train", RECIPE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["recipe_train"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_main_job_runs_and_reweighting_lifts_the_tiny_domain(tmp_path: Path) -> None:
    recipe = _load_recipe()
    plain = recipe.train("none", "sample", 150, 0, tmp_path)
    mixed = recipe.train("mixing", "sample", 150, 0, tmp_path)
    assert mixed["val/accuracy/tiny"] > plain["val/accuracy/tiny"]
    shares = [mixed[f"reweight/domain/{n}/realised"] for n in recipe.DOMAIN_SIZES]
    assert all(abs(s - 0.25) < 0.08 for s in shares), shares
    assert list((tmp_path / "mixing-sample").rglob("metrics.csv"))


def test_main_prints_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = _load_recipe()
    assert (
        recipe.main(
            ["--reweight", "mixing", "--mode", "weight", "--steps", "20", "--out", str(tmp_path)]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "validation accuracy per domain" in out and "mixing (weight)" in out
