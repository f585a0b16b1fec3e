"""The parts the main job is built from: corpus, model, dashboard, comparison."""

from __future__ import annotations

import doctest
import importlib
import json
import pkgutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import recipes.data
from recipes import compare as compare_module
from recipes import dashboard as dashboard_module
from recipes import model as model_module
from recipes.compare import compare, find_runs, main
from recipes.dashboard import make_dashboard, read_history, series, write_history
from recipes.data import (
    DOMAINS,
    ByteLMDataset,
    Corpus,
    build_corpus,
    load_user_corpus,
)
from recipes.data import builtin as builtin_module
from recipes.model import ByteTransformerLM, make_optimizer, per_sample_loss

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SMALL = 2_000  # max_docs_per_domain for quick builds


def assert_valid_png(path: Path, size: tuple[int, int] | None = None) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    if size is not None:
        assert image.shape[:2] == size
    assert float(image[..., :3].std()) > 0.01  # something was drawn


# --- the built-in corpus -----------------------------------------------------------------------


def test_full_build_has_four_domains_and_a_hundredfold_imbalance() -> None:
    corpus = build_corpus(cache=False)
    assert corpus.num_domains >= 4
    assert set(corpus.domain_names) <= set(DOMAINS)
    assert {"code", "encodings", "docs", "docstrings", "builtins"} <= set(corpus.domain_names)
    assert corpus.imbalance >= 100
    assert corpus.tokens.dtype == np.uint8 and corpus.tokens.shape == (corpus.num_docs, 256)
    assert corpus.sizes.sum() == corpus.num_docs
    # Domains are what they say: Python source, help topics, builtin docstrings.
    assert any("def " in text for text in corpus.texts("code")[:50])
    assert any("statement" in text for text in corpus.texts("docs"))
    assert any(text.startswith("class ArithmeticError") for text in corpus.texts("builtins"))


def test_builds_are_deterministic_and_capped(tmp_path: Path) -> None:
    a = build_corpus(cache=False, max_docs_per_domain=SMALL)
    b = build_corpus(cache=False, max_docs_per_domain=SMALL)
    assert a.content_hash == b.content_hash
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.domains, b.domains)
    assert a.sizes.max() <= SMALL
    # The cap keeps the guarantee: the smallest domain is thinned to keep 100:1.
    assert a.num_domains >= 4 and a.imbalance >= 100
    assert a.manifest["thinned_from"]
    c = build_corpus(cache=False, max_docs_per_domain=SMALL, seq_len=128)
    assert c.seq_len == 128 and c.content_hash != a.content_hash


def test_second_build_is_a_cache_hit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = build_corpus(tmp_path, max_docs_per_domain=SMALL)
    assert not first.cache_hit and first.cache_path is not None
    assert {p.name for p in first.cache_path.iterdir()} == {
        "manifest.json",
        "tokens.npy",
        "domains.npy",
    }
    manifest = json.loads((first.cache_path / "manifest.json").read_text())
    assert manifest["content_hash"] == first.content_hash
    assert manifest["sizes"] == first.domain_sizes
    assert manifest["python_version"]

    def no_rebuild(*args: object, **kwargs: object) -> None:
        raise AssertionError("the corpus was rebuilt instead of loaded from the cache")

    monkeypatch.setattr(builtin_module, "domain_texts", no_rebuild)
    second = build_corpus(tmp_path, max_docs_per_domain=SMALL)
    assert second.cache_hit and second.cache_path == first.cache_path
    assert second.content_hash == first.content_hash
    assert np.array_equal(second.tokens, first.tokens)


def test_manifest_mismatch_or_corruption_triggers_a_rebuild(tmp_path: Path) -> None:
    first = build_corpus(tmp_path, max_docs_per_domain=SMALL)
    assert first.cache_path is not None
    manifest_path = first.cache_path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["key"]["python_version"] = "2.7.18"
    manifest_path.write_text(json.dumps(manifest))
    rebuilt = build_corpus(tmp_path, max_docs_per_domain=SMALL)
    assert not rebuilt.cache_hit and rebuilt.content_hash == first.content_hash
    restored = json.loads(manifest_path.read_text())
    assert restored["key"]["python_version"] != "2.7.18"
    assert build_corpus(tmp_path, max_docs_per_domain=SMALL).cache_hit

    # Corrupted tokens: the content hash no longer matches, so the cache is not trusted.
    tokens = np.load(first.cache_path / "tokens.npy")
    tokens[0, 0] ^= 1
    np.save(first.cache_path / "tokens.npy", tokens)
    again = build_corpus(tmp_path, max_docs_per_domain=SMALL)
    assert not again.cache_hit and again.content_hash == first.content_hash


