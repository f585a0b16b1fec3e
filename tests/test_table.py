"""Tests for reweight.table.LossTable: EMA, prior, staleness, priorities, state."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import rankdata

from reweight.table import PRIORITY_METHODS, LossTable

# ---------------------------------------------------------------- a brute-force reference


class ReferenceTable:
    """The table's semantics in plain Python dicts (no vectorisation, no running sums)."""

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.ema: dict[int, float] = {}
        self.last: dict[int, int] = {}

    def update(self, index: list[int], losses: list[float], step: int) -> None:
        groups: dict[int, list[float]] = {}
        for i, loss in zip(index, losses, strict=True):
            if math.isfinite(loss):
                groups.setdefault(i, []).append(loss)
        for i, values in groups.items():
            mean = sum(values) / len(values)
            old = self.ema.get(i)
            new = mean if old is None else self.decay * old + (1 - self.decay) * mean
            self.ema[i] = float(np.float32(new))
            self.last[i] = step

    def prior(self) -> float:
        return sum(self.ema.values()) / len(self.ema) if self.ema else 0.0


def filled(losses: list[float], *, decay: float = 0.0, **kwargs: object) -> LossTable:
    table = LossTable(len(losses), decay=decay, **kwargs)  # type: ignore[arg-type]
    table.update(np.arange(len(losses)), np.array(losses), step=0)
    return table


# ---------------------------------------------------------------- EMA


def test_ema_against_hand_computation() -> None:
    table = LossTable(3, decay=0.8)
    table.update([0, 1], [2.0, 5.0], step=0)
    table.update([0], [4.0], step=1)
    table.update([0, 2], [1.0, 7.0], step=3)
    # item 0: 2 → 0.8·2 + 0.2·4 = 2.4 → 0.8·2.4 + 0.2·1 = 2.12; item 1: 5; item 2: 7
    got = table.estimates([0, 1, 2], step=3)
    assert got.tolist() == pytest.approx([2.12, 5.0, 7.0], rel=1e-6)
    assert table.step == 3
    assert table.state_dict()["last_seen"].tolist() == [3, 0, 3]


def test_decay_zero_keeps_the_latest_loss() -> None:
    table = LossTable(2, decay=0.0)
    table.update([0], [2.0], step=0)
    table.update([0], [9.0], step=1)
    assert table.estimates([0], step=1).tolist() == [9.0]


def test_duplicates_are_averaged_into_one_observation() -> None:
    table = LossTable(2, decay=0.5)
    table.update([1], [4.0], step=0)
    table.update([1, 0, 1, 1], [1.0, 3.0, 2.0, 6.0], step=1)
    # item 1: one observation of mean(1, 2, 6) = 3 → 0.5·4 + 0.5·3 = 3.5
    assert table.estimates([0, 1], step=1).tolist() == [3.0, 3.5]


def test_duplicate_handling_is_order_free() -> None:
    index = np.array([3, 1, 3, 0, 1, 3])
    losses = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    perm = np.random.default_rng(0).permutation(index.size)
    a, b = LossTable(4, decay=0.3), LossTable(4, decay=0.3)
    for t in (a, b):
        t.update([0, 1, 2, 3], [1.0, 1.0, 1.0, 1.0], step=0)
    a.update(index, losses, step=1)
    b.update(index[perm], losses[perm], step=1)
    assert np.array_equal(a.state_dict()["ema"].numpy(), b.state_dict()["ema"].numpy())


def test_non_finite_losses_are_ignored_and_counted() -> None:
    table = LossTable(4, decay=0.5)
    assert table.update([0, 1, 2], [1.0, math.nan, math.inf], step=0) == 2
    assert table.update([0, 3, 0], [-math.inf, 2.0, 3.0], step=1) == 1
    assert table.num_nonfinite == 3
    # item 0: 1 → 0.5·1 + 0.5·3 (the −inf dropped); items 1, 2 never seen
    assert table.num_seen == 2
    assert table.estimates([0, 3], step=1).tolist() == [2.0, 2.0]
    assert table.state_dict()["last_seen"].tolist() == [1, -1, -1, 1]


def test_losses_beyond_float32_are_clipped() -> None:
    table = LossTable(2)
    table.update([0, 1], [1e300, -1e300], step=0)
    est = table.estimates([0, 1], step=0)
    assert np.isfinite(est).all()
    assert est[0] == pytest.approx(float(np.finfo(np.float32).max))
    table.refresh(0)
    assert np.isfinite(table.all_priorities(0, method="softmax")).all()


