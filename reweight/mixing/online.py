"""Online domain rules that learn π from the training losses: DoReMi and ODM."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from reweight._checks import (
    as_float_array,
    check_int,
    check_progress,
    check_real,
    check_weights,
    state_array,
    state_initial,
    state_int,
    state_probs,
    state_vector,
)
from reweight.mixing.rules import DomainRule, Metrics
from reweight.mixing.temperature import floor_probs

__all__ = ["ODM", "DoReMi", "parse_batch"]


def parse_batch(
    domains: Any, losses: Any, num_domains: int, reference: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validates a global batch and drops samples whose loss (or reference) is not finite.

    Args:
        domains: per-sample domain ids (integers in 0..K-1; arrays or tensors).
        losses: per-sample losses, same length.
        num_domains: K.
        reference: optional per-sample reference losses, same length.

    Returns:
        ``(domains as int64, losses as float64, reference as float64 or None)`` for the kept
        samples.

    Example:
        >>> d, l, r = parse_batch([0, 1, 1], [1.0, float("nan"), 2.0], 2)
        >>> d.tolist(), l.tolist(), r
        ([0, 1], [1.0, 2.0], None)
    """
    ids = as_float_array("domains", domains)
    values = as_float_array("losses", losses)
    if ids.size != values.size:
        raise ValueError(
            f"domains has {ids.size} entries but losses has {values.size}; give one domain id "
            "per loss."
        )
    bad = ~np.isfinite(ids) | (ids != np.round(ids)) | (ids < 0) | (ids >= num_domains)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"domain ids must be integers in 0..{num_domains - 1}; sample {first} has "
            f"{float(ids[first])!r}."
        )
    keep = np.isfinite(values)
    ref: np.ndarray | None = None
    if reference is not None:
        ref = as_float_array("reference", reference)
        if ref.size != values.size:
            raise ValueError(
                f"reference has {ref.size} entries but losses has {values.size}; give one "
                "reference loss per sample."
            )
        keep &= np.isfinite(ref)
        ref = ref[keep]
    return ids[keep].astype(np.int64), values[keep], ref


def _default_floor(min_prob: float | None, num_domains: int) -> float:
    floor = 0.01 / num_domains if min_prob is None else check_real("min_prob", min_prob)
    if not 0.0 <= floor * num_domains < 1.0:
        raise ValueError(
            f"min_prob must lie in [0, 1/{num_domains}) for {num_domains} domains, got "
            f"{floor!r}; the default is 0.01 / num_domains."
        )
    return floor


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


