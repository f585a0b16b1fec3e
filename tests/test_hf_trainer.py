"""Tests for reweight.integrations.huggingface: ReweightTrainer on a tiny GPT-2 (no downloads)."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import torch
import torch.nn.functional as F
from accelerate.data_loader import BatchSamplerShard
from torch.utils.data import BatchSampler, DataLoader
from transformers import (
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2ForTokenClassification,
    TrainerCallback,
)

from reweight import IndexedDataset, Reweighter
from reweight.integrations.huggingface import (
    REWEIGHTER_STATE_NAME,
    ReweightTrainer,
    per_sample_loss,
)
from tests import hf_harness
from tests.ranks import run_ranks
from tests.state_compare import state_differences

REPO_ROOT = Path(__file__).resolve().parents[1]
CASE = {"name": "one", "source": "dynamic", "steps": 8, "stop": 3, "batch": 4, "accumulation": 2}


def _case(**changes: Any) -> dict[str, Any]:
    return {**CASE, **changes}


# ---------------------------------------------------------------- per-sample losses


def test_causal_lm_per_sample_loss_is_each_samples_own_loss() -> None:
    """Each sample's loss in a padded batch (-100 on padding and on a 'prompt') equals the
    model's own loss on that sample alone: a mean over its own target tokens, shifted once."""
    model = hf_harness.model().eval()
    rows = [hf_harness.dataset()[i] for i in (0, 1, 2, 5)]
    rows[3]["labels"][:3] = -100  # a prompt without targets
    batch = {k: torch.stack([r[k] for r in rows]) for k in ("input_ids", "attention_mask")}
    labels = torch.stack([r["labels"] for r in rows])
    with torch.no_grad():
        logits = model(**batch).logits
        ours = per_sample_loss(logits, labels, shift=True)
        for i, row in enumerate(rows):
            n = int(row["attention_mask"].sum())
            alone = model(input_ids=row["input_ids"][None, :n], labels=row["labels"][None, :n])
            assert ours[i].item() == pytest.approx(alone.loss.item(), rel=1e-5, abs=1e-6)
    assert ours.dtype == torch.float32 and ours.shape == (4,)


def test_token_loss_of_a_sample_without_targets_is_nan_and_carries_no_nan_gradient() -> None:
    logits = torch.randn(2, 5, 7, requires_grad=True)
    labels = torch.tensor([[1, 2, 3, -100, -100], [4, -100, -100, -100, -100]])
    losses = per_sample_loss(logits, labels, shift=True)
    assert not math.isnan(losses[0].item()) and math.isnan(losses[1].item())
    torch.where(losses.isnan(), torch.zeros_like(losses), losses).sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert float(logits.grad[1].abs().sum()) == 0.0


def test_the_trainer_loss_is_the_models_loss_when_nothing_is_reweighted(tmp_path: Path) -> None:
    """Equal-length samples and no sources: the reweighted loss is the model's own (shifted
    once); a token classifier is not shifted."""
    trainer = _trainer(tmp_path)
    model = hf_harness.model()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    assert trainer._shifts_labels(model)
    ids = torch.randint(1, 128, (4, 8), generator=torch.Generator().manual_seed(3))
    batch = {"input_ids": ids, "labels": ids.clone(), "index": torch.arange(4)}
    loss = trainer.compute_loss(model.train(), batch)
    own = model(input_ids=ids, labels=ids).loss
    assert loss.item() == pytest.approx(own.item(), rel=1e-6)
    config = GPT2Config(n_layer=1, n_head=2, n_embd=32, vocab_size=128, n_positions=64)
    assert not trainer._shifts_labels(GPT2ForTokenClassification(config))
    assert not trainer._shifts_labels(GPT2ForSequenceClassification(config))


def test_sequence_classification_per_sample_losses_match_the_models_loss() -> None:
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=1,
        n_head=2,
        n_embd=32,
        vocab_size=128,
        n_positions=64,
        num_labels=3,
        pad_token_id=0,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = GPT2ForSequenceClassification(config).eval()
    ids = torch.randint(1, 128, (4, 6), generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 2, 1, 2])
    with torch.no_grad():
        out = model(input_ids=ids, labels=labels)
    ours = per_sample_loss(out.logits, labels)
    assert torch.allclose(ours, F.cross_entropy(out.logits, labels, reduction="none"))
    assert ours.mean().item() == pytest.approx(out.loss.item(), rel=1e-6)
    # Regression (one label) and multi-label (float rows): one loss per sample too.
    assert per_sample_loss(torch.randn(4, 1), torch.randn(4)).shape == (4,)
    multi = per_sample_loss(torch.randn(4, 3), torch.randint(0, 2, (4, 3)).float())
    assert multi.shape == (4,)


