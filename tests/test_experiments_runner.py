"""recipes/experiments/run.py: every study config runs end to end in smoke settings and writes
its report (one row per arm); the steps-to-baseline numbers and reference_from are exact."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from recipes.experiments import run as runner

ROOT = Path(__file__).resolve().parents[1]
STUDIES = sorted(
    p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml") if "\nstudy:" in p.read_text()
)


@pytest.fixture(autouse=True)
def _cache(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.setenv("REWEIGHT_CACHE", str(tmp_path_factory.getbasetemp() / "corpus-cache"))


# ---------------------------------------------------------------------- fast units


def test_the_five_studies_are_there() -> None:
    expected = {"sow_lm", "upsample_upweight", "end_upsample_study", "domain_rules"}
    assert expected | {"ablation_study"} <= set(STUDIES)


def test_steps_to_reach_is_the_first_step_at_or_below() -> None:
    assert runner.steps_to_reach([100, 200, 300], [3.0, 2.0, 1.0], 2.0) == 200.0
    assert math.isnan(runner.steps_to_reach([100, 200], [3.0, 2.0], 1.0))
    assert math.isnan(runner.steps_to_reach([100, 200], [math.nan, 3.0], 2.0))


def _fake_run(values: list[float], seconds: float = 1.0) -> dict:
    """A run whose every domain has the mean curve ``values`` at steps 100, 200, ..."""
    steps = [100 * (i + 1) for i in range(len(values))]
    curves = {"a": list(values), "b": list(values)}
    curves["mean"] = list(values)
    curves["worst"] = list(values)
    return {
        "final": {"a": values[-1], "b": values[-1]},
        "mean": values[-1],
        "worst": values[-1],
        "steps": steps,
        "curves": curves,
        "share_steps": [],
        "shares": {},
        "seconds": seconds,
        "summary": {},
    }


def test_summarise_steps_to_baseline_and_speedup() -> None:
    results = {
        "base": [_fake_run([4.0, 3.0, 2.5, 2.0]), _fake_run([4.0, 3.0, 2.5, 2.2])],  # final 2.1
        "fast": [_fake_run([3.0, 2.0, 1.5, 1.0]), _fake_run([3.0, 2.2, 1.5, 1.0])],  # ≤ 2.1 at 200
        "slow": [_fake_run([4.0, 3.5, 3.0, 2.9])] * 2,
    }
    out = runner.summarise(results, ["a", "b"], baseline="base", focus=["a"])
    assert out["base"]["to_baseline"]["target"] == pytest.approx(2.1)
    assert out["base"]["to_baseline"]["steps"] == 400.0
    assert out["fast"]["to_baseline"]["steps"] == 200.0
    assert out["fast"]["to_baseline"]["speedup"] == pytest.approx(2.0)
    assert math.isnan(out["slow"]["to_baseline"]["steps"])
    assert math.isnan(out["slow"]["to_baseline"]["speedup"])
    # Curves: mean over seeds with the min–max band.
    curve = out["fast"]["curves"]["mean"]
    assert curve["steps"] == [100, 200, 300, 400]
    assert curve["mean"][1] == pytest.approx(2.1)
    assert (curve["min"][1], curve["max"][1]) == (2.0, 2.2)
    # Focus: the minimum over training and final − minimum (the turn-up).
    bumpy = {"x": [_fake_run([3.0, 1.0, 1.5])]}
    focus = runner.summarise(bumpy, ["a", "b"], focus=["a"])["x"]["focus"]["a"]
    assert focus["min"] == [1.0] and focus["turn_up"] == [0.5]


def test_fill_reference_fills_only_doremi_rules_without_one() -> None:
    arm = {
        "reweight": {
            "sources": {
                "mixing": {"rule": {"kind": "doremi", "reference": None, "eta": 1.0}},
                "other": {"rule": {"kind": "natural"}},
                "given": {"rule": {"kind": "doremi", "reference": {"a": 9.0}}},
            }
        }
    }
    filled = runner.fill_reference(arm, {"a": 2.0, "b": 3.0})
    sources = filled["reweight"]["sources"]
    assert sources["mixing"]["rule"] == {
        "kind": "doremi",
        "reference": {"a": 2.0, "b": 3.0},
        "eta": 1.0,
    }
    assert "reference" not in sources["other"]["rule"]
    assert sources["given"]["rule"]["reference"] == {"a": 9.0}
    assert arm["reweight"]["sources"]["mixing"]["rule"]["reference"] is None  # not mutated


def test_arms_presets_and_study_errors() -> None:
    arms = runner.arms_of({"presets": ["none", "mixing"], "arms": {"x": {}}})
    assert list(arms) == ["x", "none", "mixing"]
    assert arms["mixing"]["reweight"]["name"] == "mixing"
    assert arms["none"]["reweight"]["sources"] == {}
    with pytest.raises(ValueError, match="valid presets"):
        runner.arms_of({"presets": ["nope"]})
    with pytest.raises(ValueError, match="not an arm"):
        runner.arms_of({"arms": {"x": {}}, "baseline": "y"})
    with pytest.raises(ValueError, match="unknown keys"):
        runner.arms_of({"arms": {"x": {}}, "baseline_arm": "x"})
    with pytest.raises(ValueError, match="no arms"):
        runner.arms_of({})


def test_arm_from_a_preset_with_changes() -> None:
    changed = {"name": "no_static", "sources": {"static": None, "in_batch": {"r": 0.5}}}
    arms = runner.arms_of({"arms": {"no_static": {"preset": "full", "reweight": changed}}})
    reweight = arms["no_static"]["reweight"]
    full = runner.arms_of({"presets": ["full"]})["full"]["reweight"]
    assert reweight["name"] == "no_static" and reweight["sources"]["static"] is None
    assert reweight["sources"]["in_batch"]["r"] == 0.5
    assert reweight["sources"]["in_batch"]["strategy"] == full["sources"]["in_batch"]["strategy"]
    assert reweight["sources"]["mixing"] == full["sources"]["mixing"]
    assert "preset" not in arms["no_static"]
    assert list(runner.arms_of({"arms": {"x": {}, "y": None}})) == ["x"]  # null: switched off
    with pytest.raises(ValueError, match=r"study\.arms\.x\.preset names 'nope'"):
        runner.arms_of({"arms": {"x": {"preset": "nope"}}})


def test_smoke_settings_compose_and_user_overrides_win() -> None:
    cfg = runner.compose(["experiment=sow_lm", "study.smoke=true", "steps=8"])
    assert cfg.study.smoke and cfg.steps == 8 and cfg.model.d_model == 16
    cfg = runner.compose(["experiment=sow_lm"])
    assert not cfg.study.smoke and cfg.steps == 2000 and cfg.reweight.sources == {}


# ---------------------------------------------------------------------- smoke runs


@pytest.mark.slow
@pytest.mark.parametrize("name", STUDIES)
def test_study_smoke_run_writes_its_report(name: str, tmp_path: Path) -> None:
    tmp_path = tmp_path / "out"  # created by the runner, so it gets the .gitignore
    record = runner.main([f"experiment={name}", "--smoke", "--out", str(tmp_path)])
    for suffix in ("md", "json", "png"):
        assert (tmp_path / f"{name}.{suffix}").stat().st_size > 0
    assert (tmp_path / ".gitignore").read_text().strip().endswith("*")
    arms = list(runner.arms_of(record["study"]))
    table = (tmp_path / f"{name}.md").read_text().split("\n\n")[3]
    rows = [line.split(" | ")[0].lstrip("| ") for line in table.splitlines()[2:]]
    assert rows == arms
    saved = json.loads((tmp_path / f"{name}.json").read_text())
    assert saved["smoke"] and saved["seeds"] == [0]
    assert [r["arm"] for r in saved["runs"]] == (
        [record["study"]["reference_from"]] if record["study"].get("reference_from") else []
    ) + [a for a in arms if a != record["study"].get("reference_from")]
    assert set(saved["corpus"]["domains"]) == set(saved["summary"][arms[0]]["final"])
    for run in saved["runs"]:
        assert run["summary"]["steps"] == 6
    if name == "domain_rules":
        doremi = next(r for r in saved["runs"] if r["arm"] == "doremi")
        reference = doremi["arm_config"]["reweight"]["sources"]["mixing"]["rule"]["reference"]
        assert reference == pytest.approx(saved["reference"])
        uniform = saved["summary"]["uniform"]["final"]
        assert reference == pytest.approx({d: v[0] for d, v in uniform.items()})