def test_torch_inputs_are_accepted() -> None:
    table = LossTable(3, decay=0.0)
    table.update(torch.tensor([0, 2]), torch.tensor([1.5, 2.5], requires_grad=True), step=0)
    assert table.estimates(torch.tensor([2]), step=0).tolist() == [2.5]


def test_empty_batch_is_a_no_op_but_advances_the_step() -> None:
    table = LossTable(3)
    assert table.update(np.array([], dtype=np.int64), np.array([]), step=5) == 0
    assert table.num_seen == 0 and table.step == 5


@settings(max_examples=40, deadline=None)
@given(
    decay=st.sampled_from([0.0, 0.5, 0.9]),
    batches=st.lists(
        st.lists(
            st.tuples(
                st.integers(0, 9),
                st.one_of(
                    st.floats(-100, 100, allow_nan=False),
                    st.sampled_from([math.nan, math.inf, -math.inf]),
                ),
            ),
            max_size=12,
        ),
        min_size=1,
        max_size=8,
    ),
)
def test_table_matches_a_brute_force_reference(
    decay: float, batches: list[list[tuple[int, float]]]
) -> None:
    table, ref = LossTable(10, decay=decay), ReferenceTable(decay)
    bad = 0
    for step, batch in enumerate(batches):
        index = [i for i, _ in batch]
        losses = [x for _, x in batch]
        bad += sum(not math.isfinite(x) for x in losses)
        table.update(np.array(index, dtype=np.int64), np.array(losses), step=2 * step)
        ref.update(index, losses, 2 * step)
    assert table.num_nonfinite == bad
    assert table.num_seen == len(ref.ema)
    assert table.coverage() == len(ref.ema) / 10
    assert table.prior_value() == pytest.approx(ref.prior(), rel=1e-9, abs=1e-9)
    step = 2 * len(batches)
    got = table.estimates(np.arange(10), step=step)
    for i in range(10):
        assert got[i] == pytest.approx(ref.ema.get(i, ref.prior()), rel=1e-6, abs=1e-6)
    if ref.last:
        mean_age = sum(step - s for s in ref.last.values()) / len(ref.last)
        assert table.staleness(step)["mean"] == pytest.approx(mean_age)
        table.refresh(step)
        assert table.staleness(step)["max"] == max(step - s for s in ref.last.values())


# ---------------------------------------------------------------- prior and relaxation


def test_mean_prior_tracks_the_mean_of_seen_emas() -> None:
    rng = np.random.default_rng(1)
    table = LossTable(1000, decay=0.7)
    for step in range(20):
        index = rng.integers(0, 1000, size=64)
        table.update(index, rng.gamma(2.0, 1.5, size=64), step=step)
        if step % 5 == 0:
            ema = table.state_dict()["ema"].numpy()
            seen = table.state_dict()["last_seen"].numpy() >= 0
            assert table.prior_value() == pytest.approx(
                float(ema[seen].mean(dtype=np.float64)), rel=1e-9
            )
    unseen = np.flatnonzero(table.state_dict()["last_seen"].numpy() < 0)
    assert unseen.size > 0
    assert np.all(table.estimates(unseen, step=20) == table.prior_value())


def test_constant_prior_and_prior_before_anything_is_seen() -> None:
    assert LossTable(3).prior_value() == 0.0
    table = LossTable(3, prior=2.5)
    table.update([0], [10.0], step=0)
    assert table.prior_value() == 2.5
    assert table.estimates([0, 1], step=0).tolist() == [10.0, 2.5]


def test_stale_entries_relax_toward_the_prior() -> None:
    table = LossTable(3, decay=0.0, prior=1.0, relax_steps=100)
    table.update([0], [5.0], step=0)
    for step in (0, 50, 100, 400):
        expected = 1.0 + (5.0 - 1.0) * math.exp(-step / 100)
        assert table.estimates([0], step=step)[0] == pytest.approx(expected, rel=1e-12)
    # a step before the item was last seen counts as age 0
    table.update([1], [3.0], step=10)
    assert table.estimates([1], step=5)[0] == 3.0
    # no relaxation without relax_steps
    plain = LossTable(1, decay=0.0, prior=1.0)
    plain.update([0], [5.0], step=0)
    assert plain.estimates([0], step=10**6)[0] == 5.0


