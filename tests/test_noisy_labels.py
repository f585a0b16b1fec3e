"""recipes/experiments/noisy_labels.py: loss priority vs reducible loss on noisy labels.

A smoke run of the command line (outputs, table, the uniform sampler's noisy share) and, at a
small size where it holds on every seed tried (0–4: loss priority draws 0.40–0.44 noisy, reducible
loss 0.11–0.14, at a noise rate of 0.2), the direction of the effect.
"""

from __future__ import annotations

import dataclasses
import doctest
import json
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from recipes.experiments import noisy_labels
from recipes.experiments.noisy_labels import (
    METHODS,
    Config,
    default_config,
    load_config,
    main,
    make_problem,
    run,
    run_all,
)
from recipes.experiments.report import CONF_DIR, compose_experiment

DEFAULT = default_config()
SMALL = replace(DEFAULT, num_items=1000, num_holdout=1000, num_test=500, steps=300, curve_every=10)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread, as the command line uses: these tiny models run several times
    slower with more threads on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SMOKE = [
    "noisy_study.seeds=[0]",
    "noisy_study.steps=100",
    "noisy_study.num_items=1000",
    "noisy_study.num_holdout=1000",
    "noisy_study.num_test=500",
]


def test_the_yaml_is_the_one_source_of_the_settings() -> None:
    node = OmegaConf.to_container(compose_experiment("noisy_labels").noisy_study)
    assert isinstance(node, dict)
    fields = dataclasses.fields(Config)
    assert [f.name for f in fields] == list(node)  # every setting, in the yaml's order
    assert all(f.default is dataclasses.MISSING for f in fields)  # no second copy of defaults
    assert json.loads(json.dumps(asdict(DEFAULT))) == node
    lines = (CONF_DIR / "experiment" / "noisy_labels.yaml").read_text().splitlines()
    keys = [line for line in lines[lines.index("noisy_study:") + 1 :] if line.strip()]
    assert len(keys) == len(fields) and all(" # " in line for line in keys)  # each commented


def test_composing_train_with_the_experiment_leaves_the_main_job_alone() -> None:
    with_experiment = OmegaConf.to_container(compose_experiment("noisy_labels"))
    assert isinstance(with_experiment, dict)
    del with_experiment["noisy_study"]
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        plain = OmegaConf.to_container(compose(config_name="train"))
    assert with_experiment == plain


def test_smoke_run_writes_table_json_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "nl"
    result = main([*SMOKE, "--out", str(out)])
    printed = capsys.readouterr().out
    assert all(method in printed for method in METHODS) and "noisy drawn" in printed
    assert (out / ".gitignore").read_text().strip().endswith("*")
    markdown = (out / "noisy_labels.md").read_text()
    assert "| loss_priority |" in markdown and "pressure=100" in markdown
    assert (out / "noisy_labels.png").read_bytes()[:4] == b"\x89PNG"
    data = json.loads((out / "noisy_labels.json").read_text())
    # the settings it ran with are the composed config's (curve_every follows steps)
    assert data["config"] == json.loads(json.dumps(asdict(load_config(SMOKE))))
    assert data["config"]["steps"] == 100 and data["config"]["curve_every"] == 1
    assert data["seeds"] == [0]
    assert set(data["summary"]) == set(METHODS)
    assert len(data["runs"]) == len(METHODS)
    assert data["summary"] == json.loads(json.dumps(result["summary"]))
    uniform = data["summary"]["uniform"]["noisy_share"][0]
    assert uniform == pytest.approx(0.2, abs=0.03)  # 6,400 uniform draws from a 20 % set
    for row in data["summary"].values():
        assert 0.0 <= row["test_error"][0] < 0.75  # better than chance (4 classes)
        assert row["curve"]["step"][-1] == 100


def test_loss_priority_draws_more_noise_than_reducible_loss() -> None:
    runs = {r["method"]: r for r in run_all(SMALL, [0])}
    noise = SMALL.noise
    assert runs["uniform"]["noisy_share"] == pytest.approx(noise, abs=0.02)
    assert runs["loss_priority"]["noisy_share"] > noise + 0.1
    assert runs["reducible_loss"]["noisy_share"] < noise
    assert runs["loss_priority"]["noisy_share"] > runs["reducible_loss"]["noisy_share"]


def test_same_seed_same_numbers_and_no_global_rng() -> None:
    config = replace(SMALL, steps=30)
    state = torch.random.get_rng_state()
    first = run("loss_priority", 1, config)
    assert run("loss_priority", 1, config) == first
    assert run("loss_priority", 2, config)["curve"] != first["curve"]
    assert torch.equal(state, torch.random.get_rng_state())


def test_problem_layout() -> None:
    problem = make_problem(SMALL, seed=0)
    assert int(problem.noisy.sum()) == 200
    assert not problem.mislabelled[~problem.noisy].any()
    # about (K − 1)/K of the redrawn labels are wrong
    assert 0.6 < problem.mislabelled[problem.noisy].mean() < 0.9
    assert set(problem.y_test.tolist()) == set(range(SMALL.classes))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["noisy_study.seeds=[]"], "seeds"),
        (["noisy_study.noise=1.5"], "noise"),
        (["noisy_study.steps=0"], "steps"),
        (["noisy_study.nope=1"], "noisy_study.nope"),
        (["--threads", "0"], "--threads"),
    ],
)
def test_bad_arguments_fail_before_training(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit):
        main([*argv, "--out", str(tmp_path / "never")])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_docstring_examples() -> None:
    result = doctest.testmod(noisy_labels)
    assert result.attempted >= 4 and result.failed == 0
