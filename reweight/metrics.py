"""Diagnostics: pure functions of weight vectors, and the record of recent global batches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from reweight._checks import check_range

__all__ = ["BatchRecord", "effective_sample_size", "kl_divergence", "weight_summary"]


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's ESS, (Σw)² / Σw², of non-negative weights (0 for an empty or all-zero vector).

    Example:
        >>> effective_sample_size(np.array([1.0, 1.0, 0.0, 0.0]))
        2.0
    """
    w = np.asarray(weights, dtype=np.float64)
    square = float(np.dot(w, w))
    return float(w.sum()) ** 2 / square if square > 0 else 0.0


def kl_divergence(q: np.ndarray, p: np.ndarray) -> float:
    """KL(q‖p) = Σ q log(q/p) of two distributions over the same support, in nats (inf when
    q puts mass where p has none).

    Example:
        >>> round(kl_divergence(np.array([0.5, 0.5]), np.array([0.9, 0.1])), 4)
        0.5108
    """
    q = np.asarray(q, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    q, p = q / q.sum(), p / p.sum()
    support = q > 0
    if np.any(p[support] <= 0):
        return float("inf")
    return float(np.sum(q[support] * np.log(q[support] / p[support])))


def weight_summary(weights: np.ndarray) -> dict[str, float]:
    """ESS fraction, max, min and max/min ratio of a batch's loss weights.

    Example:
        >>> weight_summary(np.array([0.5, 1.5]))["max_min_ratio"]
        3.0
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.size == 0:
        return {}
    low, high = float(w.min()), float(w.max())
    return {
        "ess_fraction": effective_sample_size(w) / w.size,
        "max": high,
        "min": low,
        "max_min_ratio": high / low if low > 0 else float("inf"),
    }


class BatchRecord:
    """What the Reweighter remembers of recent global batches, for metrics: realised domain
    shares and domain losses (moving averages), masked non-finite losses, the last batch's loss
    weights and the age of its draws.

    Args:
        num_domains: K.
        decay: decay of the moving averages, in [0, 1).

    Example:
        >>> record = BatchRecord(2, decay=0.5)
        >>> record.update_domains(np.array([0, 0, 1]), np.array([1.0, 3.0, 2.0]), np.ones(3, bool))
        >>> record.realised.round(3).tolist(), record.domain_loss.tolist()
        ([0.667, 0.333], [2.0, 2.0])
    """

    def __init__(self, num_domains: int, decay: float) -> None:
        check_range(
            "realised_decay",
            decay,
            low=0.0,
            high=1.0,
            high_open=True,
            hint="it is the decay of the moving averages of realised domain shares and losses.",
        )
        self.decay = float(decay)
        self.realised = np.zeros(num_domains)
        self.domain_loss = np.full(num_domains, np.nan)
        self.masked_total = 0
        self.masked_last = 0
        self.last_weights = np.empty(0)
        self.draw_age = float("nan")

    def update_domains(self, domains: np.ndarray, losses: np.ndarray, valid: np.ndarray) -> None:
        """Realised shares over every sample; domain losses over the finite ones."""
        k, decay = self.realised.size, self.decay
        shares = np.bincount(domains, minlength=k) / max(1, domains.size)
        if not self.realised.any():
            self.realised = shares.astype(np.float64)
        else:
            self.realised = decay * self.realised + (1 - decay) * shares
        dom, loss = domains[valid], losses[valid]
        counts = np.bincount(dom, minlength=k)
        means = np.divide(
            np.bincount(dom, weights=loss, minlength=k), counts, out=np.zeros(k), where=counts > 0
        )
        first = (counts > 0) & np.isnan(self.domain_loss)
        again = (counts > 0) & ~first
        self.domain_loss[first] = means[first]
        self.domain_loss[again] = decay * self.domain_loss[again] + (1 - decay) * means[again]

    def observe(self, batch: Any, weights: np.ndarray, draw_steps: np.ndarray | None) -> None:
        """Records a global batch (a :class:`reweight.sources.GlobalBatch`), its loss weights
        and the steps its items were drawn at (None when unmatched)."""
        self.update_domains(batch.domains, batch.losses, batch.valid)
        self.masked_last = int((~batch.valid).sum())
        self.masked_total += self.masked_last
        self.last_weights = weights[batch.valid]
        if draw_steps is not None and draw_steps.size:
            self.draw_age = float(batch.step - int(draw_steps.min()))

    def metrics(
        self, names: Sequence[str], target: np.ndarray, sampled: np.ndarray
    ) -> dict[str, float]:
        """Per-domain target / sampled / realised shares and loss; loss-weight summary; lag."""
        out: dict[str, float] = {
            "lag/draw_age_steps": self.draw_age,
            "guard/masked_losses": float(self.masked_total),
            "guard/masked_last": float(self.masked_last),
        }
        out["domain/kl_sampled_target"] = kl_divergence(sampled, target)
        for d, name in enumerate(names):
            out[f"domain/{name}/target"] = float(target[d])
            out[f"domain/{name}/sampled"] = float(sampled[d])
            out[f"domain/{name}/realised"] = float(self.realised[d])
            out[f"domain/{name}/loss"] = float(self.domain_loss[d])
        for key, value in weight_summary(self.last_weights).items():
            out[f"loss_weight/{key}"] = value
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "realised": torch.from_numpy(self.realised.copy()),
            "domain_loss": torch.from_numpy(self.domain_loss.copy()),
            "masked_total": self.masked_total,
        }

    def parse_state(self, state: Any) -> dict[str, Any]:
        """Validates a :meth:`state_dict` (changes nothing)."""
        if not isinstance(state, Mapping) or set(state) != {
            "realised",
            "domain_loss",
            "masked_total",
        }:
            raise ValueError(
                "Reweighter state: 'record' must hold 'realised', 'domain_loss' and "
                "'masked_total'; the state is corrupt."
            )
        k = self.realised.size
        out: dict[str, Any] = {}
        for key, allow_nan in (("realised", False), ("domain_loss", True)):
            value = state[key]
            if not isinstance(value, (torch.Tensor, np.ndarray)):
                raise ValueError(f"Reweighter state: {key!r} must be a tensor, got {value!r:.60}.")
            array = np.asarray(torch.as_tensor(value).cpu().numpy(), dtype=np.float64)
            ok = np.isfinite(array) | (np.isnan(array) if allow_nan else False)
            if array.shape != (k,) or not ok.all() or np.any(array < 0):
                raise ValueError(
                    f"Reweighter state: {key!r} must hold {k} finite values >= 0 (one per "
                    f"domain), got {array.tolist()!r:.80}; the state is corrupt."
                )
            out[key] = array.copy()
        if np.any(out["realised"] > 1 + 1e-9):
            raise ValueError(
                f"Reweighter state: 'realised' shares {out['realised'].tolist()} must lie in "
                "[0, 1]."
            )
        masked = state["masked_total"]
        if isinstance(masked, bool) or not isinstance(masked, (int, np.integer)) or masked < 0:
            raise ValueError(
                f"Reweighter state: 'masked_total' must be an integer >= 0, got {masked!r}."
            )
        out["masked_total"] = int(masked)
        return out

    def apply_state(self, parsed: Mapping[str, Any]) -> None:
        self.realised = parsed["realised"].copy()
        self.domain_loss = parsed["domain_loss"].copy()
        self.masked_total = parsed["masked_total"]
