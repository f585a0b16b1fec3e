"""Small Hugging Face Trainer runs with a ReweightTrainer, for tests/test_hf_trainer.py.

:func:`run_case` trains a tiny GPT-2 (built from a config, nothing downloaded) straight through
(run A, which writes a checkpoint every ``stop`` steps) and then resumes a fresh Trainer, model
and Reweighter from A's checkpoint at step ``stop`` (run C); it returns what each trained on.

Run as a script under several processes (``RANK``/``LOCAL_RANK``/``WORLD_SIZE``/``MASTER_ADDR``/
``MASTER_PORT`` set, as torchrun does, which the Trainer reads) it runs every case of a JSON file
and writes ``rank<r>.pt``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel, TrainingArguments

from reweight import DomainMixing, InBatchWeights, IndexedDataset, LossPriority, Reweighter
from reweight.integrations.huggingface import ReweightTrainer

SIZES = (20, 10, 6)  # items per domain: 36 in all
SEQ = 12
VOCAB = 128


def dataset() -> IndexedDataset:
    """Rows of different lengths, right-padded: labels = input_ids with -100 on the padding."""
    gen = torch.Generator().manual_seed(0)
    rows = []
    for i in range(sum(SIZES)):
        length = 4 + (i * 7) % (SEQ - 3)
        ids = torch.randint(1, VOCAB, (SEQ,), generator=gen)
        mask = (torch.arange(SEQ) < length).long()
        ids = torch.where(mask.bool(), ids, torch.zeros_like(ids))
        labels = torch.where(mask.bool(), ids, torch.full_like(ids, -100))
        rows.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return IndexedDataset(
        rows, domains=np.repeat(np.arange(3), SIZES), domain_names=["web", "code", "math"]
    )


def model() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=1,
        n_head=2,
        n_embd=32,
        vocab_size=VOCAB,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(config)


def reweighter(source: str) -> Reweighter:
    sources: list[Any] = []
    if source == "dynamic":
        sources = [
            DomainMixing({"kind": "cooldown", "high": 5.0, "low": 1.0}),
            InBatchWeights("linupper", r=0.7),
            LossPriority(mode="proposal", refresh_every=2, decay=0.8),
        ]
    return Reweighter.from_dataset(dataset(), seed=5, sources=sources)


class RecordingTrainer(ReweightTrainer):
    """Records the item indices of every training micro-batch, in order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trace: list[list[int]] = []

    def compute_loss(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        if model.training:
            self.trace.append(inputs["index"].tolist())
        return super().compute_loss(model, inputs, *args, **kwargs)


def arguments(out: Path, case: dict[str, Any], **overrides: Any) -> TrainingArguments:
    options: dict[str, Any] = {
        "max_steps": case["steps"],
        "per_device_train_batch_size": case["batch"],
        "gradient_accumulation_steps": case["accumulation"],
        "save_steps": case["stop"],
        "logging_steps": 1,
        "learning_rate": 1e-2,
        "seed": 0,
        "report_to": "none",
        "use_cpu": True,
        "dataloader_num_workers": case.get("workers", 0),
        "disable_tqdm": True,
        "save_only_model": False,
        "ddp_backend": "gloo" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
    }
    options.update(overrides)
    return TrainingArguments(str(out), **options)


def trainer(out: Path, case: dict[str, Any], **overrides: Any) -> RecordingTrainer:
    return RecordingTrainer(
        model=model(),
        args=arguments(out, case, **overrides),
        train_dataset=dataset(),
        reweighter=reweighter(case["source"]),
    )


def _result(t: RecordingTrainer) -> dict[str, Any]:
    return {
        "trace": t.trace,
        "params": [p.detach().clone() for p in t.model.parameters()],
        "state": t.reweighter.state_dict(),
        "global_step": t.state.global_step,
        "log_history": t.state.log_history,
    }


def run_case(case: dict[str, Any], out: Path) -> dict[str, Any]:
    """Run A straight through (checkpoints every ``stop`` steps), run C resumed from A's."""
    a = trainer(out / case["name"] / "a", case)
    a.train()
    checkpoint = out / case["name"] / "a" / f"checkpoint-{case['stop']}"
    c = trainer(out / case["name"] / "c", case)
    c.train(resume_from_checkpoint=str(checkpoint))
    return {"a": _result(a), "c": _result(c)}


def main() -> None:
    cases = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    results = {case["name"]: run_case(case, out) for case in cases}
    rank = int(os.environ.get("RANK", "0"))
    torch.save(results, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main()