def test_relaxation_toward_the_mean_prior() -> None:
    table = LossTable(3, decay=0.0, relax_steps=10)
    table.update([0, 1], [2.0, 4.0], step=0)
    prior = 3.0
    got = table.estimates([0, 1, 2], step=10)
    w = math.exp(-1.0)
    assert got.tolist() == pytest.approx([prior - w, prior + w, prior])


# ---------------------------------------------------------------- coverage, staleness, memory


def test_coverage() -> None:
    table = LossTable(10)
    assert table.coverage() == 0.0
    table.update([1, 1, 2, 9], [1.0, 1.0, 1.0, 1.0], step=0)
    assert table.coverage() == 0.3
    table.update(np.arange(10), np.ones(10), step=1)
    assert table.coverage() == 1.0


def test_staleness_mean_exact_and_max_exact_after_refresh() -> None:
    table = LossTable(5)
    assert table.staleness(7) == {"mean": 0.0, "max": 0.0}
    table.update([0, 1, 2], [1.0, 1.0, 1.0], step=1)
    table.update([0, 3], [1.0, 1.0], step=4)
    table.update([1, 2], [1.0, 1.0], step=6)
    # last seen: 4, 6, 6, 4 → ages at 10: 6, 4, 4, 6
    s = table.staleness(10)
    assert s["mean"] == 5.0
    assert s["max"] >= 6.0  # bound between refreshes (oldest seen at the first update: 1)
    table.refresh(6)
    assert table.staleness(10) == {"mean": 5.0, "max": 6.0}


def test_memory_is_eight_bytes_per_item_plus_a_bounded_snapshot() -> None:
    for n, snapshot in ((10, 4096), (100_000, 4096), (1_000_000, 1 << 16)):
        table = LossTable(n, snapshot_size=snapshot)
        per_item = table.memory_bytes() - 4 * min(n, snapshot)
        assert per_item == 8 * n
        table.update(np.arange(min(n, 1000)), np.ones(min(n, 1000)), step=0)
        table.refresh(0)
        assert table.memory_bytes() - 4 * min(n, snapshot) == 8 * n
    state = LossTable(7).state_dict()
    assert state["ema"].dtype == torch.float32 and state["last_seen"].dtype == torch.int32


# ---------------------------------------------------------------- rank priorities


def test_rank_priorities_follow_loshchilov_hutter() -> None:
    rng = np.random.default_rng(2)
    losses = rng.permutation(np.linspace(0.1, 5.0, 50))
    table = filled(losses.tolist())
    table.refresh(0)
    p = table.all_priorities(0, pressure=100.0)
    rank = rankdata(-losses)  # 1 = highest loss
    expected = 100.0 ** (-(rank - 1) / (losses.size - 1))
    assert p == pytest.approx(expected, rel=1e-12)
    assert p.max() / p.min() == pytest.approx(100.0)
    assert np.array_equal(np.argsort(p, kind="stable"), np.argsort(losses, kind="stable"))


@settings(max_examples=30, deadline=None)
@given(
    losses=st.lists(st.floats(-1e3, 1e3, allow_nan=False, width=32), min_size=2, max_size=40),
    pressure=st.floats(1.0, 1e4),
)
def test_rank_priorities_are_monotone_with_mid_ranks_for_ties(
    losses: list[float], pressure: float
) -> None:
    table = filled(losses)
    table.refresh(0)
    p = table.all_priorities(0, pressure=pressure)
    x = np.array(losses, dtype=np.float32)
    order = np.argsort(x, kind="stable")
    assert np.all(np.diff(p[order]) >= -1e-15)
    expected = pressure ** (-(rankdata(-x) - 1) / (x.size - 1))
    assert p == pytest.approx(np.maximum(expected, 1e-6), rel=1e-9)
    for value in np.unique(x):
        assert np.ptp(p[x == value]) == 0.0  # ties share one priority


def test_unseen_items_share_the_prior_rank() -> None:
    table = LossTable(6, decay=0.0)
    table.update([0, 1], [1.0, 5.0], step=0)  # prior = 3 for items 2..5
    table.refresh(0)
    p = table.all_priorities(0, pressure=50.0)
    assert np.ptp(p[2:]) == 0.0
    assert p[1] == 1.0 and p[0] == pytest.approx(1 / 50.0)
    assert p[0] < p[2] < p[1]


