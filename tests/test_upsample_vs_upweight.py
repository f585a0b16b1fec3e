"""Li et al. 2025's equivalence, checked numerically through the Reweighter
(`recipes/experiments/upsample_numeric.py`): for a linear model, upsampling (`sample`) and
upweighting (`weight`) a domain give the same expected update under full-batch gradient descent,
but under SGD the sampled minibatch gradient has lower variance."""

from __future__ import annotations

import dataclasses
import doctest
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from recipes.experiments import report
from recipes.experiments import upsample_numeric as experiment
from recipes.experiments.report import CONF_DIR, compose_experiment


def test_full_batch_upweighting_equals_the_expected_sampled_update() -> None:
    assert experiment.expected_update_gap(0) < 1e-10
    # And the exact expectation of the weight-mode estimator under its own sampler agrees too.
    domains, x, y, w = experiment.make_data(0)
    n = domains.size
    sample = experiment.reweighter(domains, "sample")
    weight = experiment.reweighter(domains, "weight")
    per_item = 2 * (x @ w - y)[:, None] * x
    q = torch.from_numpy(sample.sampler.probabilities(np.arange(n)))
    q_nat = torch.from_numpy(weight.sampler.probabilities(np.arange(n)))
    ratio = weight.importance_ratios(np.arange(n))
    torch.testing.assert_close(
        (q_nat * ratio)[:, None].mul(per_item).sum(0), (q[:, None] * per_item).sum(0)
    )


def test_sgd_sampled_gradient_has_lower_variance_than_the_weighted_one() -> None:
    result = experiment.gradient_variance(0, batch=16, draws=600)
    # Both estimate the same update: the squared gap of the two Monte Carlo means is about
    # (tr Σ_sample + tr Σ_weight) / draws; allow 9 times that.
    assert result["gap_over_se"] < 9, result
    # ...but drawing the small domains more often beats multiplying their rare draws up.
    assert result["var_sample"] < 0.5 * result["var_weight"], result


SMOKE = ["numeric_study.seeds=[0]", "numeric_study.draws=50"]


def test_the_experiment_writes_its_table_json_and_plot(tmp_path: Path) -> None:
    result = experiment.main([*SMOKE, "--out", str(tmp_path)])
    table = (tmp_path / "upsample_numeric.md").read_text()
    assert "weight / sample" in table and "| 64 |" in table and "over 50 draws" in table
    record = json.loads((tmp_path / "upsample_numeric.json").read_text())
    assert set(record["result"]["variance"]) == {"4", "16", "64"}
    assert record["result"] == json.loads(json.dumps(result))
    (run,) = record["result"]["variance"]["16"]
    assert 0 < run["var_sample"] < run["var_weight"] and record["result"]["gaps"][0] < 1e-10
    # the settings it ran with are the composed config's
    assert record["study"] == json.loads(
        json.dumps(dataclasses.asdict(experiment.load_study(SMOKE)))
    )
    assert record["seeds"] == [0] and record["study"]["draws"] == 50
    assert (tmp_path / "upsample_numeric.png").read_bytes()[:4] == b"\x89PNG"


def test_the_yaml_is_the_one_source_of_the_settings() -> None:
    node = OmegaConf.to_container(compose_experiment("upsample_numeric").numeric_study)
    assert isinstance(node, dict)
    fields = dataclasses.fields(experiment.Study)
    assert [f.name for f in fields] == list(node)  # every setting, in the yaml's order
    assert all(f.default is dataclasses.MISSING for f in fields)  # no second copy of defaults
    assert json.loads(json.dumps(dataclasses.asdict(experiment.default_study()))) == node
    lines = (CONF_DIR / "experiment" / "upsample_numeric.yaml").read_text().splitlines()
    keys = [line for line in lines[lines.index("numeric_study:") + 1 :] if line.strip()]
    assert len(keys) == len(fields) and all(" # " in line for line in keys)  # each commented


def test_composing_train_with_the_experiment_leaves_the_main_job_alone() -> None:
    with_experiment = OmegaConf.to_container(compose_experiment("upsample_numeric"))
    assert isinstance(with_experiment, dict)
    del with_experiment["numeric_study"]
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        plain = OmegaConf.to_container(compose(config_name="train"))
    assert with_experiment == plain


@pytest.mark.parametrize(
    "override, message",
    [
        ("numeric_study.seeds=[]", "numeric_study.seeds"),
        ("numeric_study.domain_sizes=[10]", "2 or more domains"),
        ("numeric_study.draws=1", "numeric_study.draws"),
        ("+numeric_study.nope=1", "unknown keys ['nope']"),
    ],
)
def test_bad_settings_fail_before_running(
    override: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        experiment.main([override, "--out", str(tmp_path / "never")])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_docstring_examples() -> None:
    for module in (experiment, report):
        result = doctest.testmod(module)
        assert result.attempted >= 1 and result.failed == 0, module
