"""The global batch: per-sample losses, indices, ranks and batch columns, checked and gathered
across ranks (a no-op on one process), and the warnings about what a batch carries."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from reweight import distributed
from reweight.data import require_index
from reweight.sources.base import GlobalBatch

__all__ = ["check_index", "gather_batch", "warn_nonfinite", "warn_unmatched"]


def check_index(index: Any, num_items: int) -> np.ndarray:
    """Item indices as a 1-D int64 array; ValueError (not IndexError) when out of range.

    Example:
        >>> check_index([2, 0], 3).tolist()
        [2, 0]
    """
    if isinstance(index, torch.Tensor):
        index = index.detach().cpu().numpy()
    idx = np.asarray(index).reshape(-1)
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"item indices must be integers, got dtype {idx.dtype}.")
    idx = idx.astype(np.int64)
    bad = (idx < 0) | (idx >= num_items)
    if bad.any():
        raise ValueError(
            f"batch index {int(idx[bad][0])} is outside 0..{num_items - 1}; the batch must come "
            "from the dataset the Reweighter was built for."
        )
    return idx


def _local_columns(
    per_sample_loss: Any, batch: Any, keys: Sequence[str], num_items: int
) -> tuple[list[torch.Tensor], list[str]]:
    index = require_index(batch)
    if not isinstance(per_sample_loss, torch.Tensor):
        raise TypeError(f"per_sample_loss must be a tensor, got {type(per_sample_loss)}.")
    if per_sample_loss.dim() != 1 or per_sample_loss.numel() != index.numel():
        raise ValueError(
            f"per_sample_loss has shape {tuple(per_sample_loss.shape)} but the batch has "
            f"{index.numel()} indices; compute the loss with reduction='none' (one value per "
            "sample) and average any extra dimensions per sample first."
        )
    local_idx = index.detach().cpu().to(torch.int64)
    check_index(local_idx, num_items)
    loss = per_sample_loss.detach().to(device="cpu", dtype=torch.float64)
    columns = [loss, local_idx.to(torch.float64), torch.full_like(loss, distributed.rank())]
    present = [key for key in keys if isinstance(batch, Mapping) and key in batch]
    for key in present:
        column = torch.as_tensor(batch[key]).detach().cpu().to(torch.float64).reshape(-1)
        if column.numel() != loss.numel():
            raise ValueError(
                f"batch[{key!r}] has {column.numel()} values for {loss.numel()} samples; give "
                "one per sample."
            )
        columns.append(column)
    return columns, present


def gather_batch(
    per_sample_loss: torch.Tensor,
    batch: Any,
    *,
    keys: Sequence[str],
    num_items: int,
    item_domains: Callable[[np.ndarray], np.ndarray],
    nonfinite: str,
    step: int,
    progress: float,
) -> tuple[GlobalBatch, np.ndarray]:
    """The global batch and the rank of each of its samples.

    Checks the local batch (an ``index``, one loss per sample, the optional ``keys`` one value
    per sample), all-gathers it, and raises on non-finite losses when ``nonfinite="raise"``
    or when every loss is bad.
    """
    columns, present = _local_columns(per_sample_loss, batch, keys, num_items)
    local = torch.stack(columns, dim=1).to(distributed.collective_device())
    rows = distributed.all_gather_cat(local).cpu().numpy()
    idx, losses = rows[:, 1].astype(np.int64), rows[:, 0]
    valid = np.isfinite(losses)
    if not valid.all() and (nonfinite == "raise" or not valid.any()):
        raise ValueError(
            f"{int((~valid).sum())} of {losses.size} per-sample losses are NaN or inf (e.g. "
            f"{float(losses[~valid][0])!r}); fix the loss or lower the learning rate — nothing "
            "was updated." + ("" if valid.any() else " (Every loss of the batch was bad.)")
        )
    extra = {key: rows[:, 3 + i] for i, key in enumerate(present)}
    gathered = GlobalBatch(idx, item_domains(idx), losses, valid, extra, step, progress)
    return gathered, rows[:, 2].astype(np.int64)


def warn_nonfinite(batch: GlobalBatch) -> None:
    """The once-per-run warning that a batch's non-finite losses are masked."""
    bad = batch.losses[~batch.valid]
    warnings.warn(
        f"{bad.size} of {batch.losses.size} per-sample losses are NaN or inf (e.g. "
        f"{float(bad[0])!r}); they are masked out of the loss, the weights and every source "
        "(counted in metrics as guard/masked_losses). Fix the loss, or pass nonfinite='raise' "
        "to stop instead. Warned once.",
        RuntimeWarning,
        stacklevel=3,
    )


def warn_unmatched() -> None:
    """The once-per-run warning that a batch is not the sampler's next draws."""
    warnings.warn(
        "reduce(): the batch's indices are not the next draws of reweighter.sampler (a batch "
        "from another loader or sampler, or batches passed out of order), so its importance "
        "correction divides by the sampler's current q instead of the q each item was drawn "
        "with. Draw training batches from reweighter.sampler and pass each to reduce() in "
        "order. Warned once.",
        RuntimeWarning,
        stacklevel=3,
    )