def test_pressure_one_is_uniform() -> None:
    table = filled([3.0, 1.0, 2.0])
    table.refresh(0)
    assert table.all_priorities(0, pressure=1.0).tolist() == [1.0, 1.0, 1.0]


def test_before_the_first_refresh_every_item_sits_at_the_initial_prior() -> None:
    table = LossTable(4, decay=0.0, prior=1.0)
    table.update([0, 1], [0.5, 3.0], step=0)
    p = table.priorities([0, 1, 2], step=0, pressure=100.0)
    # snapshot "all items at 1.0": below → lowest, above → highest, at it → the middle
    assert p.tolist() == pytest.approx([0.01, 1.0, 0.1])
    assert table.snapshot_step == -1


def test_priorities_use_the_snapshot_until_the_next_refresh() -> None:
    table = filled([1.0, 2.0, 3.0, 4.0])
    table.refresh(0)
    table.update([0], [10.0], step=1)  # now the highest, ranked against the old snapshot
    assert table.priorities([0], step=1, pressure=10.0).tolist() == [1.0]
    assert table.priorities([3], step=1, pressure=10.0).tolist() == [1.0]
    table.refresh(1)
    assert table.priorities([3], step=1, pressure=10.0)[0] < 1.0


@pytest.mark.parametrize("method", PRIORITY_METHODS)
@pytest.mark.parametrize("snapshot_size", [2, 16, 1 << 16])
def test_priorities_agree_with_all_priorities(method: str, snapshot_size: int) -> None:
    rng = np.random.default_rng(3)
    table = LossTable(500, decay=0.5, relax_steps=40, snapshot_size=snapshot_size)
    for step in range(30):
        table.update(rng.integers(0, 500, 32), rng.exponential(2.0, 32), step=step)
    table.refresh(30)
    index = rng.integers(0, 500, 100)
    all_p = table.all_priorities(35, method=method, pressure=30.0, temperature=0.7)
    some = table.priorities(index, 35, method=method, pressure=30.0, temperature=0.7)
    assert np.array_equal(some, all_p[index])
    all32 = table.all_priorities(35, method=method, pressure=30.0, temperature=0.7, dtype="f4")
    assert all32.dtype == np.float32 and np.allclose(all32, all_p, rtol=1e-6)


def test_subsampled_snapshot_is_close_to_exact_ranks() -> None:
    rng = np.random.default_rng(4)
    n, k, pressure = 20_000, 256, 100.0
    losses = rng.lognormal(0.0, 1.0, n)
    exact = LossTable(n, decay=0.0, snapshot_size=n)
    approx = LossTable(n, decay=0.0, snapshot_size=k)
    for t in (exact, approx):
        t.update(np.arange(n), losses, step=0)
        t.refresh(0)
    assert approx.memory_bytes() == 8 * n + 4 * k
    p_exact, p_approx = exact.all_priorities(0, pressure=pressure), approx.all_priorities(0)
    log_error = np.abs(np.log(p_approx) - np.log(p_exact))
    assert log_error.max() <= math.log(pressure) * 1.0 / (k - 1) + 1e-9
    assert p_approx.max() == 1.0 and p_approx.min() == pytest.approx(1 / pressure)


# ---------------------------------------------------------------- softmax priorities and floors


def test_softmax_priorities_hand_computed() -> None:
    table = filled([3.0, 1.0, 2.0])
    table.refresh(0)
    p = table.all_priorities(0, method="softmax", temperature=2.0)
    assert p.tolist() == pytest.approx([1.0, math.exp(-1.0), math.exp(-0.5)])
    assert table.all_priorities(0, method="softmax", temperature=math.inf).tolist() == [1.0] * 3
    # an estimate above the snapshot's top is capped at 1
    table.update([1], [7.0], step=1)
    assert table.priorities([1], step=1, method="softmax").tolist() == [1.0]


def test_floors_keep_every_item_reachable() -> None:
    table = filled([0.0, 1000.0, 500.0])
    table.refresh(0)
    p = table.all_priorities(0, method="softmax", temperature=1.0)
    assert p.tolist() == [1e-6, 1.0, 1e-6]
    p = table.all_priorities(0, method="softmax", temperature=1.0, floor=0.01)
    assert p.tolist() == [0.01, 1.0, 0.01]
    p = table.all_priorities(0, method="rank", pressure=1e4, floor=0.05)
    assert p.tolist() == pytest.approx([0.05, 1.0, 0.05])  # 1e4^(−1) and 1e4^(−1/2) < 0.05
    p = table.all_priorities(0, method="softmax", temperature=1.0, floor=0.0)
    assert p[0] == 0.0  # floor 0 allows underflow