def test_per_sample_loss_shape_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match="per_sample_loss_func"):
        per_sample_loss(torch.randn(2, 3, 4, 5), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="aligned with input_ids"):
        per_sample_loss(torch.randn(2, 5, 7), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="problem_type"):
        per_sample_loss(torch.randn(2, 3), torch.tensor([0, 1]), problem_type="ranking")


# ---------------------------------------------------------------- training on one process


class _Logs(TrainerCallback):
    def __init__(self) -> None:
        self.logs: list[dict[str, float]] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        self.logs.append(dict(logs or {}))


def test_steps_once_per_optimizer_step_logs_metrics_and_checkpoints(tmp_path: Path) -> None:
    case = _case(steps=4, stop=2, source="dynamic")
    logs = _Logs()
    trainer = hf_harness.trainer(tmp_path, case)
    trainer.add_callback(logs)
    trainer.train()
    rw = trainer.reweighter
    # 4 optimizer steps of 2 micro-batches: 8 reduce() calls, 4 reweighter steps.
    assert len(trainer.trace) == 8 and rw.global_step == 4 == trainer.state.global_step
    assert rw.sampler.draws_consumed == 8 * case["batch"]
    assert rw.total_steps == 4  # read from max_steps
    # The metrics reach every callback's on_log (report_to integrations are callbacks).
    train_logs = [log for log in logs.logs if "loss" in log]
    assert len(train_logs) == 4
    for log in train_logs:
        assert {"reweight/progress", "reweight/sampler/ess_fraction"} <= set(log)
        assert any(key.startswith("reweight/domain/web/") for key in log)
    assert [log["reweight/progress"] for log in train_logs] == [0.25, 0.5, 0.75, 1.0]
    for step in (2, 4):
        saved = torch.load(tmp_path / f"checkpoint-{step}" / REWEIGHTER_STATE_NAME)
        assert saved["global_step"] == step


def test_the_loader_draws_from_the_reweighter_in_stream_order(tmp_path: Path) -> None:
    """With no sources every draw is a pure function of (seed, position): the trained items
    are the sampler's global sequence, in order, across epochs."""
    case = _case(steps=6, stop=6, source="none", accumulation=1)
    trainer = hf_harness.trainer(tmp_path, case)
    trainer.train()
    reference = hf_harness.reweighter("none").sampler
    sequence: list[int] = []
    while len(sequence) < 6 * case["batch"]:
        sequence += list(iter(reference))
    trained = [i for batch in trainer.trace for i in batch]
    assert trained == sequence[: len(trained)]


def test_evaluation_does_not_touch_the_reweighter(tmp_path: Path) -> None:
    trainer = hf_harness.trainer(tmp_path, _case(steps=2, stop=2))
    trainer.eval_dataset = hf_harness.dataset()
    trainer.train()
    before = trainer.reweighter.state_dict()
    metrics = trainer.evaluate()
    assert math.isfinite(metrics["eval_loss"])
    unlabelled = IndexedDataset([{"input_ids": row["input_ids"]} for row in trainer.eval_dataset])
    assert trainer.predict(unlabelled).predictions.shape[:2] == (36, hf_harness.SEQ)
    assert not state_differences(before, trainer.reweighter.state_dict())


def test_sequence_classification_trains(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=1,
        n_head=2,
        n_embd=32,
        vocab_size=128,
        n_positions=64,
        num_labels=2,
        pad_token_id=0,
        bos_token_id=0,
        eos_token_id=0,
    )
    gen = torch.Generator().manual_seed(0)
    rows = [
        {"input_ids": torch.randint(1, 128, (6,), generator=gen), "labels": i % 2}
        for i in range(12)
    ]
    data = IndexedDataset(rows, domains=[0] * 8 + [1] * 4, domain_names=["a", "b"])
    rw = Reweighter.from_dataset(data, sources=[{"kind": "in_batch", "strategy": "linupper"}])
    args = hf_harness.arguments(tmp_path, _case(steps=3, stop=3))
    trainer = ReweightTrainer(
        model=GPT2ForSequenceClassification(config), args=args, train_dataset=data, reweighter=rw
    )
    assert trainer.train().global_step == 3 == rw.global_step


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_equals_the_uninterrupted_run(workers: int, tmp_path: Path) -> None:
    """36 items in batches of 4, 2 accumulation steps: 9 batches (5 optimizer steps) per epoch;
    resuming at step 3 skips 6 batches of the epoch, then crosses into the next one. With 2
    DataLoader workers, 4 more batches are drawn ahead (in flight) at the checkpoint."""
    case = _case(workers=workers)
    _check_resume(case, hf_harness.run_case(case, tmp_path))


