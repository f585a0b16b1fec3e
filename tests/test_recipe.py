"""The Hydra main job: every config composes and instantiates, each reweight preset runs, the
run directory holds metrics, summary, checkpoint, W&B offline run and a valid PNG dashboard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from recipes import train as recipe

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
PRESETS = ["none", "static", "mixing", "dynamic", "full", "balanced"]
TINY = [
    "steps=6",
    "batch_size=8",
    "val_every=3",
    "log_every=2",
    "warmup_steps=2",
    "model.d_model=16",
    "model.n_layers=1",
    "model.n_heads=2",
    "data.seq_len=64",
    "data.max_val_per_domain=4",
    "checkpoint=true",
]


def _compose(overrides: list[str], out_dir: Path | None = None) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.out_dir = str(out_dir) if out_dir is not None else "unused"
    return cfg


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("REWEIGHT_CACHE", str(tmp_path_factory.getbasetemp() / "corpus-cache"))


def test_every_config_composes_and_every_key_is_commented() -> None:
    for group in ("data", "model", "reweight", "trainer", "logger"):
        for option in _options(group):
            cfg = _compose([f"{group}={option}"])
            assert cfg[group] is not None
    for option in _options("experiment"):
        cfg = _compose([f"experiment={option}"])
        assert cfg.reweight.name
    for path in CONF.rglob("*.yaml"):
        lines = path.read_text().splitlines()
        assert lines[0].startswith("#"), f"{path} must start with the command that runs it"
        assert any("python recipes/" in line for line in lines[:3]), path


@pytest.mark.parametrize("preset", PRESETS)
def test_reweight_presets_build_a_reweighter(preset: str) -> None:
    cfg = _compose([f"reweight={preset}", "data.seq_len=64", "data.max_val_per_domain=4"])
    corpus = recipe.load_corpus(cfg.data)
    split = corpus.split(0.05, seed=0, max_val_per_domain=4)
    from recipes.data import ByteLMDataset

    train_set = ByteLMDataset(corpus, split.train).indexed()
    rw = recipe.build_reweighter(cfg, corpus, split.train, train_set)
    assert rw.sampler.num_items == len(train_set)
    assert rw.total_steps == cfg.steps
    # Every configured source, named by its key, and of the class its _target_ names.
    configured = dict(cfg.reweight.sources)
    assert [s.name for s in rw.sources] == list(configured)
    for source in rw.sources:
        target = configured[source.name]["_target_"]
        assert target.endswith(type(source).__name__) or target == "recipes.dsir.dsir_importance"
    if preset == "none":
        assert rw.sources == [] and not rw.needs_total_steps


def test_a_source_can_be_switched_off_from_the_command_line() -> None:
    cfg = _compose(["reweight=full", "reweight.sources.static=null", "data.max_val_per_domain=4"])
    corpus = recipe.load_corpus(cfg.data)
    sources = recipe.build_sources(cfg, corpus, corpus.split(0.05, seed=0).train)
    assert [s.name for s in sources] == ["mixing", "in_batch", "loss_priority"]


def test_a_source_without_target_is_a_clear_error() -> None:
    cfg = _compose(["reweight=mixing", "~reweight.sources.mixing._target_"])
    with pytest.raises(ValueError, match="_target_"):
        recipe.build_sources(cfg, None, None)  # type: ignore[arg-type]


def test_loggers_instantiate(tmp_path: Path) -> None:
    for option in _options("logger"):
        cfg = _compose([f"logger={option}"], tmp_path / option)
        loggers = recipe.make_logger(cfg, tmp_path / option)
        assert loggers and isinstance(loggers[0], recipe.JsonlLogger)


def test_unknown_data_kind_and_missing_files_are_clear_errors() -> None:
    cfg = _compose(["data=jsonl"])
    with pytest.raises(ValueError, match=r"data\.paths"):
        recipe.load_corpus(cfg.data)
    cfg = _compose(["reweight=static", "reweight.sources.static.target_domain=nope"])
    corpus = recipe.load_corpus(cfg.data)
    with pytest.raises(ValueError, match="target_domain"):
        recipe.build_sources(cfg, corpus, corpus.split(0.05, seed=0).train)


def _png_ok(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(path).shape[0] > 100


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_each_preset_trains_and_writes_its_run(preset: str, tmp_path: Path) -> None:
    logger = "wandb" if preset == "full" else "csv"
    cfg = _compose([f"reweight={preset}", f"logger={logger}", *TINY], tmp_path)
    summary = recipe.train(cfg)
    assert summary["steps"] == 6 and summary["reweight"] == preset
    assert all(f"val/loss/{n}" in summary for n in ("code", "docs"))
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["val/loss"] == pytest.approx(summary["val/loss"])
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("val/loss" in row for row in rows)
    assert any("reweight/domain/code/realised" in row for row in rows)  # none too
    if preset in ("mixing", "full"):
        assert any("reweight/mixing/tau" in row for row in rows)
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    state = torch.load(checkpoint, weights_only=False)["callbacks"]
    saved = [v for k, v in state.items() if k.startswith("ReweightCallback")]
    assert saved and saved[0]["global_step"] == 6  # the baseline checkpoints its stream too
    _png_ok(tmp_path / "dashboard.png")
    if logger == "wandb":
        assert list((tmp_path / "wandb").glob("offline-run-*"))


@pytest.mark.slow
def test_resume_from_the_last_checkpoint(tmp_path: Path) -> None:
    first = _compose(["reweight=full", "logger=csv", *TINY], tmp_path / "a")
    recipe.train(first)
    ckpt = tmp_path / "a" / "checkpoints" / "last.ckpt"
    resumed = _compose(
        ["reweight=full", "logger=csv", *TINY, "steps=9", f"resume={ckpt}"], tmp_path / "b"
    )
    summary = recipe.train(resumed)
    assert summary["steps"] == 9


@pytest.mark.slow
def test_multirun_and_compare(tmp_path: Path) -> None:
    env = {**os.environ, "WANDB_MODE": "offline"}
    cmd = [
        sys.executable,
        str(ROOT / "recipes" / "train.py"),
        "-m",
        "reweight=none,mixing",
        "logger=csv",
        "dashboard=false",
        *TINY,
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    subprocess.run(cmd, check=True, cwd=tmp_path, env=env, capture_output=True, timeout=600)
    from recipes.compare import compare

    result = compare([tmp_path / "sweep"], tmp_path / "cmp")
    assert len(result["runs"]) == 2
    assert (tmp_path / "cmp" / "comparison.md").exists()
    _png_ok(tmp_path / "cmp" / "comparison.png")


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_sim_two_cpu_processes(tmp_path: Path) -> None:
    env = {**os.environ, "WANDB_MODE": "offline", "REWEIGHT_CACHE": str(tmp_path / "cache")}
    cmd = [
        sys.executable,
        str(ROOT / "recipes" / "train.py"),
        "trainer=ddp_sim",
        "reweight=full",
        "logger=csv",
        *TINY,
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-6000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["reweight"] == "full"
    assert all(f"val/loss/{n}" in summary for n in ("code", "docs"))