# ---------------------------------------------------------------- reads never mutate


def test_reads_do_not_mutate() -> None:
    table = LossTable(50, decay=0.5, relax_steps=5)
    rng = np.random.default_rng(5)
    table.update(rng.integers(0, 50, 20), rng.random(20), step=3)
    before = table.state_dict()
    table.estimates(np.arange(50), step=9)
    table.priorities(np.arange(50), step=9)
    table.all_priorities(9, method="softmax")
    table.staleness(9)
    table.coverage()
    table.prior_value()
    table.memory_bytes()
    after = table.state_dict()
    for key, value in before.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, after[key])
        else:
            assert value == after[key]


# ---------------------------------------------------------------- state


def test_state_round_trip_through_torch_save() -> None:
    rng = np.random.default_rng(6)
    table = LossTable(300, decay=0.8, relax_steps=25, snapshot_size=64)
    for step in range(20):
        table.update(rng.integers(0, 300, 40), rng.exponential(1.0, 40), step=step)
    table.update([0, 1], [math.nan, 1.0], step=20)
    table.refresh(20)
    buffer = io.BytesIO()
    torch.save(table.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    other = LossTable(300, decay=0.8, relax_steps=25, snapshot_size=64)
    other.load_state_dict(state)
    assert other.step == 20 and other.snapshot_step == 20 and other.num_nonfinite == 1
    assert other.num_seen == table.num_seen and other.prior_value() == table.prior_value()
    assert other.staleness(30) == table.staleness(30)
    assert np.array_equal(other.all_priorities(25), table.all_priorities(25))
    # both continue identically
    for t in (table, other):
        t.update([5, 6, 5], [3.0, 2.0, 1.0], step=21)
        t.refresh(21)
    assert np.array_equal(other.all_priorities(22), table.all_priorities(22))
    assert np.array_equal(other.estimates(np.arange(300), 22), table.estimates(np.arange(300), 22))


def test_state_holds_copies() -> None:
    table = LossTable(3)
    state = table.state_dict()
    table.update([0], [5.0], step=0)
    assert state["ema"].tolist() == [0.0, 0.0, 0.0]
    assert state["last_seen"].tolist() == [-1, -1, -1]


def test_state_accepts_numpy_arrays() -> None:
    table = LossTable(4, decay=0.0)
    table.update([1, 2], [1.0, 2.0], step=3)
    state = {
        k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in table.state_dict().items()
    }
    other = LossTable(4, decay=0.0)
    other.load_state_dict(state)
    assert other.estimates([1, 2], step=3).tolist() == [1.0, 2.0]


def _corrupt(key: str, value: object) -> dict[str, object]:
    table = LossTable(4)
    table.update([0, 1], [1.0, 2.0], step=2)
    state = dict(table.state_dict())
    state[key] = value
    return state


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("num_items", 5, "num_items=5 but this table has 4"),
        ("version", 99, "version 99 is not supported"),
        ("ema", torch.zeros(3), "'ema' must be float32 of shape"),
        ("ema", torch.zeros(4, dtype=torch.float64), "'ema' must be float32"),
        ("ema", torch.tensor([0.0, math.nan, 0.0, 0.0]), "non-finite"),
        ("last_seen", torch.tensor([0, 7, -1, -1], dtype=torch.int32), "must lie in"),
        ("last_seen", torch.tensor([0, -2, -1, -1], dtype=torch.int32), "must lie in"),
        ("snapshot", torch.tensor([2.0, 1.0, 3.0, 4.0]), "sorted ascending"),
        ("snapshot", torch.tensor([1.0, 2.0]), r"'snapshot' must be float32 of shape \(4,\)"),
        ("snapshot", torch.zeros(9), "9 entries, expected 4"),
        ("step", -5, "step must lie in"),
        ("num_nonfinite", -1, "num_nonfinite"),
    ],
)
def test_bad_state_raises_and_changes_nothing(key: str, value: object, match: str) -> None:
    table = LossTable(4, decay=0.0)
    table.update([3], [9.0], step=1)
    before = table.state_dict()
    with pytest.raises(ValueError, match=match):
        table.load_state_dict(_corrupt(key, value))
    after = table.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]) if isinstance(v, torch.Tensor) else v == after[k]