def _fake_stdlib(root: Path, with_tests: bool) -> Path:
    root.mkdir()
    body = "".join(f"def f{i}(x):\n    return x * {i}\n\n" for i in range(12_000))
    (root / "mod_a.py").write_text('"""Module A: adds things."""\n' + body)
    (root / "mod_b.py").write_text("# no docstring\nX = 1\n" * 300)
    (root / "pkg").mkdir()
    for i in range(12):
        doc = f"Submodule {i} of the package, which explains itself at some length. " * 4
        (root / "pkg" / f"sub{i:02d}.py").write_text(f'"""{doc}"""\nY = {i}\n')
    (root / "encodings").mkdir()
    (root / "encodings" / "cp_fake.py").write_text('"""Fake codec."""\n' + "T = (1,)\n" * 2000)
    for hidden in ("idlelib", "site-packages", "__pycache__"):
        (root / hidden).mkdir()
        (root / hidden / "leak.py").write_text("LEAKED_FROM_" + hidden.upper() + " = 1\n" * 500)
    (root / "_sysconfigdata_fake.py").write_text("LEAKED_BUILD_FLAGS = 1\n" * 500)
    if with_tests:
        (root / "test").mkdir()
        (root / "test" / "test_a.py").write_text("def test_a():\n    assert True\n" * 400)
    return root


def test_installs_without_a_test_suite_still_give_four_domains(tmp_path: Path) -> None:
    stdlib = _fake_stdlib(tmp_path / "lib", with_tests=False)
    corpus = build_corpus(cache=False, stdlib=stdlib)
    assert "tests" not in corpus.domain_names
    assert corpus.num_domains >= 4 and corpus.imbalance >= 100
    assert corpus.manifest["sources"]["code"] == 14
    assert corpus.manifest["sources"]["encodings"] == 1
    assert "tests" in corpus.manifest["dropped"]
    everything = "".join(corpus.texts("code") + corpus.texts("encodings"))
    assert "LEAKED" not in everything
    assert any("Module A: adds things." in t for t in corpus.texts("docstrings"))

    with_tests = build_corpus(cache=False, stdlib=_fake_stdlib(tmp_path / "lib2", True))
    assert "tests" in with_tests.domain_names
    assert "def test_a" in with_tests.texts("tests")[0]


def test_an_install_with_too_little_text_gets_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError, match="too little text"):
        build_corpus(cache=False, stdlib=tmp_path / "empty")
    with pytest.raises(ValueError, match="min_ratio"):
        build_corpus(cache=False, max_docs_per_domain=50)
    with pytest.raises(ValueError, match="seq_len"):
        build_corpus(cache=False, seq_len=1)
    with pytest.raises(ValueError, match="max_docs_per_domain"):
        build_corpus(cache=False, max_docs_per_domain=1)


def test_split_validates_every_domain_and_is_deterministic() -> None:
    corpus = build_corpus(cache=False, max_docs_per_domain=SMALL)
    train, val = corpus.split(val_fraction=0.05, seed=3)
    assert not set(train.tolist()) & set(val.tolist())
    assert len(train) + len(val) == corpus.num_docs
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(corpus.num_docs))
    val_sizes = np.bincount(corpus.domains[val], minlength=corpus.num_domains)
    train_sizes = np.bincount(corpus.domains[train], minlength=corpus.num_domains)
    assert (val_sizes >= 1).all() and (train_sizes >= 1).all()
    again = corpus.split(val_fraction=0.05, seed=3)
    assert np.array_equal(again.train, train) and np.array_equal(again.val, val)
    assert not np.array_equal(corpus.split(0.05, seed=4).val, val)
    capped = corpus.split(0.5, seed=0, max_val_per_domain=7)
    assert np.bincount(corpus.domains[capped.val]).max() <= 7
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="val_fraction"):
            corpus.split(bad)


