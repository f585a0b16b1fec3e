"""Collective helpers that are no-ops on a single process.

Every function here works the same way with or without ``torch.distributed``: when the default
process group is not initialised (or there is only one process) they return what a one-process
collective would return, without touching ``torch.distributed``. They are used by the engine to
make every rank hold identical weights (per-sample losses are all-gathered before any update).

Example:
    >>> import torch
    >>> from reweight import distributed as dist
    >>> dist.world_size(), dist.rank(), dist.is_distributed()
    (1, 0, False)
    >>> dist.all_gather_cat(torch.tensor([1, 2, 3]))
    tensor([1, 2, 3])
"""

from __future__ import annotations

import torch
import torch.distributed as tdist

__all__ = [
    "all_gather_cat",
    "all_reduce_sum",
    "collective_device",
    "is_distributed",
    "rank",
    "world_size",
]


def _initialized() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def world_size() -> int:
    """Number of processes in the default process group (1 when not distributed).

    Returns:
        The world size, or 1 when ``torch.distributed`` is unavailable or not initialised.

    Example:
        >>> from reweight.distributed import world_size
        >>> world_size()
        1
    """
    return tdist.get_world_size() if _initialized() else 1


def rank() -> int:
    """Rank of this process in the default process group (0 when not distributed).

    Returns:
        The global rank, or 0 when ``torch.distributed`` is unavailable or not initialised.

    Example:
        >>> from reweight.distributed import rank
        >>> rank()
        0
    """
    return tdist.get_rank() if _initialized() else 0


def is_distributed() -> bool:
    """Whether collectives actually communicate: a process group exists with more than one rank.

    Returns:
        True only when ``torch.distributed`` is initialised and the world size is above 1.

    Example:
        >>> from reweight.distributed import is_distributed
        >>> is_distributed()
        False
    """
    return _initialized() and tdist.get_world_size() > 1


def collective_device() -> torch.device:
    """Where tensors must live for this process group's collectives: the current CUDA device
    under NCCL (which only moves GPU tensors), the CPU otherwise (gloo, MPI, one process).

    Example:
        >>> from reweight.distributed import collective_device
        >>> collective_device()
        device(type='cpu')
    """
    if is_distributed() and tdist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _check_tensor(t: object, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(
            f"{name} expects a torch.Tensor, got {type(t).__name__}: {t!r}. "
            "Convert it first, e.g. torch.as_tensor(value)."
        )
    return t


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of ``t`` over all ranks, returned as a new tensor.

    The input is left unchanged. The dtype (float64 included) and device are kept, except that a
    bool tensor is counted and returned as int64. Every rank must pass a tensor of the same shape
    and dtype. On one process this is a copy of ``t``.

    Args:
        t: The tensor to sum.

    Returns:
        A new tensor holding the sum over ranks.

    Raises:
        TypeError: If ``t`` is not a tensor.

    Example:
        >>> import torch
        >>> from reweight.distributed import all_reduce_sum
        >>> x = torch.tensor([0.5, 1.5], dtype=torch.float64)
        >>> all_reduce_sum(x)
        tensor([0.5000, 1.5000], dtype=torch.float64)
    """
    t = _check_tensor(t, "all_reduce_sum")
    out = t.detach().clone(memory_format=torch.contiguous_format)
    if out.dtype == torch.bool:
        # A sum of booleans is a count: int64, on one process and many alike.
        out = out.to(torch.int64)
    if not is_distributed():
        return out
    tdist.all_reduce(out, op=tdist.ReduceOp.SUM)
    return out


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate along dim 0 the tensors of all ranks, in rank order.

    Ranks may pass different lengths along dim 0 (including zero); all other dimensions, the
    dtype and the device must agree across ranks. Sizes are gathered first, each tensor is padded
    to the longest, the padded tensors are gathered, then trimmed and concatenated. Works with
    gloo on CPU and NCCL on GPU; dtype and device are kept. On one process this is
    ``t.clone()``.

    Args:
        t: A tensor with at least one dimension.

    Returns:
        A new tensor of length ``sum of the ranks' lengths`` along dim 0.

    Raises:
        TypeError: If ``t`` is not a tensor.
        ValueError: If ``t`` is 0-dimensional.

    Example:
        >>> import torch
        >>> from reweight.distributed import all_gather_cat
        >>> all_gather_cat(torch.arange(3.0))
        tensor([0., 1., 2.])
    """
    t = _check_tensor(t, "all_gather_cat")
    if t.dim() == 0:
        raise ValueError(
            f"all_gather_cat needs a tensor with at least one dimension, got a 0-d tensor {t!r}. "
            "Use t.reshape(1) to gather scalars."
        )
    if not is_distributed():
        return t.detach().clone()

    n = world_size()
    x = t.detach().contiguous()
    is_bool = x.dtype == torch.bool
    if is_bool:
        x = x.to(torch.uint8)

    local_len = torch.tensor([x.shape[0]], dtype=torch.int64, device=x.device)
    lens = [torch.zeros_like(local_len) for _ in range(n)]
    tdist.all_gather(lens, local_len)
    sizes = [int(size) for size in torch.cat(lens).tolist()]  # one device sync, not n
    max_len = max(sizes)
    if max_len == 0:
        return t.detach().clone()

    if x.shape[0] < max_len:
        pad = x.new_zeros((max_len - x.shape[0], *x.shape[1:]))
        x = torch.cat([x, pad], dim=0)
    buffers = [torch.empty_like(x) for _ in range(n)]
    tdist.all_gather(buffers, x)
    out = torch.cat([b[:s] for b, s in zip(buffers, sizes, strict=True)], dim=0)
    return out.to(torch.bool) if is_bool else out
