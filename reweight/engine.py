"""Reweighter: composes weight sources and the sampler; turns per-sample losses into one loss.

No Lightning import: a plain PyTorch loop uses it directly (see README).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from reweight import distributed, engine_state, state_files
from reweight._checks import check_choice, check_int
from reweight.batch import (
    check_index,
    gather_rows,
    local_rows,
    parse_rows,
    warn_nonfinite,
    warn_unmatched,
)
from reweight.engine_state import MAX_STEP
from reweight.metrics import BatchRecord
from reweight.sampler import ReweightSampler
from reweight.sampler.stream import DrawMatch
from reweight.sources import BatchLosses, GlobalBatch, Layout, Source, make_source
from reweight.sources.compose import Composition

__all__ = ["Reweighter"]

_SAMPLER_METRICS = ("ess_fraction", "entropy", "entropy_fraction", "max_min_ratio", "max_prob")


def _check_total_steps(value: Any) -> int:
    return check_int(
        "total_steps", value, minimum=1, hint="give the run's length in optimizer steps."
    )


def _domain_names(names: Sequence[str] | None, count: int | None) -> list[str]:
    """The domain names, checked (unique; ``count`` of them when given)."""
    if names is None:
        return [str(i) for i in range(count or 0)]
    if isinstance(names, (str, bytes)) or not isinstance(names, Sequence):
        raise TypeError(f"domain_names must be a sequence of names, one per domain, got {names!r}.")
    repeated = sorted({str(x) for x in names if list(names).count(x) > 1})
    if repeated:
        raise ValueError(f"domain_names must be unique, {repeated} appear more than once.")
    if count is not None and len(names) != count:
        raise ValueError(
            f"domain_names has {len(names)} names for {count} domains; give one per domain."
        )
    return [str(x) for x in names]


def _make_sources(sources: Any) -> tuple[list[Source], list[str]]:
    """Sources from sources or specs, and their names: each one's ``name``, else its kind
    (``kind_2``, ... for repeats)."""
    if isinstance(sources, (Source, Mapping, str)) or not isinstance(sources, Sequence):
        raise TypeError(f"sources must be a list of sources or specs, got {sources!r}.")
    built = [make_source(source) for source in sources]
    names: list[str] = []
    for source in built:
        base = source.name or source.kind
        name, count = base, 1
        while name in names:
            if source.name:
                raise ValueError(f"two sources are named {base!r}; give each a unique name.")
            count += 1
            name = f"{base}_{count}"
        names.append(name)
    return built, names


def _combine_weights(
    sources: Sequence[Source],
    batch: BatchLosses,
    ratios: torch.Tensor | None,
    self_normalize: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch's loss weights and their sum before normalising: every source's
    in-batch weights times p/q (``ratios``; None when p = q), 0 for masked samples, mean 1
    over the valid ones when ``self_normalize``. Tensor operations on the losses' device only
    (nothing is read back: :func:`_check_total` checks the sum later). Changes nothing."""
    weights = batch.valid.to(torch.float64)
    for source in sources:
        extra = source.batch_weights(batch)
        if extra is not None:
            weights = weights * extra
    if ratios is not None:
        weights = weights * ratios
    weights = torch.where(batch.valid, weights, 0.0)
    total = weights.sum()
    if self_normalize:
        weights = weights * (batch.valid.sum() / total)
    return weights, total


def _check_total(total: float) -> None:
    if not total > 0 or not np.isfinite(total):
        raise ValueError(
            f"the batch's loss weights sum to {total!r}, not a positive number: its items have "
            "zero target probability (draw batches from reweighter.sampler), or an in-batch "
            "strategy returned non-finite scores (nothing was updated)."
        )


def _to_host(t: torch.Tensor) -> torch.Tensor:
    """A host copy of ``t``; from a CUDA device, into pinned memory without waiting for it."""
    if not t.is_cuda:
        return t.clone()
    out = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    return out.copy_(t, non_blocking=True)


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """``array`` as a tensor on ``device``; to a CUDA device, from pinned memory without waiting."""
    t = torch.from_numpy(array)
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t


