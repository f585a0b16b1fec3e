"""Tests for reweight.distributed: single-process no-ops and a 2-process gloo run."""

from __future__ import annotations

import datetime
import doctest
from pathlib import Path

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

import reweight.distributed
from reweight.distributed import (
    all_gather_cat,
    all_reduce_sum,
    is_distributed,
    rank,
    world_size,
)
from tests.ranks import free_port


def test_doctests() -> None:
    result = doctest.testmod(reweight.distributed)
    assert result.attempted > 0
    assert result.failed == 0


# ---------------------------------------------------------------- one process


def test_single_process_identity() -> None:
    assert not is_distributed()
    assert world_size() == 1
    assert rank() == 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.int64, torch.int32])
def test_single_process_all_reduce_returns_a_copy(dtype: torch.dtype) -> None:
    x = torch.arange(4).to(dtype)
    out = all_reduce_sum(x)
    assert out.dtype == dtype
    assert torch.equal(out, x)
    out += 1
    assert torch.equal(x, torch.arange(4).to(dtype))  # input unchanged


def test_single_process_all_reduce_bool_counts() -> None:
    out = all_reduce_sum(torch.tensor([True, False]))
    assert out.dtype == torch.int64
    assert out.tolist() == [1, 0]


def test_single_process_all_gather_returns_a_copy() -> None:
    x = torch.randn(3, 2, dtype=torch.float64)
    out = all_gather_cat(x)
    assert out.dtype == torch.float64
    assert torch.equal(out, x)
    assert out.data_ptr() != x.data_ptr()
    assert all_gather_cat(torch.empty(0, 5)).shape == (0, 5)


def test_argument_errors() -> None:
    with pytest.raises(ValueError, match="0-d tensor"):
        all_gather_cat(torch.tensor(1.0))
    with pytest.raises(TypeError, match=r"expects a torch.Tensor, got list"):
        all_reduce_sum([1.0])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"expects a torch.Tensor, got int"):
        all_gather_cat(3)  # type: ignore[arg-type]


# ---------------------------------------------------------------- two processes (gloo)


def _worker(rank_: int, world: int, port: int, out_dir: str) -> None:
    tdist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank_,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        results: dict[str, object] = {
            "is_distributed": is_distributed(),
            "world_size": world_size(),
            "rank": rank(),
        }
        # float64 sum that float32 would round: 0.1 + 0.2 in double precision.
        x = torch.tensor([0.1, 1e-12], dtype=torch.float64) * (rank_ + 1)
        before = x.clone()
        results["reduce"] = all_reduce_sum(x)
        results["reduce_input_unchanged"] = torch.equal(x, before)
        results["reduce_int"] = all_reduce_sum(torch.tensor([rank_ + 1, 10]))
        results["reduce_bool"] = all_reduce_sum(torch.tensor([True, rank_ == 1]))

        # Different lengths per rank: rank 0 sends 3 items, rank 1 sends 5.
        n = 3 if rank_ == 0 else 5
        results["gather_1d"] = all_gather_cat(torch.arange(n) + 100 * rank_)
        results["gather_2d"] = all_gather_cat(torch.full((n, 2), float(rank_), dtype=torch.float64))
        results["gather_bool"] = all_gather_cat(torch.ones(n, dtype=torch.bool))
        # One rank sends nothing; then all ranks send nothing.
        m = 0 if rank_ == 0 else 4
        results["gather_empty_one"] = all_gather_cat(torch.arange(m, dtype=torch.int32))
        results["gather_empty_all"] = all_gather_cat(torch.empty(0, 3))
        torch.save(results, Path(out_dir) / f"rank{rank_}.pt")
    finally:
        tdist.destroy_process_group()


@pytest.mark.distributed
@pytest.mark.skipif(
    not (tdist.is_available() and tdist.is_gloo_available()), reason="gloo is not available"
)
def test_two_process_gloo(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)

    expected_1d = torch.tensor([0, 1, 2, 100, 101, 102, 103, 104])
    expected_2d = torch.cat(
        [torch.zeros(3, 2, dtype=torch.float64), torch.ones(5, 2, dtype=torch.float64)]
    )
    base = torch.tensor([0.1, 1e-12], dtype=torch.float64)
    expected_reduce = base * 1 + base * 2  # the order rank 0 + rank 1
    for r in range(2):
        res = torch.load(tmp_path / f"rank{r}.pt", weights_only=False)
        assert res["is_distributed"] is True
        assert res["world_size"] == 2
        assert res["rank"] == r

        assert res["reduce"].dtype == torch.float64
        torch.testing.assert_close(res["reduce"], expected_reduce, rtol=1e-15, atol=0)
        assert res["reduce_input_unchanged"] is True
        assert res["reduce_int"].tolist() == [3, 20]
        assert res["reduce_bool"].tolist() == [2, 1]

        assert res["gather_1d"].dtype == torch.int64
        assert torch.equal(res["gather_1d"], expected_1d)
        assert res["gather_2d"].dtype == torch.float64
        assert torch.equal(res["gather_2d"], expected_2d)
        assert res["gather_bool"].dtype == torch.bool
        assert res["gather_bool"].shape == (8,)
        assert bool(res["gather_bool"].all())
        assert res["gather_empty_one"].dtype == torch.int32
        assert res["gather_empty_one"].tolist() == [0, 1, 2, 3]
        assert res["gather_empty_all"].shape == (0, 3)


def test_collective_device_is_cpu_without_nccl() -> None:
    from reweight.distributed import collective_device

    assert collective_device() == torch.device("cpu")