def test_bad_state_shapes_raise() -> None:
    table = LossTable(4)
    with pytest.raises(ValueError, match="not a LossTable state"):
        table.load_state_dict({"ema": 1})
    state = _corrupt("ema", torch.zeros(4))
    del state["snapshot"]
    with pytest.raises(ValueError, match="lacks key"):
        table.load_state_dict(state)


# ---------------------------------------------------------------- bad inputs


def test_index_out_of_range_raises() -> None:
    table = LossTable(5)
    with pytest.raises(ValueError, match=r"index\[1\] = 5, but the table holds items 0..4"):
        table.update([0, 5], [1.0, 1.0], step=0)
    with pytest.raises(ValueError, match=r"index\[0\] = -1"):
        table.estimates([-1], step=0)
    with pytest.raises(ValueError, match="out of range"):
        table.priorities([7], step=0)
    assert table.num_seen == 0 and table.step == -1


def test_bad_index_and_loss_types_raise() -> None:
    table = LossTable(5)
    with pytest.raises(TypeError, match="integers"):
        table.update(np.array([0.0, 1.0]), [1.0, 1.0], step=0)
    with pytest.raises(ValueError, match="1-D"):
        table.update(np.zeros((2, 2), dtype=int), np.ones(4), step=0)
    with pytest.raises(TypeError, match="real numbers"):
        table.update([0], [True], step=0)


def test_length_mismatch_raises_without_mutation() -> None:
    table = LossTable(5)
    with pytest.raises(ValueError, match=r"losses have shape \(3,\) but index has 2 entries"):
        table.update([0, 1], [1.0, 2.0, 3.0], step=0)
    assert table.num_seen == 0


@pytest.mark.parametrize(
    ("step", "error"),
    [(-1, ValueError), (2**31, ValueError), (1.5, TypeError), (True, TypeError), ("3", TypeError)],
)
def test_bad_step_raises(step: object, error: type[Exception]) -> None:
    table = LossTable(3)
    with pytest.raises(error, match="step"):
        table.update([0], [1.0], step=step)  # type: ignore[arg-type]
    with pytest.raises(error, match="step"):
        table.estimates([0], step=step)  # type: ignore[arg-type]
    with pytest.raises(error, match="step"):
        table.refresh(step)  # type: ignore[arg-type]
    assert table.step == -1


def test_step_going_backwards_raises() -> None:
    table = LossTable(3)
    table.update([0], [1.0], step=5)
    table.update([1], [1.0], step=5)  # same step is fine (gradient accumulation)
    with pytest.raises(ValueError, match="step 4 is earlier than the latest update's step 5"):
        table.update([2], [1.0], step=4)
    assert table.num_seen == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_items": 0}, ValueError, "num_items must be >= 1"),
        ({"num_items": 2.0}, TypeError, "num_items must be an integer"),
        ({"decay": 1.0}, ValueError, "decay must lie in"),
        ({"decay": -0.1}, ValueError, "decay must lie in"),
        ({"prior": "median"}, ValueError, "prior must be 'mean' or a finite number"),
        ({"prior": math.inf}, ValueError, "prior must be"),
        ({"relax_steps": 0}, ValueError, "relax_steps"),
        ({"relax_steps": math.nan}, ValueError, "relax_steps"),
        ({"snapshot_size": 1}, ValueError, "snapshot_size must be >= 2"),
    ],
)
def test_bad_constructor_arguments(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    args: dict[str, object] = {"num_items": 4, **kwargs}
    with pytest.raises(error, match=match):
        LossTable(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "topk"}, "unknown priority method 'topk'; valid names: rank, softmax"),
        ({"pressure": 0.5}, "pressure must be a finite number >= 1"),
        ({"pressure": math.inf}, "pressure"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"floor": 1.5}, "floor must lie in"),
        ({"floor": -0.1}, "floor must lie in"),
    ],
)
def test_bad_priority_arguments(kwargs: dict[str, object], match: str) -> None:
    table = LossTable(4)
    with pytest.raises(ValueError, match=match):
        table.priorities([0], step=0, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=match):
        table.all_priorities(0, **kwargs)  # type: ignore[arg-type]


def test_bad_all_priorities_dtype() -> None:
    with pytest.raises(ValueError, match="float64 or float32"):
        LossTable(2).all_priorities(0, dtype=np.int32)


# ---------------------------------------------------------------- scale