@dataclass(frozen=True)
class _Pending:
    """The host part of a deferred :meth:`Reweighter.reduce`: host copies of the local rows
    and of the weights (their sum last), complete once ``event`` has passed (None: already),
    and the draws the weights assumed the batch was."""

    rows: torch.Tensor
    weights: torch.Tensor
    keys: list[str]
    step: int
    progress: float
    expected: np.ndarray | None
    event: Any


def _warn_length(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)


class Reweighter:
    """Composes weight sources into a sampling distribution q and per-sample loss weights.

    The target p applies every source; the sampler draws from q, which applies the sources in
    mode ``sample`` or ``proposal``. ``reduce`` gathers the global batch's losses, multiplies the
    in-batch weights by p/q (with the q each item was drawn with) and self-normalises them to
    mean 1 over the global batch. With no sources it is a plain, checkpointed sampler.

    Args:
        num_items: number of items (or give ``domains``).
        domains: per-item domain ids 0..K-1.
        domain_names: names of the K domains (default "0", "1", ...).
        sources: weight sources (:mod:`reweight.sources`), or specs for
            :func:`reweight.sources.make_source` such as ``{"kind": "mixing", "rule": 3.0}``.
        total_steps: optimizer steps of the run, for schedules (progress = step / total_steps);
            :class:`~reweight.ReweightCallback` reads it from the Trainer when not given.
        nonfinite: ``"mask"`` drops NaN/inf per-sample losses from the loss, the weights and
            every source (counted in metrics, warned once); ``"raise"`` makes them an error.
        self_normalize: rescale each global batch's loss weights to mean 1 (default: lower
            variance; a small bias when a rare, heavily upweighted item is missing from a
            batch); ``False`` applies p/q as is (mean 1 in expectation, unbiased).
        seed, num_samples, infinite, block_size: passed to :class:`ReweightSampler`.
        realised_decay: decay of the moving averages of realised domain shares and losses.

    Attributes:
        sources, source_names: the sources, bound to this Reweighter, and their names (the
            prefixes of their metrics and the keys of their states).
        sampler: the :class:`ReweightSampler` to pass to the DataLoader.

    Raises:
        ValueError: any invalid field of any source (TypeError for a wrong type), at
            construction; domain probabilities are checked on a grid of training progress, so
            no later ``reduce``/``step`` fails because of the configuration; and a ``reduce``/
            ``step`` that raises changes nothing.

    Example:
        >>> import torch
        >>> from reweight.sources import DomainMixing
        >>> rw = Reweighter(domains=[0, 0, 0, 1], domain_names=["big", "small"],
        ...                 sources=[DomainMixing([0.5, 0.5], mode="weight")])
        >>> loss = rw.reduce(torch.tensor([1.0, 1.0]), {"index": torch.tensor([0, 3])})
        >>> round(float(loss), 4), rw.importance_ratios(torch.tensor([0, 3])).tolist()
        (1.0, [0.6666666666666666, 2.0])
    """

    def __init__(
        self,
        num_items: int | None = None,
        *,
        domains: Any = None,
        domain_names: Sequence[str] | None = None,
        sources: Sequence[Source | Mapping[str, Any]] = (),
        total_steps: int | None = None,
        nonfinite: Literal["mask", "raise"] = "mask",
        self_normalize: bool = True,
        seed: int = 0,
        num_samples: int | None = None,
        infinite: bool = False,
        block_size: int = 16,
        realised_decay: float = 0.98,
    ) -> None:
        check_choice("nonfinite", nonfinite, ("mask", "raise"))
        _domain_names(domain_names, None)
        total = None if total_steps is None else _check_total_steps(total_steps)
        built, names = _make_sources(sources)
        self.sampler = sampler = ReweightSampler(
            num_items,
            domains=domains,
            num_domains=None if domain_names is None else len(domain_names),
            seed=seed,
            num_samples=num_samples,
            infinite=infinite,
            block_size=block_size,
        )
        record = BatchRecord(sampler.num_domains, realised_decay)
        self.domain_names = _domain_names(domain_names, sampler.num_domains)
        layout = Layout(
            sampler.num_items, sampler.domain_sizes, self.domain_names, sampler.item_domains
        )
        try:  # a failed construction leaves the sources as they were, free to use again
            for source in built:
                source.bind(layout)
            self._composition = Composition(built, layout, sampler)
        except Exception:
            for source in built:
                source.unbind()
            raise
        for source, name in zip(built, names, strict=True):
            source.name = name
        self.sources, self.source_names = built, names
        self.nonfinite = nonfinite
        self.self_normalize = bool(self_normalize)
        self.total_steps = total
        self.global_step = 0
        self._record = record
        self._fingerprint = {
            "sampler": sampler.fingerprint(),
            "domain_names": list(self.domain_names),
            "sources": {s.name: s.fingerprint() for s in built},
        }
        self._batch_keys = sorted({key for s in built for key in s.batch_keys})
        self._warned_unmatched = False
        self._defer: bool | None = None  # None: defer the host part of reduce() on CUDA
        self._pending: _Pending | None = None

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

    # ------------------------------------------------------------------ progress

    def set_total_steps(self, total_steps: int) -> None:
        """Sets the run's length in optimizer steps (part of :meth:`state_dict`); changing a
        known length warns with both values (schedules then read progress against the new
        length from the current step on)."""
        self._settle()
        total, old = _check_total_steps(total_steps), self.total_steps
        probs = self._composition.domain_probs(self._progress_at(self.global_step, total))
        if old is not None and total != old:
            _warn_length(
                f"the run's length changes from {old} to {total} optimizer steps at step "
                f"{self.global_step}; schedules now read progress as step / {total} (a resumed "
                "run with another max_steps: the schedule is not the one an uninterrupted run "
                "of either length would follow)."
            )
        self.total_steps = total
        self._composition.apply(probs)

    @property
    def needs_total_steps(self) -> bool:
        """Whether a source reads training progress (``total_steps`` needed before a step)."""
        return self._composition.needs_progress or any(s.needs_progress for s in self.sources)

    @property
    def progress(self) -> float:
        """Training progress in [0, 1]: ``global_step / total_steps`` (0 until it is known)."""
        return self._progress_at(self.global_step, self.total_steps)

    @staticmethod
    def _progress_at(step: int, total: int | None) -> float:
        return 0.0 if total is None else min(1.0, step / total)

    # ------------------------------------------------------------------ weights

    def importance_ratios(self, index: torch.Tensor | np.ndarray) -> torch.Tensor:
        """p(i)/q(i) of each item under the current q (float64 tensor; 1 when p = q).
        :meth:`reduce` divides by the q each item was drawn with instead."""
        self._settle()
        idx = check_index(index, self.sampler.num_items)
        if not self._composition.weighting:
            return torch.ones(idx.size, dtype=torch.float64)
        return torch.from_numpy(self._composition.ratios(idx, self.sampler.probabilities(idx)))

    def reduce(self, per_sample_loss: torch.Tensor, batch: Any) -> torch.Tensor:
        """Weighted mean of per-sample losses, with weights of mean 1 over the global batch.

        Per-sample losses and indices are all-gathered (a no-op on one process), so every rank
        computes the same weights and applies its own slice; sources learn from the global batch.

        On one CUDA process nothing waits for the GPU: the weights are computed there, and
        what the host learns from the batch (the loss table, online rules, metrics, the checks
        of non-finite losses) is copied without blocking and applied before anything reads the
        state — the next draw, ``step()``, ``reduce()``, ``metrics()`` or ``state_dict()`` —
        with the same result as at once. An error found then (non-finite losses with
        ``nonfinite="raise"``, every loss bad, a batch that is not the sampler's next draws
        while p ≠ q) is raised by that call, which changes nothing; this batch's loss was
        already returned, with its bad losses masked.

        Args:
            per_sample_loss: shape (batch,), e.g. ``F.cross_entropy(..., reduction="none")``.
            batch: the batch dict; must carry ``"index"`` (use :class:`~reweight.IndexedDataset`)
                and any per-sample keys a source reads (e.g. ``"reference_loss"``).

        Returns:
            A scalar loss to backpropagate; the weights carry no gradient.
        """
        self._settle()
        local, keys = local_rows(per_sample_loss, batch, self._batch_keys)
        step, progress = self.global_step, self.progress
        expected = None
        defer = self._defers(local)
        if defer and self._composition.weighting:  # p/q needs the items: the next draws
            expected = self.sampler.next_draws(local.shape[0])
            defer = expected is not None
        if defer:
            rows, mine = local, None
            ratios = None if expected is None else self._ratios(*expected)
        else:  # read the batch now (on a GPU, this waits for it)
            gathered_rows = gather_rows(local)
            gathered, ranks = self._parse(gathered_rows, keys, step, progress)
            draws = self.sampler.match_draws(gathered.index, ranks)
            ratios = None  # no state changes from here to the updates below
            if self._composition.weighting:
                if draws is None and not self._warned_unmatched and self.sampler.draws_yielded:
                    self._warned_unmatched = True
                    warn_unmatched()
                ratios = self._ratios(gathered.index, draws)
            rows, mine = torch.from_numpy(gathered_rows), ranks == distributed.rank()
        losses = rows[:, 0].contiguous()
        columns = {key: rows[:, 3 + i].contiguous() for i, key in enumerate(keys)}
        valid = torch.isfinite(losses)
        scores = BatchLosses(losses, valid, columns, step, progress)
        device_ratios = None if ratios is None else _to_device(ratios, rows.device)
        weights, total = _combine_weights(self.sources, scores, device_ratios, self.self_normalize)
        if defer:
            both = torch.cat([weights, total.reshape(1)])
            host_rows, host_weights = _to_host(local), _to_host(both)
            event = torch.cuda.Event() if local.is_cuda else None
            if event is not None:
                event.record()  # after the copies: it passes when they are complete
            items = None if expected is None else expected[0]
            self._pending = _Pending(host_rows, host_weights, keys, step, progress, items, event)
            self.sampler.before_draw = self._settle
            local_w = weights
        else:
            _check_total(float(total))
            self._learn(gathered, draws, weights.numpy())
            local_w = weights[torch.from_numpy(mine)]
        safe = torch.where(torch.isfinite(per_sample_loss), per_sample_loss, 0.0)
        world = torch.full((), distributed.world_size(), dtype=torch.float64, device=valid.device)
        scale = world / valid.sum().clamp(min=1)
        loss = (local_w.to(per_sample_loss) * safe).sum()
        return loss * scale.to(per_sample_loss)

    def _defers(self, rows: torch.Tensor) -> bool:
        """Whether this reduce() leaves its host part for later: on one CUDA process (or when
        forced by ``_defer``, as the tests do)."""
        wanted = rows.is_cuda if self._defer is None else self._defer
        return wanted and not distributed.is_distributed()

    def _parse(
        self, rows: np.ndarray, keys: list[str], step: int, progress: float
    ) -> tuple[GlobalBatch, np.ndarray]:
        return parse_rows(
            rows,
            keys,
            num_items=self.sampler.num_items,
            item_domains=self.sampler.item_domains,
            nonfinite=self.nonfinite,
            step=step,
            progress=progress,
        )

    def _ratios(self, items: np.ndarray, draws: DrawMatch | None) -> np.ndarray:
        """p/q of the batch's items, q as they were drawn (the current q when unmatched)."""
        q = draws.q if draws is not None else self.sampler.probabilities(items)
        return self._composition.ratios(items, q)

    def _learn(self, batch: GlobalBatch, draws: DrawMatch | None, weights: np.ndarray) -> None:
        """What the host learns from a global batch: warnings, sources, draws consumed, the
        record. Checks first: a failure changes nothing."""
        if not batch.valid.all() and not self._record.masked_total:
            warn_nonfinite(batch)
        finite = batch.finite()
        for source in self.sources:  # every check before any change
            source.check_observe(finite)
        for source in self.sources:
            self._composition.route(source, source.observe(finite))
        if draws is not None:
            self.sampler.commit_draws(draws)
        self._record.observe(batch, weights, None if draws is None else draws.clock)

    def _settle(self) -> None:
        """Applies the host part of a deferred reduce() (waiting for its copies, long done by
        the time anything reads the state); an error drops the batch whole."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        self.sampler.before_draw = None
        if pending.event is not None:
            pending.event.synchronize()
        rows = pending.rows.numpy()
        batch, ranks = self._parse(rows, pending.keys, pending.step, pending.progress)
        draws = self.sampler.match_draws(batch.index, ranks)
        if pending.expected is not None and not np.array_equal(batch.index, pending.expected):
            raise ValueError(
                "reduce(): the batch's indices are not the next draws of reweighter.sampler, "
                "and its loss weights (computed on the GPU without reading the indices back) "
                "assumed they were; nothing of that batch was learnt. Draw training batches "
                "from reweighter.sampler and pass each to reduce() in order."
            )
        weights = pending.weights.numpy()
        _check_total(float(weights[-1]))
        self._learn(batch, draws, weights[:-1])

    def step(self) -> None:
        """Advances one optimizer step (call after ``optimizer.step()``): moves schedules to
        the new progress and lets each source act on the new step."""
        self._settle()
        if self.needs_total_steps and self.total_steps is None:
            raise ValueError(
                "this Reweighter has sources that read training progress, which needs the run's "
                "length; pass Reweighter(total_steps=...) or call set_total_steps() "
                "(ReweightCallback reads it from the Trainer)."
            )
        step = self.global_step + 1
        if step > MAX_STEP:
            raise ValueError(f"step {step} is beyond {MAX_STEP} (steps are stored as int32).")
        progress = self._progress_at(step, self.total_steps)
        probs = self._composition.domain_probs(progress)  # checks first: a failure changes nothing
        for source in self.sources:
            source.check_step(step, progress)
        self.global_step = step
        self.sampler.clock = step
        for source in self.sources:
            self._composition.route(source, source.on_step(step, progress))
        self._composition.apply(probs)

    # ------------------------------------------------------------------ diagnostics

    @property
    def last_loss_weights(self) -> np.ndarray:
        """The loss weights of the last global batch (finite entries only; a copy)."""
        self._settle()
        return self._record.last_weights.copy()

    def metrics(self) -> dict[str, float]:
        """Flat diagnostics for a logger (reads only): progress; the sampler's ESS, entropy,
        max/min ratio and lag; target / sampled / realised share and loss per domain; each
        source's metrics under its name; loss-weight ESS and max/min; masked losses."""
        self._settle()
        stats = self.sampler.stats()
        out = {
            "progress": float(self.progress),
            **{f"sampler/{key}": stats[key] for key in _SAMPLER_METRICS},
            "lag/prefetched_draws": float(self.sampler.draws_in_flight),
            **self._record.metrics(
                self.domain_names, self._composition.target_probs, stats["domain_probs"]
            ),
        }
        for source in self.sources:
            for key, value in source.metrics(self.global_step, self.progress).items():
                out[f"{source.name}/{key}"] = value
        return {k: float(v) for k, v in out.items() if np.isfinite(v)}

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Small, versioned state: step, run length, the batch record, every source's state,
        p's own masses and the sampler (its draws in flight are handed out again after a
        restore, so a resumed run continues as an uninterrupted one). Any rank's state is the
        whole state: every rank holds identical weights and every rank's position."""
        self._settle()
        return engine_state.state_of(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict`; a state from another configuration, or a corrupt or
        truncated one, raises ValueError naming the field and changes nothing. Restore before
        the DataLoader draws: the draws in flight at the checkpoint are handed out first. A
        saved run length is adopted when none is set; a different one set already is kept,
        with a warning."""
        self._settle()
        engine_state.restore(self, state)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Writes :meth:`state_dict` into the directory ``path`` without copying the per-item
        arrays (peak: steady memory plus one chunk, where ``torch.save(state_dict())`` holds a
        second copy of them); an existing directory is replaced once the new state is complete.
        For states of 10^8+ items; :meth:`load` reads it back. See :mod:`reweight.state_files`.

        Example:
            >>> import tempfile
            >>> rw = Reweighter(domains=[0, 1, 1], seed=1)
            >>> with tempfile.TemporaryDirectory() as tmp:
            ...     twin = Reweighter(domains=[0, 1, 1], seed=1)
            ...     twin.load(rw.save(tmp + "/rw"))
        """
        return state_files.save_state(self, path)

    def load(self, path: str | os.PathLike[str]) -> None:
        """Restores a state written by :meth:`save` (memory-mapped, validated, in place, as
        :meth:`load_state_dict`)."""
        state_files.load_state(self, path)
