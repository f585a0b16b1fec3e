"""Density-ratio estimation for non-text features (embeddings, metadata vectors).

A probabilistic classifier tells target rows (label 1) from raw rows (label 0). By Bayes' rule
its log-odds is the log density ratio plus the log class ratio,

    log P(t|x)/P(r|x) = log p_t(x)/p_r(x) + log(n_t/n_r),

so ``log p_t(x)/p_r(x) = logit(x) − log(n_t/n_r)``. The classifier is an L2-regularised
logistic regression (full-batch L-BFGS in float64 with torch) on standardised features —
``"linear"`` (x) or ``"quadratic"`` (x and x², exact for Gaussians with diagonal covariances).
A held-out split (stratified, seeded) calibrates the logit by Platt scaling (a·z + c) or a
temperature (a·z) before the prior correction, which then uses the held-out class ratio.
Everything is deterministic given ``seed`` (and the same machine and thread count).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DensityRatioEstimator"]

_FORMAT = "reweight.static.DensityRatioEstimator"
_VERSION = 1
_FEATURES = ("linear", "quadratic")
_CALIBRATIONS = ("platt", "temperature", "none")


def _as_matrix(name: str, x: Any) -> np.ndarray:
    if isinstance(x, (str, os.PathLike)):
        path = Path(x)
        if not path.is_file():
            raise FileNotFoundError(f"{name} file {str(path)!r} does not exist.")
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    array = np.asarray(x)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows × features), got shape {array.shape}.")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"{name} must hold numbers, got dtype {array.dtype}.")
    return array


def _check_finite(name: str, x: np.ndarray) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        raise ValueError(f"{name} has non-finite values (first in row {row}); clean the features.")


def _expand(z: np.ndarray, features: str) -> np.ndarray:
    return np.concatenate([z, z * z], axis=1) if features == "quadratic" else z


def _platt(z: np.ndarray, y: np.ndarray, fit_bias: bool) -> tuple[float, float]:
    """Newton's method for min_{a,c} mean logloss(σ(a z + c), y); c = 0 unless fit_bias."""
    a, c = 1.0, 0.0
    for _ in range(100):
        s = a * z + c
        p = 1.0 / (1.0 + np.exp(-s))
        r = p - y
        w = np.maximum(p * (1 - p), 1e-12)
        if fit_bias:
            grad = np.array([np.mean(r * z), np.mean(r)])
            hess = np.array(
                [[np.mean(w * z * z), np.mean(w * z)], [np.mean(w * z), np.mean(w)]]
            ) + 1e-10 * np.eye(2)
            step = np.linalg.solve(hess, grad)
        else:
            step = np.array([np.mean(r * z) / (np.mean(w * z * z) + 1e-10), 0.0])
        a, c = a - float(step[0]), c - float(step[1])
        if np.abs(step).max() < 1e-10:
            break
    return a, c


