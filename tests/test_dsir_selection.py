"""recipes/experiments/dsir_selection.py and the main job's ``data.train_subset``.

The smoke run of the command line (md/json/png, one row per selection), the pool/target layout,
the selection rules, the rank correlation, and that a ``data.train_subset`` run trains only on
the given indices while keeping the validation split.
"""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import open_dict

from recipes import train as recipe
from recipes.experiments import dsir_selection
from recipes.experiments.dsir_selection import (
    SMOKE,
    Study,
    compose_config,
    main,
    pool_and_target,
    prose_score,
    select,
    spearman,
)

TINY = list(SMOKE)


@pytest.mark.slow
def test_smoke_run_writes_md_json_png_with_one_row_per_selection(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "dsir"
    record = main(["--smoke", "--out", str(out)])
    assert "| dsir |" in capsys.readouterr().out
    markdown = (out / "dsir_selection.md").read_text()
    for name in ("random", "heuristic", "dsir"):
        assert markdown.count(f"| {name} |") == 1
    assert "Spearman" in markdown and "0.89" in markdown
    assert (out / "dsir_selection.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((out / "dsir_selection.json").read_text())
    assert set(data["summary"]) == {"random", "heuristic", "dsir"}  # (JSON keys sorted)
    assert len(data["runs"]) == 3 and data["study"]["steps"] == 6
    assert data["corpus"]["domains"]["docs"] > 0 and data["command"]
    assert data["config"]["steps"] == 6  # the study's steps reach the training runs
    runs = {r["selection"]: r for r in data["runs"]}
    # DSIR moves the selection toward the target: more KL reduction and more target sequences.
    assert runs["dsir"]["kl_reduction"] > runs["random"]["kl_reduction"]
    assert runs["dsir"]["target_share"] > runs["random"]["target_share"]
    assert all(np.isfinite(r["target_val_loss"]) for r in data["runs"])
    assert record["correlation"]["selections"] == 3


def test_train_subset_replaces_the_training_split_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = compose_config([*TINY, "dsir_study.steps=2"])
    corpus = recipe.load_corpus(cfg.data)
    train_idx, val_idx = recipe.training_split(cfg, corpus)
    subset = train_idx[::97][:50]
    path = tmp_path / "subset.npy"
    np.save(path, subset)
    with open_dict(cfg):
        cfg.data.train_subset = str(path)
        cfg.out_dir = str(tmp_path / "run")
    got_train, got_val = recipe.training_split(cfg, corpus)
    assert np.array_equal(got_train, subset) and np.array_equal(got_val, val_idx)

    seen: dict[str, int] = {}
    build = recipe.build_reweighter

    def spy(cfg, corpus, train_idx, train_set):  # type: ignore[no-untyped-def]
        seen["train_idx"] = len(train_idx)
        rw = build(cfg, corpus, train_idx, train_set)
        seen["num_items"] = rw.sampler.num_items
        return rw

    monkeypatch.setattr(recipe, "build_reweighter", spy)
    summary = recipe.train(cfg)
    assert seen == {"train_idx": 50, "num_items": 50}
    assert summary["steps"] == 2

    np.save(path, np.array([val_idx[0]]))  # a validation sequence: refused
    with pytest.raises(ValueError, match="validation"):
        recipe.training_split(cfg, corpus)
    np.save(path, np.array([corpus.num_docs]))
    with pytest.raises(ValueError, match="outside"):
        recipe.training_split(cfg, corpus)


def test_pool_and_target_are_disjoint_parts_of_the_training_split() -> None:
    cfg = compose_config(TINY)
    study = Study.from_cfg(cfg.dsir_study)
    corpus = recipe.load_corpus(cfg.data)
    pool, target = pool_and_target(cfg, corpus, study, seed=1)
    with open_dict(cfg):
        cfg.seed = 1
    train_idx, _ = recipe.training_split(cfg, corpus)
    docs = corpus.domain_id("docs")
    assert np.intersect1d(pool, target).size == 0
    assert np.isin(pool, train_idx).all() and np.isin(target, train_idx).all()
    assert (corpus.domains[target] == docs).all()
    n_docs = int((corpus.domains[train_idx] == docs).sum())
    assert target.size == round(0.5 * n_docs)
    assert pool.size + target.size == train_idx.size  # pool_target_share = 1


def test_selection_rules() -> None:
    pool = ["x = f(y)"] * 6 + ["The value of the thing is returned to the caller."] * 2
    target = ["The value is the thing of the caller."]
    study = Study()
    heuristic = select("heuristic", pool, target, 2, 0, study, None)
    assert heuristic.tolist() == [6, 7]
    dsir = select("dsir", pool, target, 2, 0, study, None)
    assert dsir.tolist() == [6, 7]
    random = select("random", pool, target, 3, 0, study, None)
    assert random.size == 3 and len(set(random.tolist())) == 3
    with pytest.raises(ValueError, match="data-selection"):
        select("reference", pool, target, 2, 0, study, None)
    assert prose_score("") == 0.0


def test_spearman_without_scipy_matches_scipy(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = [0.1, 0.5, 0.3, 0.3, 0.9], [2.0, 1.0, 1.5, 1.7, 0.2]
    with_scipy = spearman(x, y)
    monkeypatch.setitem(__import__("sys").modules, "scipy.stats", None)
    assert spearman(x, y) == pytest.approx(with_scipy)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3])) and np.isnan(spearman([1, 2], [2, 1]))


def test_bad_study_settings_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--smoke", "dsir_study.k_fraction=1.5"])
    assert "k_fraction" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--smoke", "dsir_study.selections=[dsir,oracle]"])
    assert "oracle" in capsys.readouterr().err


def test_docstring_examples() -> None:
    result = doctest.testmod(dsir_selection)
    assert result.attempted >= 3 and result.failed == 0


def test_max_train_per_domain_makes_a_domain_low_resource() -> None:
    cfg = compose_config([*TINY, "dsir_study.steps=2"])
    corpus = recipe.load_corpus(cfg.data)
    train_idx, val_idx = recipe.training_split(cfg, corpus)
    names = [str(n) for n in corpus.domain_names]
    small = names[-1]
    with open_dict(cfg):
        cfg.data.max_train_per_domain = {small: 3}
    got_train, got_val = recipe.training_split(cfg, corpus)
    assert np.array_equal(got_val, val_idx)  # validation unchanged
    counts = np.bincount(corpus.domains[got_train], minlength=len(names))
    before = np.bincount(corpus.domains[train_idx], minlength=len(names))
    assert counts[-1] == 3 and np.array_equal(counts[:-1], before[:-1])
    assert np.isin(got_train, train_idx).all()
    assert np.array_equal(recipe.training_split(cfg, corpus)[0], got_train)  # seeded
    for caps, match in (
        ({"nope": 3}, "not a domain"),
        ({small: 0}, "int >= 1"),
        ([3], "must map domain names"),
    ):
        with open_dict(cfg):
            cfg.data.max_train_per_domain = caps
        with pytest.raises(ValueError, match=match):
            recipe.training_split(cfg, corpus)
