"""Tests for DensityRatioEstimator on Gaussians whose log density ratio is known exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reweight.static import DensityRatioEstimator

DIM = 3
MU_T = np.array([0.8, -0.5, 0.3])
VAR_T = np.array([0.5, 2.0, 1.0])


def _gauss_logpdf(x: np.ndarray, mu: np.ndarray, var: np.ndarray) -> np.ndarray:
    return -0.5 * np.sum(np.log(2 * np.pi * var) + (x - mu) ** 2 / var, axis=1)


def _data(seed: int, var_t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = MU_T + rng.normal(size=(3000, DIM)) * np.sqrt(var_t)
    raw = rng.normal(size=(12_000, DIM))  # 4× more raw rows: the prior correction matters
    test = np.concatenate([rng.normal(size=(2000, DIM)), MU_T + rng.normal(size=(1000, DIM))])
    truth = _gauss_logpdf(test, MU_T, var_t) - _gauss_logpdf(test, np.zeros(DIM), np.ones(DIM))
    return target, raw, test, truth


@pytest.mark.parametrize("calibration", ["platt", "temperature", "none"])
def test_linear_classifier_recovers_the_shifted_gaussian_log_ratio(calibration: str) -> None:
    target, raw, test, truth = _data(0, np.ones(DIM))  # equal covariances: linear log ratio
    est = DensityRatioEstimator(calibration=calibration, seed=0).fit(target, raw)
    pred = est.log_ratio(test)
    assert pred.dtype == np.float64 and pred.shape == truth.shape
    assert np.corrcoef(pred, truth)[0, 1] > 0.995
    assert np.mean(np.abs(pred - truth)) < 0.12
    assert abs(np.mean(pred - truth)) < 0.1  # class-prior corrected: no offset of log 4


def test_quadratic_features_recover_unequal_variances() -> None:
    target, raw, test, truth = _data(1, VAR_T)
    est = DensityRatioEstimator(features="quadratic", seed=0).fit(target, raw)
    pred = est.log_ratio(test)
    assert np.corrcoef(pred, truth)[0, 1] > 0.99
    assert np.median(np.abs(pred - truth)) < 0.15
    linear = DensityRatioEstimator(seed=0).fit(target, raw).log_ratio(test)
    assert np.mean(np.abs(pred - truth)) < 0.5 * np.mean(np.abs(linear - truth))


def test_deterministic_given_seed_and_saved_as_plain_arrays(tmp_path: Path) -> None:
    target, raw, test, _ = _data(2, np.ones(DIM))
    a = DensityRatioEstimator(seed=3).fit(target, raw).log_ratio(test)
    b = DensityRatioEstimator(seed=3).fit(target, raw).log_ratio(test)
    c = DensityRatioEstimator(seed=4).fit(target, raw).log_ratio(test)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    est = DensityRatioEstimator(features="quadratic", seed=3).fit(target, raw)
    folder = est.save(tmp_path / "est")
    assert sorted(p.suffix for p in folder.iterdir()) == [".json"] + [".npy"] * 5
    back = DensityRatioEstimator.load(folder)
    assert np.array_equal(back.log_ratio(test), est.log_ratio(test))


def test_npy_paths_and_memory_mapped_batches(tmp_path: Path) -> None:
    target, raw, test, _ = _data(5, np.ones(DIM))
    for name, array in (("t", target), ("r", raw), ("x", test)):
        np.save(tmp_path / f"{name}.npy", array)
    est = DensityRatioEstimator(seed=0).fit(tmp_path / "t.npy", str(tmp_path / "r.npy"))
    ref = DensityRatioEstimator(seed=0).fit(target, raw)
    np.testing.assert_array_equal(
        est.log_ratio(tmp_path / "x.npy", batch_size=7), ref.log_ratio(test)
    )
    one_d = DensityRatioEstimator(seed=0).fit(target[:, 0], raw[:, 0])
    assert one_d.log_ratio(test[:, :1]).shape == (test.shape[0],)


def test_max_samples_subsamples_each_class() -> None:
    target, raw, test, truth = _data(6, np.ones(DIM))
    est = DensityRatioEstimator(max_samples=2000, seed=0).fit(target, raw)
    pred = est.log_ratio(test)
    assert np.corrcoef(pred, truth)[0, 1] > 0.99
    assert abs(np.mean(pred - truth)) < 0.2  # prior from the balanced subsample, corrected


def test_errors() -> None:
    target, raw, test, _ = _data(7, np.ones(DIM))
    with pytest.raises(ValueError, match="unknown features 'cubic'; valid: linear, quadratic"):
        DensityRatioEstimator(features="cubic")
    with pytest.raises(ValueError, match="unknown calibration 'isotonic'"):
        DensityRatioEstimator(calibration="isotonic")
    with pytest.raises(ValueError, match="needs a held-out split"):
        DensityRatioEstimator(holdout=0.0)
    with pytest.raises(ValueError, match=r"holdout must lie in \[0, 1\)"):
        DensityRatioEstimator(holdout=1.0)
    with pytest.raises(ValueError, match="l2 must be >= 0"):
        DensityRatioEstimator(l2=-1.0)
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        DensityRatioEstimator(seed=-2)
    est = DensityRatioEstimator()
    with pytest.raises(ValueError, match="not fitted"):
        est.log_ratio(test)
    with pytest.raises(ValueError, match="target has 3 features per row but raw has 2"):
        est.fit(target, raw[:, :2])
    bad = target.copy()
    bad[5, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite values"):
        est.fit(bad, raw)
    with pytest.raises(ValueError, match="too few rows"):
        est.fit(target[:2], raw)
    with pytest.raises(ValueError, match="must be a 2-D array"):
        est.fit(np.zeros((2, 2, 2)), raw)
    with pytest.raises(TypeError, match="must hold numbers"):
        est.fit(np.array([["a"]]), raw)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        est.fit("missing.npy", raw)
    est.fit(target, raw)
    with pytest.raises(ValueError, match="x has 2 features per row; the model expects 3"):
        est.log_ratio(test[:, :2])
    with pytest.raises(FileNotFoundError, match="not a saved estimator"):
        DensityRatioEstimator.load("nowhere")
    assert DensityRatioEstimator(holdout=0.0, calibration="none").fit(target, raw).fitted
