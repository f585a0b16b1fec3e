"""Reweighter: owns the weight sources and the sampler; turns per-sample losses into one loss.

No Lightning import: a plain PyTorch loop uses it directly (see README).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from reweight import distributed
from reweight.data import require_index
from reweight.metrics import weight_summary
from reweight.sampler import ReweightSampler
from reweight.weights import static_factor

__all__ = ["DomainWeights", "Reweighter", "StaticWeights"]

Mode = Literal["sample", "weight"]
_MODES = ("sample", "weight")
_STATE_VERSION = 1


def _check_mode(source: str, mode: str) -> None:
    if mode not in _MODES:
        raise ValueError(f"{source} mode {mode!r} is unknown; valid modes: {', '.join(_MODES)}.")


@dataclass(frozen=True)
class StaticWeights:
    """Static importance weights of every item, as log weights (an array or a ``.npy`` path).

    Args:
        log_weights: per-item log importance weights, or the path of a ``.npy`` file of them.
        beta: temper (0 ignores the weights, 1 uses them as they are).
        clip: clip the log weights to [−c, c] (a number) or [lo, hi] (a pair).
        floor: smallest factor relative to the mean factor (keeps every item reachable).
        mode: ``"sample"`` draws items in proportion to the weights; ``"weight"`` draws as if
            unweighted and multiplies each loss by the importance ratio instead.

    Example:
        >>> StaticWeights([0.0, 1.0], beta=0.5).factor().round(3).tolist()
        [0.607, 1.0]
    """

    log_weights: Any
    beta: float = 1.0
    clip: float | tuple[float, float] | None = None
    floor: float = 1e-6
    mode: Mode = "sample"

    def load(self) -> np.ndarray:
        """The log weights as a float64 array (reading the ``.npy`` file if a path was given)."""
        source = self.log_weights
        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.exists():
                raise FileNotFoundError(f"static log weights file {str(path)!r} does not exist.")
            return np.load(path, allow_pickle=False).astype(np.float64).reshape(-1)
        if isinstance(source, torch.Tensor):
            source = source.detach().cpu().numpy()
        return np.asarray(source, dtype=np.float64).reshape(-1)

    def factor(self) -> np.ndarray:
        """a_i = exp(β · clip(log w_i)), max 1, floored (see ``reweight.weights.static_factor``)."""
        _check_mode("static", self.mode)
        return static_factor(self.load(), self.beta, self.clip, self.floor)


@dataclass(frozen=True)
class DomainWeights:
    """Fixed domain probabilities π (relative weights, by domain id order or by name).

    Args:
        probs: a sequence (one per domain) or a mapping from domain name to weight (missing
            names get 0).
        mode: ``"sample"`` draws domain d with probability π(d); ``"weight"`` draws domains in
            their natural proportions and multiplies losses by π(d) / (n_d / N).
    """

    probs: Sequence[float] | Mapping[str, float] | np.ndarray
    mode: Mode = "sample"

    def resolve(self, names: Sequence[str]) -> np.ndarray:
        """π as an array ordered like ``names`` (not normalised)."""
        _check_mode("domain", self.mode)
        if isinstance(self.probs, Mapping):
            unknown = sorted(set(self.probs) - set(names))
            if unknown:
                raise ValueError(
                    f"domain probabilities name unknown domain(s) {unknown}; known domains: "
                    f"{list(names)}."
                )
            return np.array([float(self.probs.get(n, 0.0)) for n in names])
        array = np.asarray(self.probs, dtype=np.float64).reshape(-1)
        if array.size != len(names):
            raise ValueError(
                f"{array.size} domain probabilities for {len(names)} domains {list(names)}; "
                "give one per domain, or a mapping from name to probability."
            )
        return array


class Reweighter:
    """Combines weight sources into a sampling distribution q and per-sample loss weights.

    The target distribution p applies every source; the sampler draws from q, which applies only
    the sources in ``"sample"`` mode. ``reduce`` multiplies each drawn item's loss by p/q,
    self-normalised to mean 1 over the global batch, so "upsample or upweight" is a per-source
    setting.

    Args:
        num_items: number of items (or give ``domains``).
        domains: per-item domain ids 0..K-1.
        domain_names: names of the K domains (default "0", "1", ...).
        static: static importance weights (:class:`StaticWeights`).
        domain_weights: fixed domain probabilities (:class:`DomainWeights`).
        seed, num_samples, infinite, chunk_size, block_size: passed to :class:`ReweightSampler`.
        realised_decay: decay of the moving average of realised per-domain shares.

    Example:
        >>> import torch
        >>> rw = Reweighter(domains=[0, 0, 0, 1], domain_names=["big", "small"],
        ...                 domain_weights=DomainWeights([0.5, 0.5], mode="weight"))
        >>> batch = {"index": torch.tensor([0, 3])}
        >>> loss = rw.reduce(torch.tensor([1.0, 1.0]), batch)  # weights 0.5 and 1.5 (mean 1)
        >>> round(float(loss), 4)
        1.0
        >>> rw.loss_weights(torch.tensor([0, 3])).tolist()
        [0.6666666666666666, 2.0]
    """

    def __init__(
        self,
        num_items: int | None = None,
        *,
        domains: Any = None,
        domain_names: Sequence[str] | None = None,
        static: StaticWeights | None = None,
        domain_weights: DomainWeights | None = None,
        seed: int = 0,
        num_samples: int | None = None,
        infinite: bool = False,
        chunk_size: int = 4096,
        block_size: int = 16,
        realised_decay: float = 0.98,
    ) -> None:
        sampler = ReweightSampler(
            num_items,
            domains=domains,
            num_domains=None if domain_names is None else len(domain_names),
            seed=seed,
            num_samples=num_samples,
            infinite=infinite,
            chunk_size=chunk_size,
            block_size=block_size,
        )
        k = sampler.num_domains
        names = [str(i) for i in range(k)] if domain_names is None else list(domain_names)
        if len(names) != k:
            raise ValueError(f"{len(names)} domain names for {k} domains; give one per domain.")
        if not 0 <= realised_decay < 1:
            raise ValueError(f"realised_decay must lie in [0, 1), got {realised_decay!r}.")
        self.sampler = sampler
        self.domain_names = names
        self.static = static
        self.domain_weights = domain_weights
        self.realised_decay = realised_decay
        n = sampler.num_items
        natural = sampler.natural_probs()

        # Target p: every source applied. Sampled q: only "sample"-mode sources.
        target_factor = np.ones(n)
        if static is not None:
            target_factor = static.factor()
            if target_factor.size != n:
                raise ValueError(
                    f"static log weights have {target_factor.size} entries for {n} items; "
                    "give one per item, in dataset order."
                )
        target_probs = natural
        if domain_weights is not None:
            target_probs = domain_weights.resolve(names)
            sampler.set_domain_probs(target_probs)  # validates; corrected below for "weight"
            target_probs = sampler.domain_probs
        sample_static = static is not None and static.mode == "sample"
        sample_domains = domain_weights is not None and domain_weights.mode == "sample"
        if sample_static:
            sampler.set_static(target_factor)
        sampler.set_domain_probs(target_probs if sample_domains else natural)
        self._target_probs = target_probs

        # p(i)/q(i) = c_d · a_p(i) / a_q(i) with c_d = π_p(d)/π_q(d) · A_q(d)/A_p(d).
        item_domain = sampler.item_domains(np.arange(n))
        target_mass = np.bincount(item_domain, weights=target_factor, minlength=k)
        sampled_factor = target_factor if sample_static else np.ones(n)
        sampled_mass = np.bincount(item_domain, weights=sampled_factor, minlength=k)
        sampled_probs = sampler.domain_probs
        with np.errstate(divide="ignore", invalid="ignore"):
            per_domain = np.where(
                sampled_probs > 0,
                target_probs / sampled_probs * sampled_mass / target_mass,
                0.0,
            )
        self._domain_ratio = per_domain
        self._item_ratio: np.ndarray | None = None
        if static is not None and static.mode == "weight":
            self._item_ratio = target_factor.astype(np.float32)
        self._weighting = self._item_ratio is not None or (
            domain_weights is not None and domain_weights.mode == "weight"
        )
        self._fingerprint = self._make_fingerprint(target_factor)

        self.global_step = 0
        self._consumed = 0  # items of the current epoch this rank has passed to reduce()
        self._consumed_epoch = sampler.epoch
        self._realised = np.zeros(k)
        self._last_weights: dict[str, float] = {}

    @classmethod
    def from_dataset(cls, dataset: Any, **kwargs: Any) -> Reweighter:
        """Builds a Reweighter for an :class:`~reweight.IndexedDataset` (its domains and names).

        Example:
            >>> from reweight import IndexedDataset
            >>> ds = IndexedDataset.concat({"a": [1, 2, 3], "b": [4]})
            >>> Reweighter.from_dataset(ds).domain_names
            ['a', 'b']
        """
        domains = getattr(dataset, "domains", None)
        if domains is None:
            return cls(len(dataset), **kwargs)
        return cls(domains=domains, domain_names=list(dataset.domain_names), **kwargs)

    def _make_fingerprint(self, target_factor: np.ndarray) -> dict[str, Any]:
        static, mix = self.static, self.domain_weights
        return {
            "sampler": self.sampler.fingerprint(),
            "domain_names": list(self.domain_names),
            "static": None
            if static is None
            else {
                "mode": static.mode,
                "crc": zlib.crc32(target_factor.astype(np.float32).tobytes()),
            },
            "domain_weights": None
            if mix is None
            else {"mode": mix.mode, "probs": [round(float(p), 12) for p in self._target_probs]},
        }

    # ------------------------------------------------------------------ per step

    def loss_weights(self, index: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The unnormalised importance ratio p/q of each item (float64 tensor; 1 if unused)."""
        idx = np.asarray(index.detach().cpu().numpy() if isinstance(index, torch.Tensor) else index)
        idx = idx.astype(np.int64).reshape(-1)
        if not self._weighting:
            return torch.ones(idx.size, dtype=torch.float64)
        ratio = self._domain_ratio[self.sampler.item_domains(idx)]
        if self._item_ratio is not None:
            ratio = ratio * self._item_ratio[idx]
        return torch.from_numpy(ratio)

    def reduce(self, per_sample_loss: torch.Tensor, batch: Any) -> torch.Tensor:
        """Weighted mean of per-sample losses: Σ w_i · loss_i / n with global-batch mean-1 w.

        Args:
            per_sample_loss: shape (batch,), e.g. ``F.cross_entropy(..., reduction="none")``.
            batch: the batch dict; must carry ``"index"`` (use :class:`~reweight.IndexedDataset`).

        Returns:
            A scalar loss to backpropagate; the weights carry no gradient.
        """
        index = require_index(batch)
        if not isinstance(per_sample_loss, torch.Tensor):
            raise TypeError(f"per_sample_loss must be a tensor, got {type(per_sample_loss)}.")
        if per_sample_loss.dim() != 1 or per_sample_loss.numel() != index.numel():
            raise ValueError(
                f"per_sample_loss has shape {tuple(per_sample_loss.shape)} but the batch has "
                f"{index.numel()} indices; compute the loss with reduction='none' (one value per "
                "sample) and average any extra dimensions per sample first."
            )
        finite = torch.isfinite(per_sample_loss.detach())
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise ValueError(
                f"{bad} of {index.numel()} per-sample losses are NaN or inf (e.g. "
                f"{per_sample_loss[~finite][0].item()!r}); fix the loss or lower the learning rate "
                "— nothing was updated."
            )
        self._record(index)
        if not self._weighting:
            return per_sample_loss.mean()
        ratio = self.loss_weights(index)
        totals = distributed.all_reduce_sum(
            torch.tensor([float(ratio.sum()), float(ratio.numel())], dtype=torch.float64)
        )
        weights = ratio * (totals[1] / totals[0])
        self._last_weights = weight_summary(weights.numpy())
        weights = weights.to(device=per_sample_loss.device, dtype=per_sample_loss.dtype)
        return (weights * per_sample_loss).mean()

    def _record(self, index: torch.Tensor) -> None:
        if self.sampler.epoch != self._consumed_epoch:
            self._consumed_epoch, self._consumed = self.sampler.epoch, 0
        self._consumed += index.numel()
        counts = np.bincount(
            self.sampler.item_domains(index.numpy()), minlength=self.sampler.num_domains
        )
        shares = counts / max(1, index.numel())
        if not self._realised.any():
            self._realised = shares.astype(np.float64)
        else:
            self._realised = (
                self.realised_decay * self._realised + (1 - self.realised_decay) * shares
            )

    def step(self) -> None:
        """Advances one optimizer step (call after ``optimizer.step()``)."""
        self.global_step += 1

    # ------------------------------------------------------------------ diagnostics

    def metrics(self) -> dict[str, float]:
        """Flat diagnostics for a logger (reads only): the sampler's ESS, entropy, max/min ratio,
        lag, and target / sampled / realised share per domain name."""
        stats = self.sampler.stats()
        out: dict[str, float] = {
            "sampler/ess_fraction": stats["ess_fraction"],
            "sampler/entropy": stats["entropy"],
            "sampler/entropy_fraction": stats["entropy_fraction"],
            "sampler/max_min_ratio": stats["max_min_ratio"],
            "sampler/max_prob": stats["max_prob"],
            "lag/chunk_draws": float(stats["update_lag"]),
            "lag/prefetched_draws": float(self.prefetched_draws),
        }
        sampled = stats["domain_probs"]
        for d, name in enumerate(self.domain_names):
            out[f"domain/{name}/target"] = float(self._target_probs[d])
            out[f"domain/{name}/sampled"] = float(sampled[d])
            out[f"domain/{name}/realised"] = float(self._realised[d])
        for key, value in self._last_weights.items():
            out[f"loss_weight/{key}"] = value
        return out

    @property
    def prefetched_draws(self) -> int:
        """Global draws the sampler has handed out that training has not consumed yet (the
        DataLoader's prefetch: an update reaches the model this many draws late, plus
        ``sampler.update_lag``)."""
        consumed = self._consumed if self.sampler.epoch == self._consumed_epoch else 0
        return max(0, self.sampler.draws_yielded - consumed * self.sampler.num_replicas)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Small, versioned state: step, consumption and the sampler (replaying prefetched
        draws after a restore, so a resumed run sees the same items)."""
        consumed = self._consumed if self.sampler.epoch == self._consumed_epoch else 0
        world = self.sampler.num_replicas
        return {
            "version": _STATE_VERSION,
            "fingerprint": self._fingerprint,
            "global_step": self.global_step,
            "consumed": consumed,
            "realised": torch.from_numpy(self._realised.copy()),
            "sampler": self.sampler.state_dict(consumed=consumed * world),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict`; a state from another configuration raises ValueError."""
        if not isinstance(state, Mapping) or state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"not a Reweighter state of version {_STATE_VERSION} "
                f"(got version {state.get('version') if isinstance(state, Mapping) else None!r})."
            )
        if state["fingerprint"] != self._fingerprint:
            diff = [
                key
                for key in self._fingerprint
                if state["fingerprint"].get(key) != self._fingerprint[key]
            ]
            raise ValueError(
                f"this checkpoint's reweighting state comes from another configuration (differs "
                f"in: {', '.join(diff)}); resume with the same data and reweighting settings, "
                "or start without restoring the reweighter."
            )
        self.sampler.load_state_dict(state["sampler"])
        self.global_step = int(state["global_step"])
        self._consumed = int(state["consumed"])
        self._consumed_epoch = self.sampler.epoch
        self._realised = np.asarray(state["realised"], dtype=np.float64).copy()
