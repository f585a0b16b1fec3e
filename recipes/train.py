"""The main job: a byte-level language model on a multi-domain corpus, with online reweighting.

    python recipes/train.py                          # reweight=balanced on the built-in corpus
    python recipes/train.py reweight=none steps=200           # any key can be overridden
    python recipes/train.py -m reweight=none,mixing,dynamic,full     # ablations (Hydra multirun)
    python recipes/compare.py multirun/<date>/<time>                 # their comparison

Everything is configured in conf/ (Hydra); ``train(cfg)`` is a plain function tests call. A run
writes into its directory: ``metrics.jsonl`` (everything logged), ``summary.json`` (final
per-domain validation loss), ``checkpoints/last.ckpt``, ``dashboard.png`` and, with
``logger=wandb``, an offline W&B run (``wandb sync`` uploads it).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `recipes` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning.pytorch as pl
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from recipes.dashboard import make_dashboard
from recipes.data import (
    AnyCorpus,
    ByteLMDataset,
    TokenCorpus,
    build_corpus,
    load_hf_corpus,
    load_user_corpus,
)
from recipes.model import ByteTransformerLM, make_optimizer, per_sample_loss, warmup_cosine
from recipes.presets import preset_sources
from reweight import IndexedDataset, ReweightCallback, Reweighter
from reweight.sources import Source

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
BYTE_VOCAB = 256  # the model's vocabulary for text: bytes


# ---------------------------------------------------------------------- logging


class JsonlLogger(Logger):
    """Appends every logged dict to ``metrics.jsonl`` (the dashboard and compare.py read it)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)
        self._rows: dict[int, dict[str, float]] = {}

    @property
    def name(self) -> str:
        return "jsonl"

    @property
    def version(self) -> str:
        return "0"

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        return None

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        row = self._rows.setdefault(int(step or 0), {"step": int(step or 0)})
        for key, value in metrics.items():
            value = float(value.item() if hasattr(value, "item") else value)
            if math.isfinite(value):
                row[key] = value

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.flush()

    @rank_zero_only
    def flush(self) -> None:
        if not self._rows:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as out:
            for step in sorted(self._rows):
                out.write(json.dumps(self._rows[step]) + "\n")
        self._rows.clear()

    def save(self) -> None:
        self.flush()


class WeightHistograms(pl.Callback):
    """Keeps the recent loss weights (for the dashboard) and logs W&B histograms of them."""

    def __init__(self, reweighter: Reweighter, every: int, keep: int = 4096) -> None:
        self.reweighter = reweighter
        self.every = every
        self.keep = keep
        self.recent: list[np.ndarray] = []

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.recent.append(self.reweighter.last_loss_weights)
        while sum(r.size for r in self.recent) > self.keep and len(self.recent) > 1:
            self.recent.pop(0)
        step = trainer.global_step
        if trainer.is_global_zero and self.every and step % self.every == 0:
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    import wandb

                    logger.experiment.log(
                        {
                            "reweight/loss_weight/histogram": wandb.Histogram(
                                self.samples().tolist()
                            )
                        },
                        step=step,
                    )

    def samples(self) -> np.ndarray:
        return np.concatenate(self.recent) if self.recent else np.empty(0)


# ---------------------------------------------------------------------- model


