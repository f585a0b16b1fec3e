"""What the plain training loops share (recipes/train_torchrun.py, recipes/train_fabric.py):
their flags, the main job's data, model and weight sources, and a trace of what was trained on.

Example:
    >>> args = parser("a loop").parse_args(["--steps", "10", "--preset", "none"])
    >>> args.steps, args.batch_size, args.preset
    (10, 32, 'none')
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recipes.data import ByteLMDataset, build_corpus
from recipes.model import ByteTransformerLM
from recipes.presets import load_preset, preset_sources
from reweight import IndexedDataset, Reweighter
from reweight.sources import Source

__all__ = ["Trace", "byte_lm", "parser", "report", "training_set_and_sources"]

VAL_FRACTION = 0.05  # the main job's held-out share of each domain (conf/data/builtin.yaml)


def parser(description: str) -> argparse.ArgumentParser:
    """The loops' command line (defaults: the main job's, conf/train.yaml)."""
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=400, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per step and rank")
    p.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate")
    p.add_argument("--warmup-steps", type=int, default=20, help="linear warm-up, then cosine")
    p.add_argument("--seed", type=int, default=0, help="seeds the model, the draws, the split")
    p.add_argument(
        "--preset", default="balanced", help="conf/reweight/<name>.yaml, or a .yaml file path"
    )
    p.add_argument("--seq-len", type=int, default=256, help="bytes per sequence")
    p.add_argument("--d-model", type=int, default=128, help="model width")
    p.add_argument("--n-layers", type=int, default=2, help="transformer blocks")
    p.add_argument("--max-docs-per-domain", type=int, default=None, help="cap every domain")
    p.add_argument("--checkpoint-dir", type=Path, default=None, help="write step-<n>.pt here")
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
    p.add_argument("--resume", type=Path, default=None, help="a checkpoint to continue from")
    p.add_argument("--log-every", type=int, default=10, help="steps between printed losses")
    p.add_argument("--trace", type=Path, default=None, help="write rank<r>.pt (tests) here")
    return p


def training_set_and_sources(args: argparse.Namespace) -> tuple[IndexedDataset, list[Source]]:
    """The main job's training set (the built-in corpus, its seeded training split; every item
    carries ``index`` and ``domain``) and the weight sources of ``args.preset``."""
    corpus = build_corpus(seq_len=args.seq_len, max_docs_per_domain=args.max_docs_per_domain)
    train_idx = corpus.split(VAL_FRACTION, seed=args.seed, max_val_per_domain=64).train
    train_set = ByteLMDataset(corpus, train_idx).indexed()
    return train_set, preset_sources(load_preset(args.preset), corpus, train_idx)


def byte_lm(args: argparse.Namespace) -> ByteTransformerLM:
    """The main job's byte-level LM at the flags' size (weights seeded by ``args.seed``)."""
    return ByteTransformerLM(
        d_model=args.d_model, n_layers=args.n_layers, seq_len=args.seq_len, seed=args.seed
    )


def report(step: int, loss: torch.Tensor, reweighter: Reweighter) -> None:
    """Prints the step, the weighted loss and the domain shares drawn so far."""
    metrics = reweighter.metrics()
    shares = " ".join(
        f"{name} {metrics[f'domain/{name}/realised']:.2f}" for name in reweighter.domain_names
    )
    print(f"step {step}  loss {loss.item():.4f}  realised shares: {shares}", flush=True)


class Trace:
    """What one rank trained on (items and loss weights per step) and where it ended (the
    parameters, the reweighter's state): the tests compare runs with it. A no-op without a path.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.steps: list[dict[str, Any]] = []

    def record(self, step: int, batch: dict[str, Any], reweighter: Reweighter) -> None:
        if self.path is not None:
            weights = torch.from_numpy(np.array(reweighter.last_loss_weights, copy=True))
            self.steps.append({"step": step, "items": batch["index"].tolist(), "weights": weights})

    def save(self, rank: int, model: torch.nn.Module, reweighter: Reweighter) -> None:
        if self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)
            params = [p.detach().cpu().clone() for p in model.parameters()]
            end = {"steps": self.steps, "params": params, "state": reweighter.state_dict()}
            torch.save(end, self.path / f"rank{rank}.pt")