def _check_resume(case: dict[str, Any], result: dict[str, Any]) -> None:
    a, c = result["a"], result["c"]
    done = case["stop"] * case["accumulation"]
    assert len(a["trace"]) > done and c["trace"] == a["trace"][done:]
    for p_a, p_c in zip(a["params"], c["params"], strict=True):
        assert torch.equal(p_a, p_c)
    assert not state_differences(a["state"], c["state"])
    assert a["global_step"] == c["global_step"] == case["steps"]
    a_logs = {log["step"]: log for log in a["log_history"] if "loss" in log}
    for log in (log for log in c["log_history"] if "loss" in log):
        assert log["loss"] == a_logs[log["step"]]["loss"]
        assert log["reweight/progress"] == a_logs[log["step"]]["reweight/progress"]


# ---------------------------------------------------------------- mistakes users make


def _trainer(tmp_path: Path, **overrides: Any) -> ReweightTrainer:
    case = _case(steps=2, stop=2)
    return ReweightTrainer(
        model=hf_harness.model(),
        args=hf_harness.arguments(tmp_path, case, **overrides),
        train_dataset=hf_harness.dataset(),
        reweighter=hf_harness.reweighter("none"),
    )


def test_settings_that_replace_the_sampler_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"group_by_length.*Leave it at its default"):
        _trainer(tmp_path, train_sampling_strategy="group_by_length")
    with pytest.raises(ValueError, match="ignore_data_skip=False"):
        _trainer(tmp_path, ignore_data_skip=True)
    with pytest.raises(ValueError, match="dispatch_batches': False"):
        _trainer(tmp_path, accelerator_config={"dispatch_batches": True})


def test_an_overridden_train_dataloader_is_an_error(tmp_path: Path) -> None:
    class Mine(ReweightTrainer):
        def get_train_dataloader(self) -> Any:
            return DataLoader(self.train_dataset, batch_size=4, shuffle=True)

    base = _trainer(tmp_path)
    trainer = Mine(
        model=base.model,
        args=base.args,
        train_dataset=base.train_dataset,
        reweighter=base.reweighter,
    )
    with pytest.raises(RuntimeError, match=r"does not draw from reweighter.sampler.*RandomSampler"):
        trainer.train()


def test_a_reshard_by_accelerate_is_an_error(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path)
    shard = BatchSamplerShard(BatchSampler(trainer._reweight_sampler, 4, False), num_processes=2)
    resharded = DataLoader(trainer.train_dataset, batch_sampler=shard)
    with pytest.raises(RuntimeError, match="shards the train batches again"):
        trainer._reweight_train_begin(trainer.state, resharded)


def test_a_loss_reduced_to_a_scalar_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="compute_loss_func returns one loss per batch"):
        ReweightTrainer(
            model=hf_harness.model(),
            args=hf_harness.arguments(tmp_path, _case()),
            train_dataset=hf_harness.dataset(),
            reweighter=hf_harness.reweighter("none"),
            compute_loss_func=lambda outputs, labels, num_items_in_batch=None: outputs.loss,
        )
    trainer = ReweightTrainer(
        model=hf_harness.model(),
        args=hf_harness.arguments(tmp_path, _case()),
        train_dataset=hf_harness.dataset(),
        reweighter=hf_harness.reweighter("none"),
        per_sample_loss_func=lambda outputs, labels: outputs.logits.mean(),
    )
    with pytest.raises(ValueError, match=r"scalar .* reduction='none'"):
        trainer.train()
    assert trainer.reweighter.global_step == 0


def test_labels_shifted_twice_are_an_error(tmp_path: Path) -> None:
    rows = []
    for row in hf_harness.dataset().dataset:
        shifted = torch.full_like(row["labels"], -100)
        shifted[:-1] = row["labels"][1:]  # the collator shifted them already
        rows.append({**row, "labels": shifted})
    data = IndexedDataset(rows, domains=hf_harness.dataset().domains)
    trainer = ReweightTrainer(
        model=hf_harness.model(),
        args=hf_harness.arguments(tmp_path, _case()),
        train_dataset=data,
        reweighter=Reweighter.from_dataset(data),
    )
    with pytest.raises(ValueError, match=r"shifted already.*'shift_labels'"):
        trainer.train()