@pytest.mark.slow
def test_ten_million_items() -> None:
    n = 10_000_000
    table = LossTable(n, decay=0.9, relax_steps=1000)
    assert table.memory_bytes() == 8 * n + 4 * (1 << 16)
    rng = np.random.default_rng(7)
    for step in range(5):
        table.update(rng.integers(0, n, 100_000), rng.exponential(1.0, 100_000), step=step)
    table.refresh(5)
    p = table.all_priorities(5, pressure=100.0, dtype=np.float32)
    assert p.shape == (n,) and np.isfinite(p).all() and p.min() >= 1e-6
    index = rng.integers(0, n, 1000)
    assert np.allclose(table.priorities(index, 5), p[index], rtol=1e-6)
    assert 0.0 < table.coverage() < 0.06


# ------------------------------------------------------------ without last-seen steps


@pytest.mark.parametrize("prior", ["mean", 0.5])
@pytest.mark.parametrize("decay", [0.0, 0.9])
def test_a_table_without_last_seen_steps_gives_the_same_estimates_and_priorities(
    prior: Any, decay: float
) -> None:
    n = 500
    tracked = LossTable(n, decay=decay, prior=prior, snapshot_size=64)
    compact = LossTable(n, decay=decay, prior=prior, snapshot_size=64, track_last_seen=False)
    assert compact.memory_bytes() == 4 * n + 4 * 64
    assert tracked.memory_bytes() == 8 * n + 4 * 64
    rng = np.random.default_rng(7)
    everything = np.arange(n)
    for step in range(12):
        index = rng.integers(0, n, 40)  # repeats within a batch
        losses = rng.exponential(2.0, 40)
        losses[rng.random(40) < 0.1] = np.nan  # ignored by both
        assert tracked.update(index, losses, step) == compact.update(index, losses, step)
        if step % 4 == 3:
            tracked.refresh(step)
            compact.refresh(step)
        assert compact.num_seen == tracked.num_seen
        assert compact.prior_value() == tracked.prior_value()
        np.testing.assert_array_equal(
            compact.estimates(everything, step), tracked.estimates(everything, step)
        )
        for method in ("rank", "softmax"):
            np.testing.assert_array_equal(
                compact.all_priorities(step, method=method, dtype=np.float32),
                tracked.all_priorities(step, method=method, dtype=np.float32),
            )
            np.testing.assert_array_equal(
                compact.priorities(index, step, method=method),
                tracked.priorities(index, step, method=method),
            )


def test_a_table_without_last_seen_steps_refuses_what_needs_them() -> None:
    with pytest.raises(ValueError, match=r"relax_steps=10\.0 needs each item's last-seen step"):
        LossTable(3, relax_steps=10, track_last_seen=False)
    with pytest.raises(TypeError, match="track_last_seen must be True or False"):
        LossTable(3, track_last_seen="no")  # type: ignore[arg-type]
    table = LossTable(3, track_last_seen=False)
    with pytest.raises(ValueError, match="track_last_seen=True"):
        table.staleness(0)


def test_states_with_and_without_last_seen_steps_round_trip_and_refuse_each_other() -> None:
    compact = LossTable(4, decay=0.5, track_last_seen=False)
    compact.update([0, 2], [1.0, 3.0], step=2)
    compact.refresh(2)
    state = compact.state_dict()
    assert state["last_seen"] is None
    assert np.isnan(state["ema"].numpy()[[1, 3]]).all()
    twin = LossTable(4, decay=0.5, track_last_seen=False)
    twin.load_state_dict(state)
    assert twin.num_seen == 2 and twin.prior_value() == 2.0
    np.testing.assert_array_equal(twin.estimates(range(4), 2), compact.estimates(range(4), 2))

    tracked = LossTable(4, decay=0.5)
    before = tracked.state_dict()
    with pytest.raises(ValueError, match="track_last_seen=False, as the run saved"):
        tracked.load_state_dict(state)
    tracked.update([1], [5.0], step=1)
    with pytest.raises(ValueError, match="track_last_seen=True, as the run saved"):
        twin.load_state_dict(tracked.state_dict())
    bad = {**state, "ema": torch.tensor([1.0, float("inf"), 3.0, float("nan")])}
    with pytest.raises(ValueError, match="finite or NaN"):
        twin.load_state_dict(bad)
    assert twin.num_seen == 2
    assert LossTable(4, decay=0.5).state_dict().keys() == before.keys()