class DensityRatioEstimator:
    """Calibrated log density ratios log p_target(x)/p_raw(x) from a probabilistic classifier.

    Args:
        features: ``"linear"`` (logistic regression on x) or ``"quadratic"`` (on x and x²).
        l2: L2 penalty on the coefficients (on standardised features).
        standardize: centre and scale features by their training mean and std.
        calibration: ``"platt"`` (a·z + c), ``"temperature"`` (a·z) or ``"none"``.
        holdout: fraction of each class held out for calibration (0 requires "none").
        max_iter: L-BFGS iterations.
        max_samples: use at most this many rows per class (a seeded random subset).
        seed: seeds the held-out split and subsampling.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> target = rng.normal(1.0, 1.0, size=(2000, 1))
        >>> raw = rng.normal(0.0, 1.0, size=(4000, 1))
        >>> est = DensityRatioEstimator(seed=0).fit(target, raw)
        >>> x = np.array([[-1.0], [0.5], [2.0]])
        >>> truth = x[:, 0] - 0.5  # log N(x; 1, 1) − log N(x; 0, 1)
        >>> bool(np.abs(est.log_ratio(x) - truth).max() < 0.2)
        True
    """

    def __init__(
        self,
        *,
        features: str = "linear",
        l2: float = 1e-4,
        standardize: bool = True,
        calibration: str = "platt",
        holdout: float = 0.2,
        max_iter: int = 500,
        max_samples: int | None = None,
        seed: int = 0,
    ) -> None:
        if features not in _FEATURES:
            raise ValueError(f"unknown features {features!r}; valid: {', '.join(_FEATURES)}.")
        if calibration not in _CALIBRATIONS:
            raise ValueError(
                f"unknown calibration {calibration!r}; valid: {', '.join(_CALIBRATIONS)}."
            )
        if not np.isfinite(l2) or l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {l2!r}.")
        if not 0 <= holdout < 1:
            raise ValueError(f"holdout must lie in [0, 1), got {holdout!r}.")
        if holdout == 0 and calibration != "none":
            raise ValueError(
                f"calibration {calibration!r} needs a held-out split; set holdout > 0 or "
                "calibration='none'."
            )
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"max_iter must be a positive int, got {max_iter!r}.")
        if max_samples is not None and (isinstance(max_samples, bool) or max_samples < 2):
            raise ValueError(f"max_samples must be an int >= 2 or None, got {max_samples!r}.")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}.")
        self.features = features
        self.l2 = float(l2)
        self.standardize = bool(standardize)
        self.calibration = calibration
        self.holdout = float(holdout)
        self.max_iter = max_iter
        self.max_samples = max_samples
        self.seed = int(seed)
        self._params: dict[str, Any] | None = None

    # ----- fitting --------------------------------------------------------------------------

    def _split(self, n: int, rng: np.random.Generator, name: str) -> tuple[np.ndarray, np.ndarray]:
        order = rng.permutation(n)
        if self.max_samples is not None:
            order = order[: self.max_samples]
        n_hold = round(self.holdout * order.size)
        train, hold = np.sort(order[n_hold:]), np.sort(order[:n_hold])
        if train.size < 2 or (self.holdout > 0 and hold.size < 2):
            raise ValueError(
                f"{name} has too few rows ({n}) for a training and a held-out split; give more "
                "rows or lower holdout."
            )
        return train, hold

    def fit(self, target: Any, raw: Any) -> DensityRatioEstimator:
        """Fits the classifier on target rows (label 1) against raw rows (label 0).

        Args:
            target: (n_t, d) array, or the path of a ``.npy`` file.
            raw: (n_r, d) array, or the path of a ``.npy`` file.

        Returns:
            self, fitted.
        """
        import torch

        xt, xr = _as_matrix("target", target), _as_matrix("raw", raw)
        if xt.shape[1] != xr.shape[1]:
            raise ValueError(
                f"target has {xt.shape[1]} features per row but raw has {xr.shape[1]}."
            )
        rng = np.random.default_rng(self.seed)
        t_train, t_hold = self._split(xt.shape[0], rng, "target")
        r_train, r_hold = self._split(xr.shape[0], rng, "raw")
        x_train = np.concatenate([xt[t_train], xr[r_train]]).astype(np.float64)
        y_train = np.concatenate([np.ones(t_train.size), np.zeros(r_train.size)])
        _check_finite("target/raw", x_train)
        if self.standardize:
            mean = x_train.mean(axis=0)
            scale = x_train.std(axis=0)
            scale[scale == 0] = 1.0
        else:
            mean, scale = np.zeros(x_train.shape[1]), np.ones(x_train.shape[1])
        z_train = _expand((x_train - mean) / scale, self.features)
        if self.standardize and self.features == "quadratic":
            # Scale the squared columns too, for a well-conditioned problem.
            sq_mean = z_train[:, mean.size :].mean(axis=0)
            sq_scale = z_train[:, mean.size :].std(axis=0)
            sq_scale[sq_scale == 0] = 1.0
        else:
            sq_mean = np.zeros(mean.size if self.features == "quadratic" else 0)
            sq_scale = np.ones(sq_mean.size)
        if sq_mean.size:
            z_train[:, mean.size :] = (z_train[:, mean.size :] - sq_mean) / sq_scale

        zt = torch.from_numpy(z_train)
        yt = torch.from_numpy(y_train)
        coef = torch.zeros(z_train.shape[1], dtype=torch.float64, requires_grad=True)
        bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
        with torch.no_grad():  # start at the prior log-odds
            bias.fill_(float(np.log(t_train.size / r_train.size)))
        optimizer = torch.optim.LBFGS(
            [coef, bias],
            lr=1.0,
            max_iter=self.max_iter,
            tolerance_grad=1e-10,
            tolerance_change=1e-12,
            history_size=20,
            line_search_fn="strong_wolfe",
        )
        l2 = self.l2

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            logits = zt @ coef + bias
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, yt)
            loss = loss + 0.5 * l2 * (coef * coef).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        params: dict[str, Any] = {
            "mean": mean,
            "scale": scale,
            "sq_mean": sq_mean,
            "sq_scale": sq_scale,
            "coef": coef.detach().numpy().copy(),
            "bias": float(bias.detach()),
            "calib_a": 1.0,
            "calib_c": 0.0,
            "log_prior": float(np.log(t_train.size / r_train.size)),
            "n_target": int(xt.shape[0]),
            "n_raw": int(xr.shape[0]),
            "dim": int(xt.shape[1]),
        }
        self._params = params
        if self.calibration != "none":
            x_hold = np.concatenate([xt[t_hold], xr[r_hold]]).astype(np.float64)
            _check_finite("target/raw", x_hold)
            y_hold = np.concatenate([np.ones(t_hold.size), np.zeros(r_hold.size)])
            a, c = _platt(self._logit(x_hold), y_hold, fit_bias=self.calibration == "platt")
            params.update(calib_a=a, calib_c=c, log_prior=float(np.log(t_hold.size / r_hold.size)))
        return self

    # ----- prediction -----------------------------------------------------------------------

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` (or :meth:`load`) has run."""
        return self._params is not None

    def _require(self) -> dict[str, Any]:
        if self._params is None:
            raise ValueError("the estimator is not fitted; call fit(target, raw) first.")
        return self._params

    def _logit(self, x: np.ndarray) -> np.ndarray:
        p = self._require()
        z = _expand((x - p["mean"]) / p["scale"], self.features)
        if p["sq_mean"].size:
            z[:, p["mean"].size :] = (z[:, p["mean"].size :] - p["sq_mean"]) / p["sq_scale"]
        return np.asarray(z @ p["coef"] + p["bias"], dtype=np.float64)

    def log_ratio(self, x: Any, batch_size: int = 65_536) -> np.ndarray:
        """Calibrated log p_target(x)/p_raw(x) of every row (float64), in batches.

        Args:
            x: (n, d) array, or the path of a ``.npy`` file (memory-mapped).
            batch_size: rows per batch (bounds memory).
        """
        p = self._require()
        matrix = _as_matrix("x", x)
        if matrix.shape[1] != p["dim"]:
            raise ValueError(
                f"x has {matrix.shape[1]} features per row; the model expects {p['dim']}."
            )
        out = np.empty(matrix.shape[0], dtype=np.float64)
        for start in range(0, matrix.shape[0], batch_size):
            rows = np.asarray(matrix[start : start + batch_size], dtype=np.float64)
            _check_finite("x", rows)
            out[start : start + rows.shape[0]] = (
                p["calib_a"] * self._logit(rows) + p["calib_c"] - p["log_prior"]
            )
        return out

    # ----- persistence ----------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        return {
            "features": self.features,
            "l2": self.l2,
            "standardize": self.standardize,
            "calibration": self.calibration,
            "holdout": self.holdout,
            "max_iter": self.max_iter,
            "max_samples": self.max_samples,
            "seed": self.seed,
        }

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Writes the parameters as ``.npy`` arrays and ``density.json`` (no pickle)."""
        p = self._require()
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        for name in ("mean", "scale", "sq_mean", "sq_scale", "coef"):
            np.save(out / f"{name}.npy", p[name], allow_pickle=False)
        scalars = {
            k: p[k] for k in ("bias", "calib_a", "calib_c", "log_prior", "n_target", "n_raw", "dim")
        }
        meta = {"format": _FORMAT, "version": _VERSION, "config": self._config(), **scalars}
        (out / "density.json").write_text(json.dumps(meta, indent=2) + "\n")
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> DensityRatioEstimator:
        """Reads an estimator written by :meth:`save`, validating shapes and values."""
        folder = Path(directory)
        meta_path = folder / "density.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{str(meta_path)!r} does not exist; not a saved estimator.")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != _FORMAT or meta.get("version") != _VERSION:
            raise ValueError(f"{meta_path} is not a version-{_VERSION} {_FORMAT}.")
        est = cls(**meta["config"])
        params: dict[str, Any] = {
            k: meta[k]
            for k in ("bias", "calib_a", "calib_c", "log_prior", "n_target", "n_raw", "dim")
        }
        for name in ("mean", "scale", "sq_mean", "sq_scale", "coef"):
            path = folder / f"{name}.npy"
            if not path.is_file():
                raise FileNotFoundError(f"{str(path)!r} is missing from the saved estimator.")
            params[name] = np.load(path, allow_pickle=False).astype(np.float64)
        dim = params["dim"]
        expected = {
            "mean": dim,
            "scale": dim,
            "sq_mean": dim if est.features == "quadratic" else 0,
            "sq_scale": dim if est.features == "quadratic" else 0,
            "coef": 2 * dim if est.features == "quadratic" else dim,
        }
        for name, size in expected.items():
            if params[name].shape != (size,) or not np.isfinite(params[name]).all():
                raise ValueError(f"{name}.npy in {str(folder)!r} has the wrong shape or values.")
        est._params = params
        return est