def test_a_checkpoint_without_the_reweighter_state_is_an_error(tmp_path: Path) -> None:
    trainer = hf_harness.trainer(tmp_path / "a", _case(steps=2, stop=2))
    trainer.train()
    checkpoint = tmp_path / "a" / "checkpoint-2"
    (checkpoint / REWEIGHTER_STATE_NAME).unlink()
    fresh = hf_harness.trainer(tmp_path / "b", _case(steps=4, stop=2))
    with pytest.raises(FileNotFoundError, match="not written by ReweightTrainer"):
        fresh.train(resume_from_checkpoint=str(checkpoint))


def test_resuming_with_another_batch_size_is_an_error(tmp_path: Path) -> None:
    trainer = hf_harness.trainer(tmp_path / "a", _case(steps=3, stop=3))
    trainer.train()
    other = hf_harness.trainer(tmp_path / "b", _case(steps=6, stop=3, batch=2))
    with pytest.raises(ValueError, match="per_device_train_batch_size"):
        other.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-3"))


def test_import_reweight_does_not_import_transformers() -> None:
    # (Lightning itself imports transformers when it is installed: ReweightCallback is left out.)
    code = (
        "import sys, reweight, reweight.integrations; reweight.Reweighter; "
        "reweight.IndexedDataset; assert 'transformers' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


# ---------------------------------------------------------------- two processes (gloo)


def _run_ranks(cases: list[dict[str, Any]], out: Path, world: int) -> list[dict[str, Any]]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "cases.json").write_text(json.dumps(cases))
    run_ranks("tests.hf_harness", [str(out / "cases.json"), str(out)], out, world, timeout=900)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world)]


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_draw_disjoint_slices_of_one_sequence_and_resume_exactly(
    tmp_path: Path,
) -> None:
    """Per rank: 18 draws per epoch in batches of 4 (the last of 2), 2 accumulation steps: 3
    optimizer steps per epoch; resuming at step 2 skips 4 batches and crosses an epoch."""
    cases = [
        _case(name="none", source="none", steps=6, stop=2),
        _case(name="dynamic", source="dynamic", steps=6, stop=2),
    ]
    ranks = _run_ranks(cases, tmp_path, world=2)
    for case in cases:
        for rank in ranks:
            _check_resume(case, rank[case["name"]])
        # Every rank holds the same state (rank 0's checkpoint is the whole state) and model.
        a0, a1 = (r[case["name"]]["a"] for r in ranks)
        assert not state_differences(a0["state"], a1["state"])
        for p0, p1 in zip(a0["params"], a1["params"], strict=True):
            assert torch.equal(p0, p1)
    # Uniform draws are a pure function of (seed, position): rank r trained on positions
    # r, r + 2, r + 4, ... of the one global sequence, in order — not re-sharded by accelerate.
    reference = hf_harness.reweighter("none").sampler
    sequence: list[int] = []
    while len(sequence) < 200:
        sequence += list(iter(reference))
    for r, rank in enumerate(ranks):
        trained = [i for batch in rank["none"]["a"]["trace"] for i in batch]
        assert len(trained) == 2 * 18  # two epochs of 18 draws (6 optimizer steps)
        assert trained == sequence[r::2][: len(trained)]


def test_readme_snippet_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index("### Hugging Face Trainer") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    monkeypatch.chdir(tmp_path)
    snippet = code.group(1).replace('report_to="none")', 'report_to="none", use_cpu=True)')
    namespace: dict[str, Any] = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    trainer, reweighter = namespace["trainer"], namespace["reweighter"]
    assert trainer.state.global_step == 10 == reweighter.global_step
    assert (tmp_path / "out" / "checkpoint-5" / REWEIGHTER_STATE_NAME).is_file()
    assert any("reweight/domain/code/sampled" in log for log in trainer.state.log_history)
    resumed = namespace["ReweightTrainer"](
        model=namespace["model"],
        args=namespace["args"],
        train_dataset=namespace["train"],
        reweighter=namespace["Reweighter"].from_dataset(
            namespace["train"], sources=[namespace["DomainMixing"]({"web": 0.5, "code": 0.5})]
        ),
    )
    shutil.rmtree(tmp_path / "out" / "checkpoint-10")  # as if stopped after step 5
    resumed.train(resume_from_checkpoint=True)  # the last checkpoint: step 5
    assert resumed.reweighter.global_step == 10
    assert not state_differences(resumed.reweighter.state_dict(), reweighter.state_dict())