def test_dataset_composes_with_indexed_dataset_and_the_default_collate() -> None:
    corpus = Corpus.from_texts(
        {"a": "abcdefgh" * 8, "b": "0123456789abcdef" * 2, "c": "é" * 16}, seq_len=8
    )
    assert corpus.domain_sizes == {"a": 8, "b": 4, "c": 4}
    assert corpus.texts("c") == ["éééé"] * 4
    assert corpus.texts(1) == corpus.texts("b")
    _, val = corpus.split(0.25, seed=0)
    ds = ByteLMDataset(corpus, val)
    assert np.array_equal(ds.domains, corpus.domains[val])
    indexed = ds.indexed()
    assert indexed.domain_names == ["a", "b", "c"]
    batch = next(iter(DataLoader(indexed, batch_size=len(indexed))))
    assert batch["tokens"].dtype == torch.long and batch["tokens"].shape == (len(val), 8)
    assert batch["index"].tolist() == list(range(len(val)))
    assert batch["domain"].tolist() == corpus.domains[val].tolist()
    assert bytes(batch["tokens"][0].tolist()) == corpus.tokens[val[0]].tobytes()
    with pytest.raises(ValueError, match="indices"):
        ByteLMDataset(corpus, [corpus.num_docs])
    with pytest.raises(ValueError, match="unknown domain 'z'"):
        corpus.texts("z")


def test_corpus_rejects_bad_arrays_and_tiny_domains() -> None:
    with pytest.raises(ValueError, match=r"0\.\.255"):
        Corpus(np.full((2, 4), 300), [0, 0], ["a"])
    with pytest.raises(ValueError, match="domain ids"):
        Corpus(np.zeros((2, 4), dtype=np.uint8), [0, 2], ["a", "b"])
    with pytest.raises(ValueError, match=r"\['b'\] have none"):
        Corpus(np.zeros((2, 4), dtype=np.uint8), [0, 0], ["a", "b"])
    with pytest.raises(ValueError, match="domain 'b' has 5 bytes"):
        Corpus.from_texts({"a": "x" * 64, "b": "short"}, seq_len=4)


def test_corpus_arrays_are_read_only() -> None:
    corpus = Corpus.from_texts({"a": "x" * 64, "b": "y" * 16}, seq_len=8)
    with pytest.raises(ValueError):
        corpus.tokens[0, 0] = 1
    with pytest.raises(ValueError):
        corpus.domains[0] = 1


