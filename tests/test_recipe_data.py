"""The main job on the user's data: data=hf (a saved Hugging Face dataset) and data=tokens
(packed token files): it trains, the domains come through by name, validation is disjoint from
training, every preset that makes sense builds, and bad input is a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from recipes import train as recipe
from recipes.data import Corpus, TokenCorpus, load_hf_corpus
from reweight import IndexedDataset
from tests.test_recipe import PRESETS, _compose

TINY = [
    "steps=4",
    "batch_size=4",
    "val_every=2",
    "log_every=2",
    "warmup_steps=1",
    "model.d_model=16",
    "model.n_layers=1",
    "model.n_heads=2",
    "data.max_val_per_domain=3",
    "logger=csv",
    "checkpoint=false",
    "dashboard=false",
]
WEB, CODE = 1200, 700  # tokens per domain file


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def _rows() -> dict[str, list[str]]:
    web = [f"the quick brown fox {i} jumps over the lazy dog. " * 3 for i in range(12)]
    code = [f"def f{i}(x):\n    return x * {i}\n" * 3 for i in range(8)]
    return {"text": web + code, "domain": ["web"] * len(web) + ["code"] * len(code)}


@pytest.fixture
def saved_dataset(tmp_path: Path) -> Path:
    path = tmp_path / "dataset"
    Dataset.from_dict(_rows()).save_to_disk(str(path))
    return path


@pytest.fixture
def token_dir(tmp_path: Path) -> Path:
    root = tmp_path / "tokens"
    root.mkdir()
    rng = np.random.default_rng(0)
    rng.integers(0, 300, WEB).astype(np.uint16).tofile(root / "web.bin")
    rng.integers(0, 280, CODE).astype(np.uint16).tofile(root / "code.bin")
    return root


def _hf(path: Path, *extra: str) -> list[str]:
    return ["data=hf", f"data.path={path}", "data.seq_len=32", *extra]


def _tokens(root: Path, *extra: str) -> list[str]:
    files = f"{{web: {root / 'web.bin'}, code: {root / 'code.bin'}}}"
    return ["data=tokens", f"data.files={files}", "data.block_size=16", *extra]


def _trains(overrides: list[str], out: Path) -> dict[str, float]:
    summary = recipe.train(_compose([*overrides, *TINY], out))
    assert summary["steps"] == 4
    assert {"val/loss/web", "val/loss/code"} <= set(summary)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("reweight/domain/code/realised" in row for row in rows)
    return summary


def _disjoint(train_idx: np.ndarray, val_idx: np.ndarray) -> None:
    assert train_idx.size and val_idx.size
    assert np.intersect1d(train_idx, val_idx).size == 0


# --- data=hf -----------------------------------------------------------------------------------


def test_hf_trains_on_a_saved_dataset(saved_dataset: Path, tmp_path: Path) -> None:
    _trains(_hf(saved_dataset), tmp_path / "run")
    cfg = _compose(_hf(saved_dataset, "data.max_val_per_domain=3"))
    corpus = recipe.load_corpus(cfg.data)
    assert isinstance(corpus, Corpus) and corpus.domain_names == ["code", "web"]
    assert corpus.manifest["records"] == {"code": 8, "web": 12}
    _disjoint(*recipe.training_split(cfg, corpus))
    assert recipe.model_vocab_size(cfg, corpus) == 256


def test_hf_dataset_dict_splits_and_class_labels(tmp_path: Path) -> None:
    rows = _rows()
    web = Dataset.from_dict({"text": rows["text"][:12]})
    code = Dataset.from_dict({"text": rows["text"][12:]})
    DatasetDict(web=web, code=code).save_to_disk(str(tmp_path / "by_split"))
    corpus = load_hf_corpus(tmp_path / "by_split", seq_len=32)  # every split a domain
    assert corpus.domain_names == ["code", "web"]

    features = Features({"text": Value("string"), "domain": ClassLabel(names=["web", "code"])})
    labelled = {"text": rows["text"], "domain": [0] * 12 + [1] * 8}
    train = Dataset.from_dict(labelled, features=features)
    DatasetDict(train=train, test=train).save_to_disk(str(tmp_path / "splits"))
    corpus = load_hf_corpus(tmp_path / "splits", split="train", seq_len=32)
    assert (
        corpus.domain_sizes
        == load_hf_corpus(tmp_path / "splits", split="test", seq_len=32).domain_sizes
    )
    assert corpus.domain_names == ["code", "web"]  # label names, sorted as for every format
    with pytest.raises(ValueError, match=r"splits \['train', 'test'\] and a domain column"):
        load_hf_corpus(tmp_path / "splits", seq_len=32)
    with pytest.raises(ValueError, match=r"no split 'valid'; its splits are \['train', 'test'\]"):
        load_hf_corpus(tmp_path / "splits", split="valid", seq_len=32)
    one = load_hf_corpus(tmp_path / "splits", split="train", domain_column=None, seq_len=32)
    assert one.domain_names == ["all"]


def test_hf_bad_input_is_a_clear_error(saved_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"data\.path="):
        recipe.load_corpus(_compose(["data=hf"]).data)
    with pytest.raises(FileNotFoundError, match=r"not a directory"):
        load_hf_corpus(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"not a saved dataset.*save_to_disk"):
        load_hf_corpus(tmp_path / "empty")
    with pytest.raises(
        ValueError, match=r"no text column 'body'; its columns are \['text', 'domain'\]"
    ):
        load_hf_corpus(saved_dataset, text_column="body")
    with pytest.raises(ValueError, match=r"no domain column 'source'; its columns are"):
        load_hf_corpus(saved_dataset, domain_column="source")
    with pytest.raises(ValueError, match=r"not a DatasetDict.*drop split='train'"):
        load_hf_corpus(saved_dataset, split="train")
    Dataset.from_dict({"input_ids": [[1, 2, 3]] * 4}).save_to_disk(str(tmp_path / "ids"))
    with pytest.raises(ValueError, match=r"'input_ids'.*data=tokens"):
        load_hf_corpus(tmp_path / "ids", domain_column=None)
    Dataset.from_dict({"text": [1, 2], "domain": ["a", "b"]}).save_to_disk(str(tmp_path / "ints"))
    with pytest.raises(TypeError, match=r"text column 'text' holds .*int64.*not strings"):
        load_hf_corpus(tmp_path / "ints")
    cfg = _compose(_hf(saved_dataset, "model.vocab_size=100"))
    with pytest.raises(ValueError, match=r"model\.vocab_size=100 is below 256"):
        recipe.model_vocab_size(cfg, recipe.load_corpus(cfg.data))


# --- data=tokens -------------------------------------------------------------------------------


def test_tokens_train_with_validation_at_the_end_of_each_domain(
    token_dir: Path, tmp_path: Path
) -> None:
    _trains(_tokens(token_dir), tmp_path / "run")
    cfg = _compose(_tokens(token_dir, "data.max_val_per_domain=3", "data.val_fraction=0.1"))
    corpus = recipe.load_corpus(cfg.data)
    assert isinstance(corpus, TokenCorpus) and corpus.domain_names == ["web", "code"]
    assert corpus.domain_sizes == {"web": (WEB - 1) // 16, "code": (CODE - 1) // 16}
    train_idx, val_idx = recipe.training_split(cfg, corpus)
    _disjoint(train_idx, val_idx)
    for d in range(2):  # the last blocks of each domain validate, the rest train
        train_d = train_idx[corpus.domains[train_idx] == d]
        val_d = val_idx[corpus.domains[val_idx] == d]
        assert val_d.size == 3 and train_d.max() + 1 == val_d.min()
        assert val_d.max() == np.flatnonzero(corpus.domains == d).max()
    # The vocabulary is found from the files; a block with a larger id is a clear error.
    high = max(
        int(np.fromfile(token_dir / name, dtype=np.uint16).max())
        for name in ("web.bin", "code.bin")
    )
    assert recipe.model_vocab_size(cfg, corpus) == high + 1
    assert (
        recipe.model_vocab_size(_compose(_tokens(token_dir, "model.vocab_size=512")), corpus) == 512
    )
    small = corpus.dataset(np.arange(corpus.num_docs), vocab_size=100)
    with pytest.raises(
        ValueError, match=r"block 0 \(domain 'web'\) holds token id .*model\.vocab_size"
    ):
        [small[i] for i in range(len(small))]


def test_tokens_from_a_directory_and_npy(token_dir: Path) -> None:
    np.save(token_dir / "math.npy", np.arange(64, dtype=np.uint32))
    cfg = _compose(["data=tokens", f"data.files={token_dir}", "data.block_size=16"])
    corpus = recipe.load_corpus(cfg.data)
    assert corpus.domain_names == ["code", "math", "web"]  # file stems, sorted
    assert corpus.domain_sizes["math"] == 3


def test_tokens_static_needs_precomputed_log_weights(token_dir: Path, tmp_path: Path) -> None:
    cfg = _compose(_tokens(token_dir, "reweight=static"))
    corpus = recipe.load_corpus(cfg.data)
    train_idx, _ = recipe.training_split(cfg, corpus)
    with pytest.raises(ValueError, match=r"reweight\.sources\.static\.log_weights=logw\.npy"):
        recipe.build_sources(cfg, corpus, train_idx)
    logw = tmp_path / "logw.npy"
    np.save(logw, np.linspace(-1.0, 1.0, corpus.num_docs))
    with_weights = f"reweight.sources.static.log_weights={logw}"
    _trains(_tokens(token_dir, "reweight=full", with_weights), tmp_path / "full")
    np.save(tmp_path / "short.npy", np.zeros(5))
    short = f"reweight.sources.static.log_weights={tmp_path / 'short.npy'}"
    cfg = _compose(_tokens(token_dir, "reweight=static", short))
    with pytest.raises(
        ValueError, match=f"holds 5 log weights; the data has {corpus.num_docs} items"
    ):
        recipe.build_sources(cfg, corpus, train_idx)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_builds_on_both(
    preset: str, saved_dataset: Path, token_dir: Path, tmp_path: Path
) -> None:
    logw = tmp_path / "logw.npy"
    for data in (_hf(saved_dataset), _tokens(token_dir)):
        extra = [f"reweight={preset}"]
        if preset in ("static", "full"):
            extra.append("reweight.sources.static.target_domain=web")
        cfg = _compose([*data, *extra])
        corpus = recipe.load_corpus(cfg.data)
        if isinstance(corpus, TokenCorpus) and preset in ("static", "full"):
            np.save(logw, np.zeros(corpus.num_docs))
            cfg = _compose([*data, *extra, f"reweight.sources.static.log_weights={logw}"])
        train_idx, _ = recipe.training_split(cfg, corpus)
        items = recipe.sequences(corpus, train_idx, recipe.model_vocab_size(cfg, corpus))
        train_set = IndexedDataset(
            items, domains=corpus.domains[train_idx], domain_names=corpus.domain_names
        )
        rw = recipe.build_reweighter(cfg, corpus, train_idx, train_set)
        assert [s.name for s in rw.sources] == list(cfg.reweight.sources or {})
        assert rw.sampler.num_items == train_idx.size


def test_tokens_bad_input_is_a_clear_error(token_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"data\.files="):
        recipe.load_corpus(_compose(["data=tokens"]).data)
    missing = ["data=tokens", f"data.files={{web: {tmp_path / 'nope.bin'}}}"]
    with pytest.raises(FileNotFoundError, match=r"nope\.bin.*domain 'web' does not exist"):
        recipe.load_corpus(_compose(missing).data)
    with pytest.raises(ValueError, match=r"unknown token dtype 'uint8'.*uint16"):
        recipe.load_corpus(_compose(_tokens(token_dir, "data.dtype=uint8")).data)
    with pytest.raises(ValueError, match=r"domain 'code' has 700 tokens, fewer than one block"):
        recipe.load_corpus(_compose(_tokens(token_dir, "data.block_size=1000")).data)
    cfg = _compose(_tokens(token_dir, "data.block_size=500"))  # code: one block of 500
    with pytest.raises(ValueError, match=r"\['code'\] have a single block.*data\.block_size"):
        recipe.training_split(cfg, recipe.load_corpus(cfg.data))
    with pytest.raises(ValueError, match=r"data\.seq_len \(64\) must equal data\.block_size"):
        recipe.load_corpus(_compose(_tokens(token_dir, "data.seq_len=64")).data)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no \.bin or \.npy token files"):
        recipe.load_corpus(_compose(["data=tokens", f"data.files={tmp_path / 'empty'}"]).data)
    (-np.arange(40, dtype=np.int32)).tofile(tmp_path / "neg.bin")
    cfg = _compose(
        [
            "data=tokens",
            f"data.files={{neg: {tmp_path / 'neg.bin'}}}",
            "data.dtype=int32",
            "data.block_size=8",
        ]
    )
    with pytest.raises(ValueError, match=r"negative token id -\d+.*data\.dtype"):
        recipe.model_vocab_size(cfg, recipe.load_corpus(cfg.data))
