"""End-to-end tests of ``python -m reweight.static`` (fit, weights, resample, kl, density)."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reweight.static import DSIRModel, fit
from reweight.static.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]
TOPIC_A = ["protein", "cell", "gene", "enzyme", "membrane", "receptor", "dna", "the", "of", "and"]
TOPIC_B = ["league", "goal", "striker", "referee", "season", "match", "coach", "the", "of", "and"]


def _docs(n: int, words: list[str], seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(words, k=rng.randint(10, 40))) for _ in range(n)]


@pytest.fixture
def corpus(tmp_path: Path) -> dict[str, Path]:
    raw = _docs(150, TOPIC_A, 1) + _docs(450, TOPIC_B, 2)
    random.Random(3).shuffle(raw)
    raw_path = tmp_path / "raw.jsonl"
    raw_path.write_text("".join(json.dumps({"id": i, "text": d}) + "\n" for i, d in enumerate(raw)))
    target_path = tmp_path / "target.jsonl"
    target_path.write_text("".join(json.dumps({"body": d}) + "\n" for d in _docs(100, TOPIC_A, 4)))
    return {"raw": raw_path, "target": target_path, "dir": tmp_path}


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_fit_weights_resample_kl(
    corpus: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    d, raw, target = corpus["dir"], str(corpus["raw"]), str(corpus["target"])
    code, out, err = _run(
        ["fit", "--raw", raw, "--target", target, "--target-text-field", "body",
         "--out", str(d / "model"), "--target-smoothing", "1", "--workers", "1"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "fitted on 600 raw and 100 target documents" in out
    model = DSIRModel.load(d / "model")
    assert model.target_smoothing == 1.0

    code, out, err = _run(
        ["weights", "--model", str(d / "model"), "--raw", raw, "--out", str(d / "w.npy"),
         "--workers", "2"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith("wrote 600 log weights to")
    logw = np.load(d / "w.npy")
    assert np.array_equal(logw, model.log_importance_weights(corpus["raw"]))

    code, out, err = _run(
        ["resample", "--weights", str(d / "w.npy"), "--raw", raw, "-k", "150", "--seed", "5",
         "--out", str(d / "sel.jsonl"), "--indices-out", str(d / "idx.npy"), "--no-progress"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "selected 150 of 600 documents (Gumbel top-k, seed 5)" in out
    assert err == ""  # no progress bar when asked
    idx = np.load(d / "idx.npy")
    raw_lines = corpus["raw"].read_text().splitlines()
    assert (d / "sel.jsonl").read_text().splitlines() == [raw_lines[i] for i in idx]
    selected_text = [
        json.loads(line)["text"] for line in (d / "sel.jsonl").read_text().splitlines()
    ]
    on_topic = np.mean([any(w in s.split() for w in TOPIC_A[:7]) for s in selected_text])
    assert on_topic > 0.95

    code, out, err = _run(
        ["kl", "--model", str(d / "model"), "--selected", str(d / "sel.jsonl"), "--json"], capsys
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["kl_reduction"] > 0.3
    assert report["kl_reduction"] == pytest.approx(
        report["kl_target_raw"] - report["kl_target_selected"]
    )
    assert report["selected_docs"] == 150

    code, out, err = _run(
        ["kl", "--target", str(d / "sel.jsonl"), "--raw", raw, "--selected", str(d / "sel.jsonl")],
        capsys,
    )
    assert code == 0, err
    assert "KL reduction" in out and "KL(target ‖ selected)" in out

    code, out, err = _run(
        ["resample", "--weights", str(d / "w.npy"), "--raw", raw, "-k", "3", "--top-k",
         "--out", str(d / "top.jsonl")],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    top = np.sort(np.argsort(-logw, kind="stable")[:3])
    assert (d / "top.jsonl").read_text().splitlines() == [raw_lines[i] for i in top]


def test_density_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "t.npy", rng.normal(1.0, 1.0, size=(500, 2)))
    np.save(tmp_path / "r.npy", rng.normal(0.0, 1.0, size=(1500, 2)))
    code, _out, err = _run(
        ["density", "--target", str(tmp_path / "t.npy"), "--raw", str(tmp_path / "r.npy"),
         "--out", str(tmp_path / "lr.npy"), "--model-out", str(tmp_path / "est")],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    ratios = np.load(tmp_path / "lr.npy")
    assert ratios.shape == (1500,)
    raw = np.load(tmp_path / "r.npy")
    truth = raw.sum(axis=1) - 1.0  # log N(x; 1, I) − log N(x; 0, I) in 2-D
    assert np.corrcoef(ratios, truth)[0, 1] > 0.98
    assert (tmp_path / "est" / "density.json").is_file()


def _error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code, _, err = _run(argv, capsys)
    assert "Traceback" not in err
    return code, err


def test_clean_errors(corpus: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    d, raw, target = corpus["dir"], str(corpus["raw"]), str(corpus["target"])
    out = str(d / "m")
    # The target's text lives in "body": the missing field is named with file, line and keys.
    code, err = _error(["fit", "--raw", raw, "--target", target, "--out", out], capsys)
    assert code == 2
    assert f"error: {target}:1: missing field(s) ['text']; the record has keys ['body']" in err

    bad = d / "bad.jsonl"
    bad.write_text('{"text": "ok fine"}\n{"text": "broken\n{"text": "good too"}\n')
    code, err = _error(["fit", "--raw", str(bad), "--target", raw, "--out", out], capsys)
    assert code == 2 and f"{bad}:2: invalid JSON" in err and "--skip-bad-lines" in err
    code, _, err = _run(
        ["fit", "--raw", str(bad), "--target", raw, "--out", out, "--skip-bad-lines",
         "--workers", "1", "--no-progress"],
        capsys,
    )  # fmt: skip
    assert code == 0 and f"warning: skipped 1 bad line(s); first: {bad}:2" in err

    empty = d / "empty.jsonl"
    empty.write_text("")
    code, err = _error(["fit", "--raw", raw, "--target", str(empty), "--out", out], capsys)
    assert code == 2 and "has no documents" in err

    code, err = _error(
        ["fit", "--raw", str(d / "nope.jsonl"), "--target", raw, "--out", out], capsys
    )
    assert code == 2 and "nope.jsonl' does not exist" in err
    code, err = _error(["fit", "--raw", str(d / "raw.csv"), "--target", raw, "--out", out], capsys)
    assert code == 2 and "cannot tell the format" in err

    code, err = _error(
        ["weights", "--model", str(d / "none"), "--raw", raw, "--out", "w.npy"], capsys
    )
    assert code == 2 and "model directory" in err

    np.save(d / "w.npy", np.zeros(10))
    code, err = _error(
        ["resample", "--weights", str(d / "w.npy"), "--raw", raw, "-k", "11", "--out", out], capsys
    )
    assert code == 2 and "k must lie in [1, 10]" in err
    code, err = _error(
        ["resample", "--weights", str(d / "w.npy"), "--raw", raw, "-k", "2", "--top-k",
         "--out", str(d / "s.jsonl")],
        capsys,
    )  # fmt: skip
    assert code == 2 and "the input has 600 documents but the weights cover 10" in err
    assert not (d / "s.jsonl").exists()
    code, err = _error(["kl", "--selected", raw], capsys)
    assert code == 2 and "give --model, or both --target and --raw" in err


def test_messy_files_fail_naming_the_file_and_leave_no_output(
    corpus: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    import gzip

    d, raw, target = corpus["dir"], corpus["raw"], str(corpus["target"])
    model = str(d / "model")
    assert main(["fit", "--raw", str(raw), "--target", target, "--target-text-field", "body",
                 "--out", model, "--workers", "1", "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    data = gzip.compress(raw.read_bytes())
    cut = d / "cut.jsonl.gz"
    cut.write_bytes(data[: len(data) // 2])
    empty = d / "empty.jsonl"
    empty.write_text("\n\n")
    cases = [(cut, "is truncated"), (empty, "has no documents")]
    if importlib.util.find_spec("pyarrow") is not None:
        broken = d / "broken.parquet"
        broken.write_bytes(b"not parquet at all" * 30)
        cases.append((broken, "cannot be read as Parquet"))
    for path, what in cases:
        out = d / "w.npy"
        code, err = _error(
            ["weights", "--model", model, "--raw", str(path), "--out", str(out),
             "--workers", "1", "--no-progress"],
            capsys,
        )  # fmt: skip
        assert code == 2 and str(path) in err and what in err, err
        assert "Traceback" not in err
        assert not out.exists() and not list(d.glob(".w.npy*")), path  # nothing left behind
    code, err = _error(
        ["fit", "--raw", str(cut), "--target", target, "--target-text-field", "body",
         "--out", str(d / "m2"), "--workers", "1", "--no-progress"],
        capsys,
    )  # fmt: skip
    assert code == 2 and f"{str(cut)!r} is truncated" in err


def test_help_for_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    for command, option in (
        ("fit", "--target-smoothing"),
        ("weights", "--model"),
        ("resample", "--top-k"),
        ("kl", "--selected"),
        ("density", "--calibration"),
    ):
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0
        assert option in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2


@pytest.mark.slow  # subprocesses each import torch (through reweight)
def test_module_entry_point_in_a_subprocess(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    good = tmp_path / "d.txt"
    good.write_text("alpha beta\ngamma delta\n")
    proc = subprocess.run(
        [sys.executable, "-m", "reweight.static", "fit", "--raw", str(good), "--target",
         str(tmp_path / "missing.txt"), "--out", str(tmp_path / "m")],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "missing.txt' does not exist" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "reweight.static", "fit", "--raw", str(good), "--target",
         str(good), "--out", str(tmp_path / "m"), "--workers", "2", "--no-progress"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert fit(good, good).raw_counts.tolist() == DSIRModel.load(tmp_path / "m").raw_counts.tolist()


def test_min_tokens_weights_then_resample(
    corpus: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    d, raw, target = corpus["dir"], str(corpus["raw"]), str(corpus["target"])
    model_dir = str(d / "model")
    assert main(["fit", "--raw", raw, "--target", target, "--target-text-field", "body",
                 "--out", model_dir, "--workers", "1", "--no-progress"]) == 0  # fmt: skip
    code, out, err = _run(
        ["weights", "--model", model_dir, "--raw", raw, "--out", str(d / "w.npy"),
         "--min-tokens", "30", "--workers", "1", "--no-progress"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    logw = np.load(d / "w.npy")
    texts = [json.loads(line)["text"] for line in corpus["raw"].read_text().splitlines()]
    short = np.array([len(t.split()) < 30 for t in texts])  # these documents are words only
    assert np.array_equal(np.isinf(logw), short) and short.any()
    assert f"dropped {int(short.sum())} of 600 documents with fewer than 30 word tokens" in out
    code, out, err = _run(
        ["resample", "--weights", str(d / "w.npy"), "--raw", raw, "-k", "50",
         "--out", str(d / "sel.jsonl"), "--indices-out", str(d / "idx.npy"), "--no-progress"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert not short[np.load(d / "idx.npy")].any()


def test_readme_commands_never_select_empty_or_one_word_documents(
    corpus: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # The README's commands as written (no --min-tokens) on a raw file with planted junk:
    # empty-ish, one- and two-word documents get log weight ~0, above most real documents.
    d, target = corpus["dir"], str(corpus["target"])
    rows = [json.loads(line) for line in corpus["raw"].read_text().splitlines()]
    junk = ["", " ", "ok", "Hello!", "--", "protein", "thanks :)", "cell gene", "…"] * 4
    rng = random.Random(5)
    for text in junk:
        rows.insert(rng.randrange(len(rows) + 1), {"text": text, "junk": True})
    raw = d / "messy.jsonl"
    raw.write_text("".join(json.dumps(r) + "\n" for r in rows))
    is_junk = np.array([bool(r.get("junk")) for r in rows])
    model, logw, sel = str(d / "model"), str(d / "w.npy"), str(d / "sel.jsonl")
    assert main(["fit", "--raw", str(raw), "--target", target, "--target-text-field", "body",
                 "--out", model, "--no-progress"]) == 0  # fmt: skip
    code, out, err = _run(["weights", "--model", model, "--raw", str(raw), "--out", logw,
                           "--no-progress"], capsys)  # fmt: skip
    assert code == 0, err
    assert f"dropped {is_junk.sum()} of {len(rows)} documents with fewer than 3 word tokens" in out
    code, out, err = _run(["resample", "--weights", logw, "--raw", str(raw), "-k", "400",
                           "--out", sel, "--indices-out", str(d / "idx.npy"), "--no-progress"],
                          capsys)  # fmt: skip
    assert code == 0, err
    assert f"{is_junk.sum()} with log weight -inf never selected" in out
    assert not is_junk[np.load(d / "idx.npy")].any()
    # --min-tokens 0 restores the old behaviour: the junk is selected.
    assert main(["weights", "--model", model, "--raw", str(raw), "--out", logw,
                 "--min-tokens", "0", "--no-progress"]) == 0  # fmt: skip
    assert "min-tokens filter: off" in capsys.readouterr().out
    assert main(["resample", "--weights", logw, "--raw", str(raw), "-k", "400", "--out", sel,
                 "--indices-out", str(d / "idx.npy"), "--no-progress"]) == 0  # fmt: skip
    assert is_junk[np.load(d / "idx.npy")].sum() > is_junk.sum() // 2