def test_user_corpus_from_jsonl(tmp_path: Path) -> None:
    rows_a = [{"text": "the quick brown fox " * 5, "domain": "web", "id": i} for i in range(4)]
    rows_b = [
        {"text": "def f():\n    pass\n" * 6, "domain": "code"},
        {"text": "é" * 40, "domain": 7},
    ]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows_a) + "\n")
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows_b) + "\n")
    corpus = load_user_corpus([tmp_path / "a.jsonl", tmp_path / "b.jsonl"], seq_len=16)
    assert corpus.domain_names == ["7", "code", "web"]  # sorted names; ints become names
    web = "\n\n".join(str(r["text"]) for r in rows_a).encode()
    assert corpus.domain_sizes["web"] == len(web) // 16
    assert "".join(corpus.texts("web")).encode() == web[: len(web) // 16 * 16]
    assert corpus.manifest["records"] == {"7": 1, "code": 1, "web": 4}
    assert load_user_corpus(tmp_path / "a.jsonl", domain_field=None, seq_len=16).domain_names == [
        "all"
    ]
    capped = load_user_corpus([tmp_path / "a.jsonl"], seq_len=8, max_docs_per_domain=5)
    assert capped.domain_sizes == {"web": 5}

    (tmp_path / "bad.jsonl").write_text(json.dumps({"text": "x" * 40}) + "\n")
    with pytest.raises(ValueError, match="domain"):
        load_user_corpus([tmp_path / "bad.jsonl"], seq_len=8)
    (tmp_path / "tiny.jsonl").write_text(json.dumps({"text": "abc", "domain": "t"}) + "\n")
    with pytest.raises(ValueError, match="domain 't' has 3 bytes"):
        load_user_corpus([tmp_path / "a.jsonl", tmp_path / "tiny.jsonl"], seq_len=8)


# --- the model ---------------------------------------------------------------------------------


def test_model_shapes_and_per_sample_loss() -> None:
    model = ByteTransformerLM(d_model=32, n_layers=2, n_heads=4, seq_len=64)
    tokens = torch.randint(0, 256, (5, 64), generator=torch.Generator().manual_seed(0))
    assert model(tokens).shape == (5, 64, 256)
    loss = per_sample_loss(model, tokens)
    assert loss.shape == (5,) and torch.isfinite(loss).all()
    # Per sample means independent of the batch: each row alone gives the same loss.
    alone = torch.stack([per_sample_loss(model, tokens[i : i + 1])[0] for i in range(5)])
    torch.testing.assert_close(loss, alone, rtol=1e-5, atol=1e-5)
    assert per_sample_loss(model, tokens.to(torch.uint8)).shape == (5,)
    with pytest.raises(ValueError, match="sequence length 65"):
        model(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match="T >= 2"):
        per_sample_loss(model, torch.zeros(3, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="must divide"):
        ByteTransformerLM(d_model=30, n_heads=4)


def test_model_init_is_deterministic_and_leaves_the_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    a = ByteTransformerLM(d_model=32, n_layers=1, n_heads=2, seq_len=16, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = ByteTransformerLM(d_model=32, n_layers=1, n_heads=2, seq_len=16, seed=5)
    c = ByteTransformerLM(d_model=32, n_layers=1, n_heads=2, seq_len=16, seed=6)
    pairs = list(zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert all(torch.equal(x, y) for x, y in pairs)
    assert not torch.equal(a.embed.weight, c.embed.weight)


def test_loss_decreases_on_a_tiny_batch() -> None:
    corpus = build_corpus(cache=False, max_docs_per_domain=SMALL, seq_len=64)
    tokens = torch.from_numpy(corpus.tokens[corpus.indices("docs")[:16]].astype(np.int64))
    model = ByteTransformerLM(d_model=64, n_layers=2, n_heads=4, seq_len=64)
    optimizer = make_optimizer(model, lr=3e-3)
    losses = []
    for _ in range(40):
        loss = per_sample_loss(model, tokens).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 5.0  # about log(256) at the start
    assert losses[-1] < 0.75 * losses[0]
    assert all(np.isfinite(losses))


# --- the dashboard -----------------------------------------------------------------------------


def _history(names: list[str], steps: int = 200) -> list[dict[str, float]]:
    rows = []
    for step in range(0, steps + 1, 10):
        tau = 1.0 + 4.0 * step / steps
        row = {
            "step": step,
            "train/loss": 5.0 - step / 100,
            "reweight/mixing/tau": tau,
            "reweight/sampler/ess_fraction": 0.5 + step / (4 * steps),
            "reweight/loss_weight/ess_fraction": 0.8,
        }
        for d, name in enumerate(names):
            row[f"reweight/domain/{name}/target"] = 1 / len(names)
            row[f"reweight/domain/{name}/realised"] = (d + 1) / 10
        if step % 50 == 0:
            for d, name in enumerate(names):
                row[f"val/loss/{name}"] = 3.0 - step / 200 + d / 10
            row["val/loss"] = 3.0 - step / 200
        rows.append(row)
    return rows


def test_dashboard_with_every_key(tmp_path: Path) -> None:
    rows = _history(["code", "docs", "builtins"])
    weights = np.random.default_rng(0).gamma(4.0, 0.25, size=512)
    out = make_dashboard(rows, tmp_path / "sub" / "dashboard.png", weight_samples=weights)
    assert out == tmp_path / "sub" / "dashboard.png"
    assert_valid_png(out, size=(900, 1600))
    # A metrics.jsonl path works the same, and tensors are fine as weights.
    write_history(tmp_path / "metrics.jsonl", rows)
    again = make_dashboard(
        tmp_path / "metrics.jsonl",
        tmp_path / "from_file.png",
        weight_samples=torch.from_numpy(weights),
        title="from file",
    )
    assert_valid_png(again)


@pytest.mark.parametrize(
    "rows",
    [
        [],
        [{"step": s, "train/loss": 3.0 - s / 100} for s in range(50)],  # reweight=none
        [{"step": 0, "val/loss/code": 2.0}, {"step": 10, "val/loss/code": float("nan")}],
        [{"reweight/domain/a/realised": 0.5}, {"reweight/domain/a/realised": 0.4}],  # no steps
    ],
    ids=["empty", "plain-run", "nan-values", "no-step-key"],
)
def test_dashboard_degrades_gracefully(tmp_path: Path, rows: list[dict[str, float]]) -> None:
    assert_valid_png(make_dashboard(rows, tmp_path / "d.png"), size=(900, 1600))


def test_dashboard_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="history"):
        make_dashboard({"step": 1}, tmp_path / "d.png")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="history\\[1\\]"):
        make_dashboard([{"step": 1}, 3], tmp_path / "d.png")  # type: ignore[list-item]
    with pytest.raises(TypeError, match="weight_samples"):
        make_dashboard([], tmp_path / "d.png", weight_samples=["a", object()])


def test_history_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    write_history(path, [{"step": np.int64(1), "a": np.float32(0.5), "b": torch.tensor(2.0)}])
    write_history(path, [{"step": 2, "a": float("inf"), "tag": "x"}], append=True)
    rows = read_history(path)
    assert rows == [{"step": 1, "a": 0.5, "b": 2.0}, {"step": 2, "a": None, "tag": "x"}]
    steps, values = series(rows, "a")
    assert steps.tolist() == [1.0] and values.tolist() == [0.5]
    path.write_text('{"step": 1}\nnot json\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2"):
        read_history(path)


# --- the comparison ----------------------------------------------------------------------------


def _fake_run(root: Path, name: str, preset: str, shift: float, curves: bool) -> Path:
    run = root / name
    run.mkdir(parents=True)
    summary = {
        "reweight": preset,
        "val/loss": 2.0 - shift,
        "val/loss/code": 1.5 - shift / 2,
        "val/loss/builtins": 3.0 - shift * 2,
        "steps": 300,
        "seconds": 90.5,
    }
    (run / "summary.json").write_text(json.dumps(summary))
    if curves:
        write_history(
            run / "metrics.jsonl",
            [{"step": s, "val/loss": 4.0 - s / 100 - shift} for s in range(0, 301, 50)],
        )
    return run


def test_compare_two_runs_writes_table_and_plot(tmp_path: Path) -> None:
    plain = _fake_run(tmp_path, "a", "none", 0.0, curves=True)
    full = _fake_run(tmp_path, "b", "full", 0.2, curves=False)
    result = compare([plain, full], tmp_path / "out")
    assert result["domains"] == ["code", "builtins"]
    assert [r["label"] for r in result["runs"]] == ["none", "full"]
    full_row = result["runs"][1]
    assert full_row["per_domain"] == {"code": 1.4, "builtins": 2.6}
    assert full_row["worst"] == 2.6 and full_row["domain_mean"] == pytest.approx(2.0)
    table = result["markdown"].read_text()
    assert "| `full` | **1.8000** |" in table
    assert "relative to `none`" in table and "-13.3%" in table  # builtins: 2.6 vs 3.0
    assert_valid_png(result["png"])


def test_compare_reads_a_multirun_directory_in_natural_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "multirun" / "2026-11-23" / "12-00-00"
    for i, preset in enumerate(["none", "mixing", "dynamic"] + ["full"] * 8):
        _fake_run(sweep, f"{i}-{preset}", preset, 0.01 * i, curves=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    runs = find_runs([sweep])
    assert [r.name for r in runs][:3] == ["0-none", "1-mixing", "2-dynamic"]
    assert runs[-1].name == "10-full"
    assert main([str(sweep)]) == 0
    printed = capsys.readouterr().out
    assert "`full (10-full)`" in printed  # repeated presets are told apart by directory
    assert (sweep / "comparison.md").is_file()
    assert_valid_png(sweep / "comparison.png")


def test_compare_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no summary\.json"):
        compare([tmp_path / "empty"])
    assert main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "summary.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        compare([broken])


# --- the examples in the docstrings ------------------------------------------------------------


# The package and every module in it (a new module is picked up without editing this list).
DATA_MODULES = [
    recipes.data,
    *(
        importlib.import_module(f"recipes.data.{info.name}")
        for info in pkgutil.iter_modules(recipes.data.__path__)
    ),
]


@pytest.mark.parametrize(
    "module",
    [*DATA_MODULES, model_module, dashboard_module, compare_module],
    ids=lambda m: m.__name__,
)
def test_docstring_examples_run(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.attempted > 0
    assert result.failed == 0