class DoReMi(DomainRule):
    """DoReMi's online domain weights (Xie et al. 2023): exponentiated gradient on excess loss.

    Each :meth:`observe` computes, for every domain d in the batch, the excess loss
    λ_d = mean over d's samples of max(loss − reference, 0); domains absent from the batch keep
    their previous λ_d (0 before they are first seen). Then

        α ← floor((1 − c) · softmax(log α + η·λ) + c/K, min_prob)

    and the running average ᾱ = (1/T) Σ_t α_t over the T updates so far is kept. The smoothing c
    mixes in the uniform distribution exactly as in the paper; the ``min_prob`` floor is applied
    after it with :func:`floor_probs` (domains under the floor are raised to it, the others keep
    their ratios), and the floored α is what the next update starts from, so log α stays finite
    and no domain can collapse below ``min_prob`` however large another domain's excess loss.

    Args:
        num_domains: K.
        reference: per-domain reference losses (used when :meth:`observe` gets no per-sample
            ``reference``); one of the two is required.
        eta: step size η (the paper uses 1).
        smoothing: c in [0, 1] (the paper uses 1e-3).
        min_prob: floor on every domain's weight, in [0, 1/K) (default 0.01 / K, i.e. 1% of the
            uniform share).
        output: ``"current"`` (α, follows the losses; the default for online reweighting) or
            ``"average"`` (ᾱ, what DoReMi hands to the main model).
        initial: initial weights (default uniform; floored like every α).

    Example:
        >>> rule = DoReMi(2, reference=[1.0, 1.0], smoothing=0.0, min_prob=0.0)
        >>> rule.observe([0, 0, 1], [3.0, 1.0, 0.5], progress=0.1)  # λ = [1.0, 0.0]
        >>> rule.probs(0.1).round(4).tolist()  # softmax(log 0.5 + [1, 0])
        [0.7311, 0.2689]
    """

    kind = "doremi"
    online = True
    uses_reference = True

    def __init__(
        self,
        num_domains: int,
        *,
        reference: Any = None,
        eta: float = 1.0,
        smoothing: float = 1e-3,
        min_prob: float | None = None,
        output: str = "current",
        initial: Any = None,
    ) -> None:
        super().__init__(num_domains)
        k = self.num_domains
        self.reference: np.ndarray | None = None
        if reference is not None:
            self.reference = as_float_array("reference", reference)
            if self.reference.size != k or not np.isfinite(self.reference).all():
                raise ValueError(
                    f"reference must hold {k} finite per-domain losses, got "
                    f"{self.reference.tolist()!r}."
                )
        self.eta = check_real("eta", eta)
        if self.eta < 0:
            raise ValueError(f"eta must be >= 0, got {self.eta!r}.")
        self.smoothing = check_real("smoothing", smoothing)
        if not 0.0 <= self.smoothing <= 1.0:
            raise ValueError(f"smoothing c must lie in [0, 1], got {self.smoothing!r}.")
        self.min_prob = _default_floor(min_prob, k)
        if output not in ("current", "average"):
            raise ValueError(f"output must be 'current' or 'average', got {output!r}.")
        self.output = output
        start = np.full(k, 1.0 / k) if initial is None else check_weights("initial", initial, k)
        self._alpha = floor_probs(start, self.min_prob)
        self._average = self._alpha.copy()
        self._excess = np.zeros(k)
        self._updates = 0

    def probs(self, progress: float) -> np.ndarray:
        check_progress(progress)
        return (self._alpha if self.output == "current" else self._average).copy()

    def _parse(
        self, domains: Any, losses: Any, progress: float, reference: Any
    ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        """Validates an :meth:`observe` call: (progress, domain ids, losses, reference losses)."""
        at = check_progress(progress)
        ids, values, ref = parse_batch(domains, losses, self.num_domains, reference)
        if ref is None:
            if self.reference is None:
                raise ValueError(
                    "DoReMi needs reference losses: pass reference= per sample to observe(), "
                    "or per domain to DoReMi(reference=...)."
                )
            ref = self.reference[ids]
        return at, ids, values, ref

    def check_observe(
        self, domains: Any, losses: Any, progress: float, reference: Any = None
    ) -> None:
        self._parse(domains, losses, progress, reference)

    def observe(self, domains: Any, losses: Any, progress: float, reference: Any = None) -> None:
        """Updates α from the global batch (see the class docstring for the rule)."""
        k = self.num_domains
        at, ids, values, ref = self._parse(domains, losses, progress, reference)
        self._progress = at
        if ids.size == 0:
            return
        counts = np.bincount(ids, minlength=k)
        sums = np.bincount(ids, weights=np.maximum(values - ref, 0.0), minlength=k)
        present = counts > 0
        excess = self._excess.copy()
        excess[present] = sums[present] / counts[present]
        with np.errstate(divide="ignore"):
            logits = np.log(self._alpha) + self.eta * excess
        smoothed = (1.0 - self.smoothing) * _softmax(logits) + self.smoothing / k
        alpha = floor_probs(smoothed, self.min_prob)
        self._excess = excess
        self._alpha = alpha
        self._updates += 1
        self._average = self._average + (alpha - self._average) / self._updates

    def metrics(self, progress: float | None = None) -> Metrics:
        return {
            "weights": self._alpha.copy(),
            "average_weights": self._average.copy(),
            "excess_loss": self._excess.copy(),
            "updates": float(self._updates),
        }

    def _state(self) -> dict[str, Any]:
        return {
            "alpha": state_array(self._alpha),
            "average": state_array(self._average),
            "excess": state_array(self._excess),
            "updates": self._updates,
        }

    def _state_keys(self) -> tuple[str, ...]:
        return ("alpha", "average", "excess", "updates")

    def _parse_state(self, state: Mapping[str, Any]) -> Any:
        """``alpha`` and ``average``: probability vectors with every entry >= ``min_prob`` (both
        are floored); ``excess``: K finite numbers >= 0; ``updates``: an integer >= 0, and while
        it is 0, ``average`` equals ``alpha`` and ``excess`` is all zero (their initial values).
        """
        k, what = self.num_domains, self._state_what
        alpha = state_probs(state, "alpha", what, k, min_prob=self.min_prob)
        average = state_probs(state, "average", what, k, min_prob=self.min_prob)
        excess = state_vector(state, "excess", what, k)
        negative = excess < 0
        if negative.any():
            first = int(np.flatnonzero(negative)[0])
            raise ValueError(
                f"{what}: 'excess' must be >= 0 (a mean of max(loss − reference, 0)); entry "
                f"{first} is {float(excess[first])!r}."
            )
        updates = state_int(state, "updates", what, minimum=0)
        if updates == 0:
            state_initial(what, "average", average, alpha, "equal to 'alpha'", "updates")
            state_initial(what, "excess", excess, np.zeros(k), "all zero", "updates")
        return alpha, average, excess, updates

    def _apply_state(self, parsed: Any) -> None:
        self._alpha, self._average, self._excess, self._updates = parsed

    def __repr__(self) -> str:
        return (
            f"DoReMi(num_domains={self.num_domains}, eta={self.eta}, smoothing={self.smoothing}, "
            f"min_prob={self.min_prob}, output={self.output!r})"
        )


class ODM(DomainRule):
    """Online Data Mixing (Albalak et al. 2023): EXP3 over domains, rewarded by training loss.

    Domains are the arms of an adversarial bandit; the reward of a domain is its training loss
    (a high loss means more left to learn), importance-weighted and exponentially smoothed. Per
    :meth:`observe` (the global batch drawn from the current π):

    1. reward estimate for each domain a present in the batch: its mean loss divided by the
       probability that a batch of B valid samples drawn from π contains a,
       P_a = 1 − (1 − π_a)^B (π_a taken >= max(min_prob, 1e-6)). With one domain per batch
       (B = 1, the paper's setting) this is the paper's L/π_a; for mixed batches it is the same
       EXP3 importance weight for the event "domain a was observed". Absent domains keep their
       previous reward.
    2. smoothed reward R̂_a ← s·R̂_a + (1 − s)·r̂_a (s = ``smoothing``, 0.9 in the paper).
    3. after ``warmup_steps`` observes, every ``update_every``-th observe recomputes the policy
       (t counts these updates):

           ε_t = min(1/K, sqrt(ln K / (K·t)))
           π   = floor((1 − K·ε_t) · softmax(η_t · R̂) + ε_t, min_prob)

       with η_t = ε_{t−1} (ε_0 = 1/K) as in the paper, or a fixed ``eta``.

    π is uniform until the first policy update (the warm-up). With the paper's η_t = ε_{t−1}
    the softmax flattens as t grows, so π stays close to uniform over long runs; a fixed
    ``eta`` (e.g. 1) lets π concentrate on the highest-loss domains. Smoothed rewards keep
    accumulating during the warm-up, so the first update is informed.

    Args:
        num_domains: K.
        eta: fixed learning rate for the softmax (default: the paper's ε_{t−1}).
        smoothing: reward smoothing s in [0, 1).
        warmup_steps: observes with uniform π before the first policy update. Reproductions of
            ODM use 1000–2000 steps (about 1% of a 100k–200k-step run); the default 100 suits
            short runs — set it to about 1% of your training steps.
        update_every: policy update interval, in observes.
        min_prob: floor on every domain's probability (default 0.01 / K).
        seed: seed of :meth:`draw_domain`'s generator (the rule itself is deterministic).

    Example:
        >>> rule = ODM(2, eta=1.0, warmup_steps=1, min_prob=0.0)
        >>> rule.observe([0, 1], [1.0, 3.0], progress=0.0)  # warm-up: rewards only
        >>> rule.probs(0.0).tolist(), rule.metrics()["rewards"].round(4).tolist()
        ([0.5, 0.5], [0.1333, 0.4])
        >>> rule.observe([0, 1], [1.0, 3.0], progress=0.1)  # t = 1: ε_1 = 1/K, still uniform
        >>> rule.observe([0, 1], [1.0, 3.0], progress=0.2)  # t = 2: ε_2 = 0.416
        >>> rule.probs(0.2).round(3).tolist()
        [0.471, 0.529]
    """

    kind = "odm"
    online = True

    def __init__(
        self,
        num_domains: int,
        *,
        eta: float | None = None,
        smoothing: float = 0.9,
        warmup_steps: int = 100,
        update_every: int = 1,
        min_prob: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(num_domains)
        k = self.num_domains
        self.eta = None if eta is None else check_real("eta", eta)
        if self.eta is not None and self.eta < 0:
            raise ValueError(f"eta must be >= 0 (or None for the paper's ε_(t-1)), got {eta!r}.")
        self.smoothing = check_real("smoothing", smoothing)
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"smoothing must lie in [0, 1), got {self.smoothing!r}.")
        self.warmup_steps = check_int("warmup_steps", warmup_steps, minimum=0)
        self.update_every = check_int("update_every", update_every, minimum=1)
        self.min_prob = _default_floor(min_prob, k)
        self.seed = check_int("seed", seed, minimum=0)
        self._weights = np.full(k, 1.0 / k)
        self._rewards = np.zeros(k)
        self._observes = 0
        self._updates = 0

    def exploration(self, t: int) -> float:
        """EXP3's exploration rate ε_t = min(1/K, sqrt(ln K / (K·t))) (ε_0 = 1/K).

        Example:
            >>> ODM(4).exploration(1), round(ODM(4).exploration(100), 4)
            (0.25, 0.0589)
        """
        k = self.num_domains
        if t <= 0:
            return 1.0 / k
        return min(1.0 / k, math.sqrt(math.log(k) / (k * t)))

    def probs(self, progress: float) -> np.ndarray:
        check_progress(progress)
        return self._weights.copy()

    def _parse(
        self, domains: Any, losses: Any, progress: float
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """Validates an :meth:`observe` call: (progress, domain ids, losses)."""
        at = check_progress(progress)
        ids, values, _ = parse_batch(domains, losses, self.num_domains)
        return at, ids, values

    def check_observe(
        self, domains: Any, losses: Any, progress: float, reference: Any = None
    ) -> None:
        self._parse(domains, losses, progress)

    def observe(self, domains: Any, losses: Any, progress: float, reference: Any = None) -> None:
        """Updates the smoothed rewards and, on schedule, the policy (see the class docstring)."""
        k = self.num_domains
        at, ids, values = self._parse(domains, losses, progress)
        self._progress = at
        if ids.size == 0:
            return
        counts = np.bincount(ids, minlength=k)
        means = np.bincount(ids, weights=values, minlength=k) / np.maximum(counts, 1)
        present = counts > 0
        # P(domain a appears in B draws from π) = 1 − (1 − π_a)^B, computed stably; π_a is taken
        # at least max(min_prob, 1e-6) so a domain drawn despite a vanishing π_a cannot get an
        # unbounded reward.
        pi = np.clip(self._weights, max(self.min_prob, 1e-6), 1.0)
        with np.errstate(divide="ignore"):
            seen = -np.expm1(ids.size * np.log1p(-pi))
        rewards = self._rewards.copy()
        estimate = means[present] / seen[present]
        rewards[present] = self.smoothing * rewards[present] + (1.0 - self.smoothing) * estimate
        weights = self._weights
        observes = self._observes + 1
        updates = self._updates
        after = observes - self.warmup_steps
        if after > 0 and after % self.update_every == 0:
            updates += 1
            epsilon = self.exploration(updates)
            rate = self.exploration(updates - 1) if self.eta is None else self.eta
            mixed = (1.0 - k * epsilon) * _softmax(rate * rewards) + epsilon
            weights = floor_probs(mixed, self.min_prob)
        self._rewards, self._weights = rewards, weights
        self._observes, self._updates = observes, updates

    def draw_domain(self, progress: float) -> int:
        """One domain drawn from π, for the paper's one-domain-per-batch setting.

        Deterministic given the state: the generator is seeded from (seed, observes so far), so a
        resumed run draws the same domains and repeated calls before the next observe agree.

        Example:
            >>> rule = ODM(3, seed=1)
            >>> rule.draw_domain(0.0) == rule.draw_domain(0.0)
            True
        """
        rng = np.random.default_rng([self.seed, self._observes])
        return int(rng.choice(self.num_domains, p=self.probs(progress)))

    def metrics(self, progress: float | None = None) -> Metrics:
        return {
            "weights": self._weights.copy(),
            "rewards": self._rewards.copy(),
            "exploration": self.exploration(self._updates),
            "updates": float(self._updates),
        }

    def _state(self) -> dict[str, Any]:
        return {
            "weights": state_array(self._weights),
            "rewards": state_array(self._rewards),
            "observes": self._observes,
            "updates": self._updates,
        }

    def _state_keys(self) -> tuple[str, ...]:
        return ("weights", "rewards", "observes", "updates")

    def _parse_state(self, state: Mapping[str, Any]) -> Any:
        """``weights``: a probability vector with every entry >= ``min_prob``; ``rewards``: K
        finite numbers; ``observes`` and ``updates``: integers >= 0 with ``updates`` the number
        of policy updates this configuration makes in ``observes`` observes,
        ``max(observes − warmup_steps, 0) // update_every``. Before the first policy update
        ``weights`` is uniform; before the first observe ``rewards`` is all zero.
        """
        k, what = self.num_domains, self._state_what
        weights = state_probs(state, "weights", what, k, min_prob=self.min_prob)
        rewards = state_vector(state, "rewards", what, k)
        observes = state_int(state, "observes", what, minimum=0)
        updates = state_int(state, "updates", what, minimum=0)
        if updates > observes:
            raise ValueError(
                f"{what} has {updates} policy updates but only {observes} observes "
                "('updates' must be <= 'observes')."
            )
        expected = max(observes - self.warmup_steps, 0) // self.update_every
        if updates != expected:
            raise ValueError(
                f"{what}: 'updates' is {updates}, but with warmup_steps={self.warmup_steps} and "
                f"update_every={self.update_every} {observes} observes make {expected} policy "
                "updates; resume with the checkpoint's configuration."
            )
        if updates == 0:
            state_initial(what, "weights", weights, np.full(k, 1.0 / k), "uniform", "updates")
        if observes == 0:
            state_initial(what, "rewards", rewards, np.zeros(k), "all zero", "observes")
        return weights, rewards, observes, updates

    def _apply_state(self, parsed: Any) -> None:
        self._weights, self._rewards, self._observes, self._updates = parsed

    def __repr__(self) -> str:
        return (
            f"ODM(num_domains={self.num_domains}, eta={self.eta}, smoothing={self.smoothing}, "
            f"warmup_steps={self.warmup_steps}, update_every={self.update_every}, "
            f"min_prob={self.min_prob}, seed={self.seed})"
        )
