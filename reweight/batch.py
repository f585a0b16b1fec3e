"""The global batch: per-sample losses, indices, ranks and batch columns as rows, gathered across
ranks (a no-op on one process) and checked, and the warnings about what a batch carries."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from reweight import distributed
from reweight.data import require_index
from reweight.sources.base import GlobalBatch

__all__ = [
    "check_index",
    "gather_rows",
    "local_rows",
    "parse_rows",
    "warn_nonfinite",
    "warn_unmatched",
]


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


def local_rows(
    per_sample_loss: Any, batch: Any, keys: Sequence[str]
) -> tuple[torch.Tensor, list[str]]:
    """The local batch as float64 rows (loss, index, rank, then the ``keys`` the batch carries)
    on the loss's device, and those keys. Checks shapes only: nothing is read back to the host
    (the indices are range-checked by :func:`parse_rows`)."""
    index = require_index(batch)
    if not isinstance(per_sample_loss, torch.Tensor):
        raise TypeError(f"per_sample_loss must be a tensor, got {type(per_sample_loss)}.")
    if per_sample_loss.dim() != 1 or per_sample_loss.numel() != index.numel():
        raise ValueError(
            f"per_sample_loss has shape {tuple(per_sample_loss.shape)} but the batch has "
            f"{index.numel()} indices; compute the loss with reduction='none' (one value per "
            "sample) and average any extra dimensions per sample first."
        )
    device, f64 = per_sample_loss.device, torch.float64
    loss = per_sample_loss.detach().to(device=device, dtype=f64)
    columns = [loss, index.detach().to(device=device, dtype=f64)]
    columns.append(torch.full_like(loss, distributed.rank()))
    present = [key for key in keys if isinstance(batch, Mapping) and key in batch]
    for key in present:
        column = torch.as_tensor(batch[key]).detach().to(device=device, dtype=f64).reshape(-1)
        if column.numel() != loss.numel():
            raise ValueError(
                f"batch[{key!r}] has {column.numel()} values for {loss.numel()} samples; give "
                "one per sample."
            )
        columns.append(column)
    return torch.stack(columns, dim=1), present


def gather_rows(local: torch.Tensor) -> np.ndarray:
    """Every rank's rows (:func:`local_rows`), all-gathered, on the host."""
    return distributed.all_gather_cat(local.to(distributed.collective_device())).cpu().numpy()


def parse_rows(
    rows: np.ndarray,
    keys: Sequence[str],
    *,
    num_items: int,
    item_domains: Callable[[np.ndarray], np.ndarray],
    nonfinite: str,
    step: int,
    progress: float,
) -> tuple[GlobalBatch, np.ndarray]:
    """The global batch of gathered rows and the rank of each of its samples.

    Checks the indices, and raises on non-finite losses when ``nonfinite="raise"`` or when
    every loss is bad. Changes nothing.
    """
    idx, losses = check_index(rows[:, 1].astype(np.int64), num_items), rows[:, 0]
    valid = np.isfinite(losses)
    if not valid.all() and (nonfinite == "raise" or not valid.any()):
        raise ValueError(
            f"{int((~valid).sum())} of {losses.size} per-sample losses are NaN or inf (e.g. "
            f"{float(losses[~valid][0])!r}); fix the loss or lower the learning rate — nothing "
            "was updated." + ("" if valid.any() else " (Every loss of the batch was bad.)")
        )
    extra = {key: rows[:, 3 + i] for i, key in enumerate(keys)}
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