class LanguageModel(pl.LightningModule):
    """Next-byte prediction; the only reweighting line is ``self.reweighter.reduce``."""

    val_sum: torch.Tensor  # per-domain validation loss sums and counts (buffers)
    val_count: torch.Tensor

    def __init__(
        self,
        cfg: DictConfig,
        reweighter: Reweighter,
        names: list[str],
        vocab_size: int = BYTE_VOCAB,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.reweighter = reweighter
        self.domain_names = names
        self.net: ByteTransformerLM = instantiate(cfg.model, vocab_size=vocab_size)
        self.register_buffer("val_sum", torch.zeros(len(names), dtype=torch.float64))
        self.register_buffer("val_count", torch.zeros(len(names), dtype=torch.float64))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        losses = per_sample_loss(self.net, batch["tokens"])
        loss = self.reweighter.reduce(losses, batch)
        self.log("train/loss", losses.detach().mean(), prog_bar=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_sum.zero_()
        self.val_count.zero_()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        losses = per_sample_loss(self.net, batch["tokens"]).detach().double()
        self.val_sum.index_add_(0, batch["domain"], losses)
        self.val_count.index_add_(0, batch["domain"], torch.ones_like(losses))

    def on_validation_epoch_end(self) -> None:
        total = self.trainer.strategy.reduce(self.val_sum, reduce_op="sum")
        count = self.trainer.strategy.reduce(self.val_count, reduce_op="sum")
        per_domain = (total / count.clamp(min=1)).tolist()
        # Every rank holds the same reduced values; sync_dist only averages identical numbers.
        for name, value in zip(self.domain_names, per_domain, strict=True):
            self.log(f"val/loss/{name}", value, sync_dist=True)
        self.log("val/loss", float(np.mean(per_domain)), prog_bar=True, sync_dist=True)

    def configure_optimizers(self) -> Any:
        cfg = self.cfg
        optimizer = make_optimizer(self.net, lr=float(cfg.lr), weight_decay=float(cfg.weight_decay))
        scheduler = warmup_cosine(optimizer, int(cfg.steps), int(cfg.warmup_steps))
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


# ---------------------------------------------------------------------- data and reweighting


def load_corpus(data: DictConfig) -> AnyCorpus:
    """The configured corpus: the built-in one, the user's JSONL/Parquet files or saved Hugging
    Face dataset (all text, as bytes), or the blocks of the user's packed token files."""
    kind = data.kind
    if kind == "builtin":
        return build_corpus(
            data.cache_dir, seq_len=int(data.seq_len), max_docs_per_domain=data.max_docs_per_domain
        )
    if kind in ("jsonl", "parquet"):
        if not data.paths:
            raise ValueError(
                f"data={kind} needs files: pass data.paths='[a.{kind},b.{kind}]' (each record "
                f"with a {data.text_field!r} and a {data.domain_field!r} field)."
            )
        return load_user_corpus(
            list(data.paths),
            text_field=data.text_field,
            domain_field=data.domain_field,
            seq_len=int(data.seq_len),
            max_docs_per_domain=data.max_docs_per_domain,
        )
    if kind == "hf":
        if not data.path:
            raise ValueError(
                "data=hf needs a dataset saved on disk: pass data.path=<the directory "
                f"Dataset.save_to_disk wrote> (rows with a {data.text_column!r} text and a "
                f"{data.domain_column!r} domain)."
            )
        return load_hf_corpus(
            str(data.path),
            split=data.split,
            text_column=data.text_column,
            domain_column=data.domain_column,
            seq_len=int(data.seq_len),
            max_docs_per_domain=data.max_docs_per_domain,
        )
    if kind == "tokens":
        if not data.files:
            raise ValueError(
                "data=tokens needs token files: pass data.files='{web: web.bin, code: code.bin}' "
                "(one flat token array per domain) or data.files=<a directory with one .bin or "
                ".npy file per domain>, with data.dtype of the .bin files."
            )
        if data.seq_len != data.block_size:
            raise ValueError(
                f"data.seq_len ({data.seq_len}) must equal data.block_size ({data.block_size}) "
                "for token data (the model's context is the block); set data.block_size only."
            )
        return TokenCorpus(_plain(data.files), block_size=data.block_size, dtype=data.dtype)
    raise ValueError(
        f"data.kind {kind!r} is unknown; valid kinds: builtin, jsonl, parquet, hf, tokens."
    )


def model_vocab_size(cfg: DictConfig, corpus: AnyCorpus) -> int:
    """``model.vocab_size`` checked against the data; null: what the data needs (256 for text,
    read as bytes; for token files the largest token id + 1, found by one pass over them)."""
    configured = cfg.model.get("vocab_size")
    if configured is not None and (
        isinstance(configured, bool) or not isinstance(configured, int) or configured < 1
    ):
        raise ValueError(
            f"model.vocab_size must be a positive int or null (from the data), got {configured!r}."
        )
    if isinstance(corpus, TokenCorpus):
        return corpus.vocab_size(configured)
    if configured is not None and configured < BYTE_VOCAB:
        raise ValueError(
            f"model.vocab_size={configured} is below {BYTE_VOCAB}, the byte vocabulary of "
            f"data={cfg.data.kind} (text is read as bytes); set it to null or {BYTE_VOCAB}."
        )
    return BYTE_VOCAB if configured is None else configured


def sequences(corpus: AnyCorpus, indices: np.ndarray, vocab_size: int) -> Dataset[Any]:
    """The torch dataset of some items of the corpus, each ``{"tokens": LongTensor}``."""
    if isinstance(corpus, TokenCorpus):
        return corpus.dataset(indices, vocab_size)
    return ByteLMDataset(corpus, indices)


def training_split(cfg: DictConfig, corpus: AnyCorpus) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) corpus indices: the seeded split of ``data``; with
    ``data.train_subset`` (a ``.npy`` of corpus indices, e.g. a data selection) those indices
    replace the training split, and the validation split stays as it is (a subset without
    some domain trains without domains: presets that mix domains then refuse it)."""
    train_idx, val_idx = corpus.split(
        float(cfg.data.val_fraction),
        seed=int(cfg.seed),
        max_val_per_domain=cfg.data.get("max_val_per_domain"),
    )
    path = cfg.data.get("train_subset")
    if path is not None:
        train_idx = _train_subset(str(path), corpus, val_idx, int(cfg.seed))
    caps = cfg.data.get("max_train_per_domain")
    if caps:
        train_idx = cap_domains(corpus, train_idx, _plain(caps), seed=int(cfg.seed))
    return train_idx, val_idx


def cap_domains(
    corpus: AnyCorpus, train_idx: np.ndarray, caps: Mapping[str, int], *, seed: int
) -> np.ndarray:
    """``train_idx`` with at most ``caps[name]`` sequences of each named domain (a seeded
    choice; ``data.max_train_per_domain``): makes a domain low-resource — repeated often under
    upsampling — while its validation sequences stay as they are.

    Example:
        >>> from recipes.data import Corpus
        >>> corpus = Corpus.from_texts({"big": "a" * 16, "small": "b" * 8}, seq_len=4)
        >>> kept = cap_domains(corpus, np.arange(6), {"big": 1}, seed=0)
        >>> corpus.domains[kept].tolist()
        [0, 1, 1]
    """
    names = [str(n) for n in corpus.domain_names]
    if not isinstance(caps, Mapping):
        raise ValueError(
            f"data.max_train_per_domain must map domain names to counts, e.g. "
            f"{{{names[-1]}: 32}}; got {caps!r}."
        )
    rng = np.random.default_rng(seed)
    domains = corpus.domains[train_idx]
    keep = np.ones(train_idx.size, dtype=bool)
    for name, cap in caps.items():
        if name not in names:
            raise ValueError(
                f"data.max_train_per_domain names {name!r}, not a domain; domains: {names}."
            )
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise ValueError(
                f"data.max_train_per_domain.{name} must be an int >= 1 (training sequences "
                f"kept), got {cap!r}."
            )
        rows = np.flatnonzero(domains == names.index(name))
        if rows.size > cap:
            keep[rng.choice(rows, size=rows.size - cap, replace=False)] = False
    return train_idx[keep]


def _train_subset(path: str, corpus: AnyCorpus, val_idx: np.ndarray, seed: int) -> np.ndarray:
    """The corpus indices of ``data.train_subset``, checked against the corpus and the
    validation split."""
    subset = np.load(str(path), allow_pickle=False)
    if subset.ndim != 1 or subset.size == 0 or not np.issubdtype(subset.dtype, np.integer):
        raise ValueError(
            f"data.train_subset {str(path)!r} must hold a non-empty 1-D array of integer corpus "
            f"indices, got dtype {subset.dtype} and shape {subset.shape}."
        )
    if subset.min() < 0 or subset.max() >= corpus.num_docs:
        raise ValueError(
            f"data.train_subset {str(path)!r} has indices outside 0..{corpus.num_docs - 1} (the "
            "corpus's sequences): was it made for another corpus or data.seq_len?"
        )
    leaked = np.intersect1d(subset, val_idx)
    if leaked.size:
        raise ValueError(
            f"data.train_subset {str(path)!r} holds {leaked.size} validation sequences (e.g. "
            f"{leaked[:3].tolist()}); select from the training split of seed={seed}."
        )
    return subset.astype(np.int64)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def build_sources(cfg: DictConfig, corpus: AnyCorpus, train_idx: np.ndarray) -> list[Source]:
    """The weight sources of the ``reweight`` preset (:func:`recipes.presets.preset_sources`)."""
    return preset_sources(cfg.reweight, corpus, train_idx)


def build_reweighter(
    cfg: DictConfig, corpus: AnyCorpus, train_idx: np.ndarray, train_set: IndexedDataset
) -> Reweighter:
    """The Reweighter of a ``reweight`` preset (``reweight=none``: one without sources)."""
    return Reweighter.from_dataset(
        train_set,
        sources=build_sources(cfg, corpus, train_idx),
        total_steps=int(cfg.steps),
        seed=int(cfg.seed),
        infinite=True,
    )


def make_logger(cfg: DictConfig, out_dir: Path) -> list[Logger]:
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    loggers: list[Logger] = [JsonlLogger(out_dir / "metrics.jsonl")]
    lcfg = cfg.logger
    if lcfg.kind == "csv":
        loggers.append(CSVLogger(out_dir, name="csv", version=""))
    elif lcfg.kind == "wandb":
        os.environ.setdefault("WANDB_SILENT", "true")
        loggers.append(
            WandbLogger(
                project=lcfg.project,
                entity=lcfg.entity,
                name=lcfg.name or f"{cfg.reweight.name}-{out_dir.name}",
                tags=list(lcfg.tags),
                save_dir=str(out_dir),
                offline=not bool(lcfg.online),
                config=OmegaConf.to_container(cfg, resolve=True),
            )
        )
    else:
        raise ValueError(f"logger.kind {lcfg.kind!r} is unknown; valid kinds: wandb, csv.")
    return loggers


# ---------------------------------------------------------------------- the job


def train(cfg: DictConfig) -> dict[str, Any]:
    """Trains one model as configured; returns the summary (also written to summary.json)."""
    start = time.perf_counter()
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(int(cfg.seed), verbose=False)
    torch.set_float32_matmul_precision("high")

    corpus = load_corpus(cfg.data)
    vocab_size = model_vocab_size(cfg, corpus)
    train_idx, val_idx = training_split(cfg, corpus)
    names = list(corpus.domain_names)
    train_domains = corpus.domains[train_idx]
    train_items = sequences(corpus, train_idx, vocab_size)
    if np.unique(train_domains).size < len(names):  # a data.train_subset may leave domains out:
        train_set = IndexedDataset(train_items)  # then train without them
    else:
        train_set = IndexedDataset(train_items, domains=train_domains, domain_names=names)
    val_set = IndexedDataset(
        sequences(corpus, val_idx, vocab_size),
        domains=corpus.domains[val_idx],
        domain_names=names,
    )
    reweighter = build_reweighter(cfg, corpus, train_idx, train_set)
    train_loader = DataLoader(
        train_set,
        batch_size=int(cfg.batch_size),
        sampler=reweighter.sampler,
        num_workers=int(cfg.num_workers),
    )
    val_loader = DataLoader(val_set, batch_size=int(cfg.batch_size), shuffle=False)

    histograms = WeightHistograms(reweighter, int(cfg.logger.get("histogram_every", 0) or 0))
    callbacks: list[pl.Callback] = [
        histograms,
        ReweightCallback(reweighter, log_every_n_steps=int(cfg.log_every)),
    ]
    if cfg.checkpoint:
        from lightning.pytorch.callbacks import ModelCheckpoint

        callbacks.append(ModelCheckpoint(dirpath=out_dir / "checkpoints", save_last=True))
    loggers = make_logger(cfg, out_dir)
    tcfg = cfg.trainer
    trainer = pl.Trainer(
        max_steps=int(cfg.steps),
        accelerator=tcfg.accelerator,
        devices=tcfg.devices,
        num_nodes=int(tcfg.get("num_nodes", 1)),
        strategy=tcfg.strategy,
        precision=tcfg.precision,
        logger=loggers,
        callbacks=callbacks,
        val_check_interval=int(cfg.val_every),
        check_val_every_n_epoch=None,
        log_every_n_steps=int(cfg.log_every),
        enable_checkpointing=bool(cfg.checkpoint),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
    )
    module = LanguageModel(cfg, reweighter, names, vocab_size)
    trainer.fit(module, train_loader, val_loader, ckpt_path=cfg.resume)
    trainer.validate(module, val_loader, verbose=False)

    summary: dict[str, Any] = {
        "reweight": str(cfg.reweight.name),
        "steps": int(trainer.global_step),
        "seconds": time.perf_counter() - start,
    }
    for key, value in trainer.callback_metrics.items():
        if key.startswith("val/"):
            summary[key] = float(value)
    summary.update({f"reweight/{k}": v for k, v in reweighter.metrics().items()})
    if trainer.is_global_zero:
        for logger in loggers:
            logger.finalize("success")
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
        if cfg.dashboard:
            make_dashboard(
                out_dir / "metrics.jsonl",
                out_dir / "dashboard.png",
                weight_samples=histograms.samples(),
                title=f"reweight={cfg.reweight.name} · {summary['steps']} steps",
            )
        print_summary(summary, names)
    return summary


def print_summary(summary: Mapping[str, Any], names: list[str]) -> None:
    """The end-of-run table: validation loss per domain and the main reweighting numbers."""
    rows = [("domain", "val loss", "target share", "realised share")]
    for name in names:
        rows.append(
            (
                name,
                f"{summary.get(f'val/loss/{name}', float('nan')):.4f}",
                f"{summary.get(f'reweight/domain/{name}/target', float('nan')):.3f}",
                f"{summary.get(f'reweight/domain/{name}/realised', float('nan')):.3f}",
            )
        )
    rows.append(("mean", f"{summary.get('val/loss', float('nan')):.4f}", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print(
        f"\nreweight={summary['reweight']}: {summary['steps']} steps in {summary['seconds']:.1f} s"
    )
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


def main() -> None:
    import hydra

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
    def _run(cfg: DictConfig) -> float:
        summary = train(cfg)
        return float(summary.get("val/loss", float("nan")))

    _run()


if __name__ == "__main__":
    main()
