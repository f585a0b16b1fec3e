"""recipes/experiments/linreg_sow.py: Sow et al.'s linear regression (shape, determinism, guards).

These tests check that the experiment runs, reports what it says it reports and is
reproducible; they do not assert which strategy wins (the recipe reports that, whatever it is).
"""

from __future__ import annotations

import doctest
import json
import math
from dataclasses import replace

import pytest
import torch

from recipes.experiments import linreg_sow
from recipes.experiments.linreg_sow import (
    QUICK,
    Config,
    main,
    make_problem,
    run,
    summarize,
    tune_lr,
)

TINY = replace(QUICK, steps=60, checkpoints=(20, 60))
RUN_KEYS = {
    "strategy",
    "seed",
    "lr",
    "initial_test_mse",
    "steps",
    "test_mse",
    "param_error",
    "checkpoints",
    "steps_to_threshold",
    "diverged_at",
    "final_test_mse",
    "final_param_error",
    "mean_weight_redundant",
    "mean_weight_informative",
}


def _json_main(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    result = main(argv)
    printed = json.loads(capsys.readouterr().out)  # exactly one JSON object on stdout
    assert printed["summary"] == json.loads(json.dumps(result["summary"]))
    return printed


def test_quick_json_shape_and_every_strategy_learns(capsys: pytest.CaptureFixture[str]) -> None:
    out = _json_main(capsys, ["--quick", "--seeds", "2", "--json", "--lr-grid", "none"])
    strategies = list(linreg_sow.DEFAULT_STRATEGIES)
    assert out["strategies"] == strategies and out["seeds"] == [0, 1]
    assert out["lr_grid"] is None
    assert out["config"]["checkpoints"] == list(QUICK.checkpoints)
    assert len(out["runs"]) == len(strategies) * 2
    assert set(out["summary"]) == set(strategies)
    for item in out["runs"]:
        assert set(item) == RUN_KEYS
        n = len(item["steps"])
        assert item["steps"][0] == 0 and item["steps"][-1] == QUICK.steps
        assert n == QUICK.steps // QUICK.eval_every + 1
        assert len(item["test_mse"]) == len(item["param_error"]) == n
        assert [c["step"] for c in item["checkpoints"]] == list(QUICK.checkpoints)
        assert item["diverged_at"] is None
        final = item["final_test_mse"]
        assert math.isfinite(final) and final < item["initial_test_mse"]
        assert item["final_param_error"] < item["param_error"][0]
        assert item["final_param_error"] == item["param_error"][-1]
        for kind in ("redundant", "informative"):
            weight = item[f"mean_weight_{kind}"]
            assert math.isfinite(weight) and weight > 0
        if item["strategy"] == "uniform":  # uniform weights are exactly 1
            assert item["mean_weight_redundant"] == pytest.approx(1.0)
            assert item["mean_weight_informative"] == pytest.approx(1.0)
        reached = item["steps_to_threshold"]
        assert reached is None or reached in item["steps"]
    uniform = out["summary"]["uniform"]
    assert uniform["speedup_vs_uniform"] in (None, pytest.approx(1.0))
    assert uniform["wins_vs_uniform"] == 0
    for row in out["summary"].values():
        assert row["seeds"] == 2 and row["diverged"] == 0
        for c in QUICK.checkpoints:
            mean, std = row[f"test_mse@{c}"]
            assert math.isfinite(mean) and std >= 0


def test_run_is_deterministic_and_seeded() -> None:
    first = run("linupper", seed=3, config=TINY)
    again = run("linupper", seed=3, config=TINY)
    assert first == again
    other = run("linupper", seed=4, config=TINY)
    assert other["test_mse"] != first["test_mse"]
    # same seed, same data and draws: only the weights differ between strategies
    uniform = run("uniform", seed=3, config=TINY)
    assert uniform["initial_test_mse"] == first["initial_test_mse"]
    assert uniform["test_mse"][1:] != first["test_mse"][1:]


def test_make_problem_layout() -> None:
    p = make_problem(TINY, seed=0)
    n, d = TINY.num_items, TINY.dim
    assert tuple(p.x.shape) == (n, d) and tuple(p.y.shape) == (n,)
    assert int(p.redundant.sum()) == round(TINY.redundant_frac * n)
    assert p.w_star.norm().item() == pytest.approx(1.0, abs=1e-6)
    # test labels are clean: exactly x · w*
    assert (p.x_test @ p.w_star - p.y_test).abs().max().item() < 1e-5
    # redundant items sit within a few jitters of one of `prototypes` points
    red = p.x[p.redundant]
    centres = red[:1]
    for row in red:
        if (centres - row).norm(dim=1).min() > 10 * TINY.jitter * math.sqrt(d):
            centres = torch.cat([centres, row[None]])
    assert len(centres) <= TINY.prototypes
    assert make_problem(TINY, seed=0).x.equal(p.x)


def test_divergence_is_reported_not_raised() -> None:
    item = run("uniform", seed=0, config=replace(TINY, lr=5.0))
    assert item["diverged_at"] is not None
    assert item["final_test_mse"] is None and item["final_param_error"] is None
    assert all(c["test_mse"] is None for c in item["checkpoints"][1:])
    json.dumps(item, allow_nan=False)  # still valid JSON
    summary = summarize([item], TINY)["uniform"]
    assert summary["diverged"] == 1 and summary["reached"] == 0
    assert summary["steps_to_threshold"] is None


def test_lr_grid_picks_the_fastest_safe_rate(capsys: pytest.CaptureFixture[str]) -> None:
    tuned = tune_lr(["uniform", "linupper"], [0], TINY, [0.05, 5.0])
    for row in tuned.values():
        assert row["by_lr"]["5.0"]["diverged"] == 1  # far past the stability limit
        assert row["best_lr"] in (0.05, None)
    assert tuned["uniform"]["speedup_vs_uniform"] in (None, pytest.approx(1.0))

    text_argv = ["--quick", "--seeds", "1", "--strategies", "uniform,linupper", "--lr-grid", "0.1"]
    main(text_argv)
    text = capsys.readouterr().out
    assert "steps→thr" in text and "best lr" in text and "lr=0.1" in text and "lr=0.05" in text
    out = _json_main(capsys, [*text_argv, "--json"])
    assert set(out["lr_grid"]) == {"uniform", "linupper"}
    assert set(out["lr_grid"]["linupper"]["by_lr"]) == {"0.05", "0.1"}


def test_steps_override_moves_the_checkpoints(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--quick", "--seeds", "1", "--strategies", "uniform", "--steps", "40"]
    out = _json_main(capsys, [*argv, "--json", "--lr-grid", "none"])
    assert out["config"]["steps"] == 40
    assert out["config"]["checkpoints"][-1] == 40
    assert out["runs"][0]["steps"][-1] == 40


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--strategies", "linupper,nope"], "valid names"),
        (["--seeds", "0"], "--seeds"),
        (["--lr", "-1"], "lr must be"),
        (["--lr-grid", "0.1,-2"], "--lr-grid"),
        (["--redundant-frac", "1.0"], "redundant_frac"),
    ],
)
def test_bad_arguments_fail_before_training(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["--quick", *argv])
    assert message in capsys.readouterr().err


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="checkpoints"):
        Config(steps=100, checkpoints=(200,)).validate()
    with pytest.raises(ValueError, match="batch_size"):
        Config(batch_size=0).validate()
    with pytest.raises(ValueError, match="no informative item"):
        make_problem(replace(TINY, num_items=2, redundant_frac=0.9), seed=0)


def test_docstring_examples() -> None:
    result = doctest.testmod(linreg_sow, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 4 and result.failed == 0
