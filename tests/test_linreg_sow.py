"""recipes/experiments/linreg_sow.py: Sow et al.'s linear regression (shape, determinism, guards).

These tests check that the experiment runs, reports what it says it reports and is
reproducible; they do not assert which strategy wins (the recipe reports that, whatever it is).
"""

from __future__ import annotations

import dataclasses
import doctest
import json
import math
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from recipes.experiments import linreg_sow
from recipes.experiments.linreg_sow import (
    Config,
    compose_config,
    default_config,
    load_config,
    main,
    make_problem,
    run,
    summarize,
    tune_lr,
)
from recipes.experiments.report import CONF_DIR, compose_experiment

DEFAULT = default_config()
QUICK = default_config(quick=True)
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


def _json_main(capsys: pytest.CaptureFixture[str], argv: list[str], out: Path) -> dict:
    result = main([*argv, "--json", "--out", str(out)])
    printed = json.loads(capsys.readouterr().out)  # exactly one JSON object on stdout
    assert printed["summary"] == json.loads(json.dumps(result["summary"]))
    return printed


def test_the_yaml_is_the_one_source_of_the_settings() -> None:
    node = OmegaConf.to_container(compose_config().linreg_study)
    assert isinstance(node, dict)
    quick = node.pop("quick")
    fields = dataclasses.fields(Config)
    assert [f.name for f in fields] == list(node)  # every setting, in the yaml's order
    assert all(f.default is dataclasses.MISSING for f in fields)  # no second copy of defaults
    assert json.loads(json.dumps(asdict(DEFAULT))) == node
    assert set(quick) < set(node)
    assert {k: getattr(QUICK, k) for k in quick} == {
        k: tuple(v) if isinstance(v, list) else v for k, v in quick.items()
    }
    assert replace(QUICK, **{k: getattr(DEFAULT, k) for k in quick}) == DEFAULT
    # every key of the yaml is commented
    lines = (CONF_DIR / "experiment" / "linreg_sow.yaml").read_text().splitlines()
    keys = [line for line in lines[lines.index("linreg_study:") + 1 :] if line.strip()]
    assert len(keys) == len(fields) + 1 + len(quick) and all(" # " in line for line in keys)


def test_composing_train_with_the_experiment_leaves_the_main_job_alone() -> None:
    with_experiment = OmegaConf.to_container(compose_experiment("linreg_sow"))
    assert isinstance(with_experiment, dict)
    del with_experiment["linreg_study"]
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        plain = OmegaConf.to_container(compose(config_name="train"))
    assert with_experiment == plain


def test_smoke_command_writes_table_json_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides = [
        "linreg_study.steps=40",
        "linreg_study.seeds=[0,1]",
        "linreg_study.strategies=[uniform,linupper]",
        "linreg_study.lr_grid=[0.1]",
    ]
    result = main(["--quick", *overrides, "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "steps→thr" in printed and "best lr" in printed and "wrote" in printed
    markdown = (tmp_path / "linreg_sow.md").read_text()
    assert "| linupper |" in markdown and "| strategy | lr=0.05 | lr=0.1 |" in markdown
    assert (tmp_path / "linreg_sow.png").read_bytes()[:4] == b"\x89PNG"
    record = json.loads((tmp_path / "linreg_sow.json").read_text())
    # the settings it ran with are the composed config's
    assert record["config"] == json.loads(json.dumps(asdict(load_config(overrides, quick=True))))
    assert record["config"]["steps"] == 40 and record["seeds"] == [0, 1]
    assert record["summary"] == json.loads(json.dumps(result["summary"]))
    for strategy in ("uniform", "linupper"):
        row = record["summary"][strategy]
        mean, std = row["test_mse@40"]
        assert 0 < mean < 1 and std >= 0
        assert set(row) >= {"steps_to_threshold", "speedup_vs_uniform", "param_error_final"}
        assert set(record["lr_grid"][strategy]["by_lr"]) == {"0.05", "0.1"}
    assert len(record["runs"]) == 4 and record["runs"][0]["test_mse"][0] > 0


def test_quick_json_shape_and_every_strategy_learns(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = ["--quick", "linreg_study.seeds=[0,1]", "linreg_study.lr_grid=null"]
    out = _json_main(capsys, argv, tmp_path)
    strategies = list(DEFAULT.strategies)
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


def test_lr_grid_picks_the_fastest_safe_rate(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    tuned = tune_lr(["uniform", "linupper"], [0], TINY, [0.05, 5.0])
    for row in tuned.values():
        assert row["by_lr"]["5.0"]["diverged"] == 1  # far past the stability limit
        assert row["best_lr"] in (0.05, None)
    assert tuned["uniform"]["speedup_vs_uniform"] in (None, pytest.approx(1.0))

    text_argv = [
        "--quick",
        "linreg_study.seeds=[0]",
        "linreg_study.strategies=[uniform,linupper]",
        "linreg_study.lr_grid=[0.1]",
    ]
    main([*text_argv, "--out", str(tmp_path)])
    text = capsys.readouterr().out
    assert "steps→thr" in text and "best lr" in text and "lr=0.1" in text and "lr=0.05" in text
    out = _json_main(capsys, text_argv, tmp_path)
    assert set(out["lr_grid"]) == {"uniform", "linupper"}
    assert set(out["lr_grid"]["linupper"]["by_lr"]) == {"0.05", "0.1"}


def test_steps_override_moves_the_checkpoints(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = ["--quick", "linreg_study.seeds=[0]", "linreg_study.strategies=[uniform]"]
    out = _json_main(capsys, [*argv, "linreg_study.steps=40", "linreg_study.lr_grid=[]"], tmp_path)
    assert out["config"]["steps"] == 40
    assert out["config"]["checkpoints"][-1] == 40
    assert out["runs"][0]["steps"][-1] == 40


@pytest.mark.parametrize(
    "argv, message",
    [
        (["linreg_study.strategies=[linupper,nope]"], "valid names"),
        (["linreg_study.seeds=[]"], "seeds"),
        (["linreg_study.lr=-1"], "lr must be"),
        (["linreg_study.lr_grid=[0.1,-2]"], "lr_grid"),
        (["linreg_study.redundant_frac=1.0"], "redundant_frac"),
        (["linreg_study.nope=1"], "linreg_study.nope"),
        (["+linreg_study.nope=1"], "unknown keys ['nope']"),
        (["linreg_study.steps=[1"], "no viable alternative at input '[1'"),
    ],
)
def test_bad_arguments_fail_before_training(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit):
        main(["--quick", *argv, "--out", str(tmp_path / "never")])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="checkpoints"):
        replace(DEFAULT, steps=100, checkpoints=(200,)).validate()
    with pytest.raises(ValueError, match="batch_size"):
        replace(DEFAULT, batch_size=0).validate()
    with pytest.raises(ValueError, match="no informative item"):
        make_problem(replace(TINY, num_items=2, redundant_frac=0.9), seed=0)


def test_docstring_examples() -> None:
    result = doctest.testmod(linreg_sow, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 4 and result.failed == 0
