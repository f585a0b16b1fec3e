"""Validated states of the loss table and the domain rules (DESIGN: "a state is validated whole
before any of it is applied").

For every stateful part other than the sampler and the engine:

1. real states (before any observation, after NaN masking, after many steps, edge
   configurations) load, and the loaded object behaves exactly like the original;
2. fuzzing: a real state with one random corruption either raises ValueError/TypeError naming
   the corrupted field and leaves the object unchanged, or (a harmless corruption) loads into an
   object that still works;
3. the most important corruptions of each part, by name.
"""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reweight.mixing import (
    ODM,
    DomainRule,
    DoReMi,
    EndUpsample,
    FixedMixture,
    TemperatureRule,
    cooldown,
)
from reweight.table import LossTable
from reweight.table_state import exact_sum

# --------------------------------------------------------------------------- helpers


def assert_same(a: Any, b: Any, path: str = "state") -> None:
    """Recursive equality of states: tensors by torch.equal, arrays by np.array_equal."""
    if isinstance(a, Mapping):
        assert isinstance(b, Mapping) and set(a) == set(b), f"{path}: keys differ"
        for key in a:
            assert_same(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, f"{path}: type differs"
        assert torch.equal(a, b), f"{path}: {a} != {b}"
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and np.array_equal(a, b), f"{path}: {a} != {b}"
    else:
        assert type(a) is type(b) and a == b, f"{path}: {a!r} != {b!r}"


def torch_round_trip(state: Any) -> Any:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def leaf_paths(state: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key path of a state, nested mappings (EndUpsample's base) included."""
    out: list[tuple[str, ...]] = []
    for key, value in state.items():
        out.append((*prefix, key))
        if isinstance(value, Mapping):
            out.extend(leaf_paths(value, (*prefix, key)))
    return out


def get_path(state: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        state = state[key]
    return state


def set_path(state: dict[str, Any], path: tuple[str, ...], value: Any, drop: bool = False) -> None:
    for key in path[:-1]:
        state = state[key]
    if drop:
        del state[path[-1]]
    else:
        state[path[-1]] = value


# --------------------------------------------------------------------------- parts


def drive_rule(rule: DomainRule, steps: range, seed: int = 0) -> None:
    """Observes batches with a few non-finite losses; progress = step / 40."""
    k = rule.num_domains
    for step in steps:
        rng = np.random.default_rng([seed, step])
        domains = rng.integers(0, k, size=6)
        losses = rng.gamma(2.0, 1.0, size=6) + domains
        losses[rng.random(6) < 0.15] = np.nan
        rule.observe(domains, losses, progress=min(step / 40, 1.0))


def drive_table(table: LossTable, steps: range, seed: int = 0) -> None:
    """Updates with repeats, NaN/inf losses and negative losses; refreshes every 3 steps."""
    n = table.num_items
    for step in steps:
        rng = np.random.default_rng([seed, step])
        index = rng.integers(0, n, size=max(1, n // 4))
        losses = rng.normal(1.0, 2.0, size=index.size)
        losses[rng.random(index.size) < 0.1] = np.nan
        losses[rng.random(index.size) < 0.05] = np.inf
        table.update(index, losses, step=step)
        if step % 3 == 2:
            table.refresh(step=step)


def check_table_works(table: LossTable) -> None:
    step = max(table.step, 0)
    est = table.estimates(np.arange(table.num_items), step=step)
    assert np.isfinite(est).all()
    for method in ("rank", "softmax"):
        p = table.all_priorities(step, method=method)
        assert np.isfinite(p).all() and (p > 0).all() and (p <= 1).all()
    table.update([0], [1.0], step=step)
    table.refresh(step=step)


def check_rule_works(rule: DomainRule) -> None:
    for progress in (0.0, 0.5, 1.0):
        p = rule.probs(progress)
        assert p.shape == (rule.num_domains,) and np.isfinite(p).all() and (p >= 0).all()
        assert abs(p.sum() - 1.0) < 1e-9
    rule.metrics()
    drive_rule(rule, range(40, 43), seed=7)


@dataclass(frozen=True)
class Part:
    """A stateful part: how to build it, drive it, and check that it works."""

    build: Callable[[], Any]
    drive: Callable[[Any, range, int], None]
    works: Callable[[Any], None]
    compare: Callable[[Any, Any], None]

    def real(self, steps: int = 20, seed: int = 0) -> Any:
        obj = self.build()
        self.drive(obj, range(steps), seed)
        return obj


def compare_tables(a: LossTable, b: LossTable) -> None:
    assert_same(a.state_dict(), b.state_dict())
    step = max(a.step, 0)
    idx = np.arange(a.num_items)
    np.testing.assert_array_equal(a.estimates(idx, step), b.estimates(idx, step))
    for method in ("rank", "softmax"):
        np.testing.assert_array_equal(
            a.all_priorities(step, method=method), b.all_priorities(step, method=method)
        )
    assert a.staleness(step + 1) == b.staleness(step + 1)
    assert (a.num_seen, a.prior_value(), a.coverage()) == (
        b.num_seen,
        b.prior_value(),
        b.coverage(),
    )


def compare_rules(a: DomainRule, b: DomainRule) -> None:
    assert_same(a.state_dict(), b.state_dict())
    for progress in (0.0, 0.3, 0.9, 1.0):
        np.testing.assert_array_equal(a.probs(progress), b.probs(progress))
    assert str(a.metrics()) == str(b.metrics())


def table_part(**kwargs: Any) -> Part:
    n = kwargs.pop("num_items", 40)
    return Part(
        lambda: LossTable(n, **kwargs),
        drive_table,
        check_table_works,
        compare_tables,
    )


def rule_part(build: Callable[[], DomainRule]) -> Part:
    return Part(build, drive_rule, check_rule_works, compare_rules)


PARTS: dict[str, Part] = {
    "table": table_part(decay=0.5),
    "table_relax_small_snapshot": table_part(prior=0.5, relax_steps=4.0, snapshot_size=8),
    "doremi": rule_part(lambda: DoReMi(3, reference=[1.5, 2.0, 2.5])),
    "doremi_average": rule_part(
        lambda: DoReMi(4, reference=[1.0] * 4, eta=2.0, output="average", min_prob=0.05)
    ),
    "odm": rule_part(lambda: ODM(3, warmup_steps=5, update_every=2)),
    "odm_eta": rule_part(lambda: ODM(4, eta=1.0, warmup_steps=0, min_prob=0.0)),
    "end_upsample": rule_part(
        lambda: EndUpsample(DoReMi(3, reference=[1.5] * 3), fraction=0.2, factors={0: 3.0})
    ),
    "end_upsample_odm": rule_part(
        lambda: EndUpsample(ODM(3, warmup_steps=2), fraction=0.5, mixture=[1, 2, 3])
    ),
    "fixed": rule_part(lambda: FixedMixture([0.5, 0.3, 0.2])),
    "temperature": rule_part(lambda: TemperatureRule([900, 90, 10], cooldown())),
}


# --------------------------------------------------------------------------- 1. round trips


@pytest.mark.parametrize("name", sorted(PARTS))
@pytest.mark.parametrize("steps", [0, 1, 7, 20])
def test_real_state_round_trip_behaves_identically(name: str, steps: int) -> None:
    part = PARTS[name]
    original = part.real(steps)
    state = torch_round_trip(original.state_dict())
    resumed = part.real(3, seed=99)  # an object in another state, overwritten by the load
    resumed.load_state_dict(state)
    part.compare(resumed, original)
    # ... and keeps behaving identically
    part.drive(original, range(steps, steps + 10), 5)
    part.drive(resumed, range(steps, steps + 10), 5)
    part.compare(resumed, original)
    # a state loads into the object that saved it, changing nothing
    before = original.state_dict()
    original.load_state_dict(before)
    assert_same(original.state_dict(), before)


@pytest.mark.parametrize("name", sorted(PARTS))
def test_numpy_and_list_states_load(name: str) -> None:
    """A state converted to numpy arrays (and, for rules, lists) still loads."""
    original = PARTS[name].real(9)

    def convert(value: Any, lists: bool) -> Any:
        if isinstance(value, Mapping):
            return {k: convert(v, lists) for k, v in value.items()}
        if isinstance(value, torch.Tensor):
            return value.tolist() if lists else value.numpy()
        return value

    resumed = PARTS[name].build()
    resumed.load_state_dict(convert(original.state_dict(), lists=False))
    PARTS[name].compare(resumed, original)
    if isinstance(original, DomainRule):
        resumed = PARTS[name].build()
        resumed.load_state_dict(convert(original.state_dict(), lists=True))
        PARTS[name].compare(resumed, original)


def _load_everywhere(build: Callable[[], Any], obj: Any) -> None:
    fresh = build()
    fresh.load_state_dict(torch_round_trip(obj.state_dict()))
    assert_same(fresh.state_dict(), obj.state_dict())


def test_edge_case_real_table_states_load() -> None:
    """Tables of one item, all-NaN batches, huge and negative losses, steps at the int32 end."""
    cases: list[tuple[Callable[[], LossTable], Callable[[LossTable], Any]]] = [
        (lambda: LossTable(1), lambda t: None),
        (lambda: LossTable(1), lambda t: t.refresh(step=0)),
        (lambda: LossTable(5), lambda t: t.update([0, 1], [math.nan, math.inf], step=3)),
        (lambda: LossTable(5), lambda t: t.refresh(step=4)),  # refresh before any update
        (lambda: LossTable(5, prior=-2.0), lambda t: t.update([4], [-1e300], step=0)),
        (lambda: LossTable(5), lambda t: t.update([0, 0], [1e300, 1e300], step=2**31 - 1)),
        (lambda: LossTable(9, snapshot_size=2), lambda t: drive_table(t, range(6))),
        (lambda: LossTable(9, decay=0.0, relax_steps=1e-3), lambda t: drive_table(t, range(6))),
    ]
    for build, act in cases:
        table = build()
        act(table)
        _load_everywhere(build, table)


def test_edge_case_real_rule_states_load() -> None:
    """One domain, floors at 0 with collapsed weights, warm-up boundaries, long averages."""
    collapsed = DoReMi(3, reference=[0.0] * 3, eta=1e3, smoothing=0.0, min_prob=0.0)
    collapsed.observe([0, 1, 2], [10.0, 0.0, 0.0], progress=0.1)
    collapsed.observe([0, 1, 2], [10.0, 0.0, 0.0], progress=0.2)
    assert (collapsed.probs(0.2) == 0).any()  # exact zeros are legitimate with min_prob=0
    _load_everywhere(
        lambda: DoReMi(3, reference=[0.0] * 3, eta=1e3, smoothing=0.0, min_prob=0.0), collapsed
    )

    floored = DoReMi(3, reference=[0.0] * 3, eta=1e3, min_prob=0.1)
    drive_rule(floored, range(30))
    assert np.isclose(floored.probs(0.5).min(), 0.1)
    _load_everywhere(lambda: DoReMi(3, reference=[0.0] * 3, eta=1e3, min_prob=0.1), floored)

    long_average = DoReMi(5, reference=[1.0] * 5, output="average")
    drive_rule(long_average, range(3000))
    _load_everywhere(lambda: DoReMi(5, reference=[1.0] * 5, output="average"), long_average)

    for steps in range(8):  # around the warm-up and update_every boundaries
        odm = ODM(3, warmup_steps=3, update_every=2)
        drive_rule(odm, range(steps))
        _load_everywhere(lambda: ODM(3, warmup_steps=3, update_every=2), odm)

    empty = ODM(2)
    empty.observe([0, 1], [math.nan, math.nan], progress=0.5)  # all masked: progress only
    _load_everywhere(lambda: ODM(2), empty)

    for build in (
        lambda: DoReMi(1, reference=[1.0]),
        lambda: ODM(1, warmup_steps=1),
        lambda: FixedMixture([1.0]),
        lambda: EndUpsample(ODM(1, warmup_steps=0), factors=[2.0]),
    ):
        one = build()
        drive_rule(one, range(5))
        _load_everywhere(build, one)


# --------------------------------------------------------------------------- 2. fuzzing

# Corruptions. Each maps the original value to a corrupted one (or DROP, or SKIP where it does not
# apply); MUST says which of them have to be rejected whatever the field.
DROP, SKIP = object(), object()


def _array_of(value: Any) -> np.ndarray | None:
    if isinstance(value, torch.Tensor):
        return value.numpy()
    if isinstance(value, np.ndarray):
        return value
    return None


def _like(original: Any, array: np.ndarray) -> Any:
    return torch.from_numpy(array) if isinstance(original, torch.Tensor) else array


def _set_entry(value: Any, entry: float, where: int) -> Any:
    array = _array_of(value)
    if array is not None:
        if array.size == 0:
            return SKIP
        out = array.astype(np.float64 if array.dtype.kind != "f" else array.dtype, copy=True)
        out[where % out.size] = entry
        return _like(value, out)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return SKIP
    return entry


def _resize(value: Any, change: int) -> Any:
    array = _array_of(value)
    if array is None or array.size + change < 0:
        return SKIP
    if change < 0:
        return _like(value, array[: array.size + change].copy())
    return _like(value, np.concatenate([array, np.repeat(array[-1:], change)]))


def _reshape(value: Any, how: str) -> Any:
    array = _array_of(value)
    if array is None:
        return SKIP
    if how == "empty":
        return _like(value, array[:0].copy())
    if how == "two_d":
        return _like(value, array[:, None].copy())
    other = np.float32 if array.dtype == np.float64 else np.float64
    return _like(value, array.astype(other))


def _shift_int(value: Any, delta: int) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        return SKIP
    return value + delta


def _scale_entry(value: Any, factor: float, where: int) -> Any:
    array = _array_of(value)
    if array is not None:
        out = array.copy()
        out[where % out.size] = out[where % out.size] * factor
        return _like(value, out)
    if isinstance(value, float):
        return value * factor
    return SKIP


CORRUPTIONS: dict[str, Callable[[Any, int], Any]] = {
    "drop": lambda v, w: DROP,
    "none": lambda v, w: None,
    "string": lambda v, w: "corrupt",
    "bool": lambda v, w: True,
    "dict": lambda v, w: {},
    "float_for_int": lambda v, w: float(v) + 0.5 if isinstance(v, int) else SKIP,
    "nan": lambda v, w: _set_entry(v, math.nan, w),
    "inf": lambda v, w: _set_entry(v, math.inf, w),
    "-inf": lambda v, w: _set_entry(v, -math.inf, w),
    "truncate": lambda v, w: _resize(v, -1 - w % 2),
    "extend": lambda v, w: _resize(v, 1 + w % 3),
    "empty": lambda v, w: _reshape(v, "empty"),
    "two_d": lambda v, w: _reshape(v, "two_d"),
    "dtype": lambda v, w: _reshape(v, "dtype"),
    # may be harmless:
    "negative": lambda v, w: _set_entry(v, -1.0 - w, w),
    "huge": lambda v, w: _set_entry(v, 1e30, w),
    "scale": lambda v, w: _scale_entry(v, 1.0 + 0.25 * (w % 4 + 1), w),
    "int_plus": lambda v, w: _shift_int(v, 1 + w),
    "int_minus": lambda v, w: _shift_int(v, -1 - w),
    "int_huge": lambda v, w: _shift_int(v, 2**40),
}
MUST = {
    "drop",
    "none",
    "string",
    "bool",
    "dict",
    "float_for_int",
    "nan",
    "inf",
    "-inf",
    "truncate",
    "extend",
    "empty",
    "two_d",
}
# Identity fields: any change at all must be rejected.
IDENTITY = {"rule", "version", "num_domains", "num_items"}
# Fields where None is a legitimate value (the loss table's "no relaxation").
NONE_OK = {"relax_steps"}


def _corrupted(state: dict[str, Any], path: tuple[str, ...], kind: str, where: int) -> Any:
    original = get_path(state, path)
    value = CORRUPTIONS[kind](original, where)
    if value is SKIP:
        return SKIP
    out = copy.deepcopy(state)
    if value is DROP:
        set_path(out, path, None, drop=True)
    else:
        set_path(out, path, value)
    return out


def _fuzz_once(name: str, data: st.DataObject) -> None:
    part = PARTS[name]
    steps = data.draw(st.sampled_from([0, 1, 4, 12, 20]), label="steps")
    source = part.real(steps)
    state = source.state_dict()
    path = data.draw(st.sampled_from(leaf_paths(state)), label="path")
    kind = data.draw(st.sampled_from(sorted(CORRUPTIONS)), label="kind")
    where = data.draw(st.integers(0, 50), label="where")
    corrupted = _corrupted(state, path, kind, where)
    if corrupted is SKIP:
        return
    hard = kind in MUST and not (kind == "none" and path[-1] in NONE_OK)
    target = part.real(3, seed=42)  # differs from source, so a partial load would show
    before = target.state_dict()
    try:
        target.load_state_dict(corrupted)
    except (ValueError, TypeError) as error:
        message = str(error)
        assert path[-1] in message or (path[-1] == "num_items" and "num_items" in message), (
            f"{kind} of {path} raised without naming the field: {message}"
        )
        assert_same(target.state_dict(), before)
        return
    assert not hard, f"{kind} of {path} was accepted"
    assert path[-1] not in IDENTITY or get_path(corrupted, path) == get_path(state, path), (
        f"{kind} of identity field {path} was accepted"
    )
    # A harmless corruption: the object loaded it and still works; its state reloads.
    reloaded = part.build()
    reloaded.load_state_dict(target.state_dict())
    part.works(target)


@pytest.mark.parametrize("name", sorted(PARTS))
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_fuzzed_state_raises_naming_the_field_or_loads(name: str, data: st.DataObject) -> None:
    _fuzz_once(name, data)


@pytest.mark.parametrize("name", sorted(PARTS))
@pytest.mark.parametrize("kind", sorted(MUST))
def test_every_field_rejects_every_hard_corruption(name: str, kind: str) -> None:
    """Exhaustive over fields for the corruptions that must always be rejected."""
    part = PARTS[name]
    state = part.real(12).state_dict()
    for path in leaf_paths(state):
        for where in (0, 1):
            corrupted = _corrupted(state, path, kind, where)
            if corrupted is SKIP or (kind == "none" and path[-1] in NONE_OK):
                continue
            target = part.real(3, seed=42)
            before = target.state_dict()
            with pytest.raises((ValueError, TypeError)) as info:
                target.load_state_dict(corrupted)
            assert path[-1] in str(info.value), (path, kind, str(info.value))
            assert_same(target.state_dict(), before)


# --------------------------------------------------------------------------- 3. by name


def _table_and_state() -> tuple[LossTable, dict[str, Any], dict[str, Any]]:
    source = LossTable(6, decay=0.5)
    drive_table(source, range(5))
    target = LossTable(6, decay=0.5)
    target.update([1, 2], [3.0, 4.0], step=1)
    return target, dict(source.state_dict()), target.state_dict()


@pytest.mark.parametrize(
    ("key", "value", "error", "match"),
    [
        ("ema", torch.zeros(7), ValueError, r"'ema' must be float32 of shape \(6,\).*7 entries"),
        ("ema", torch.zeros(5), ValueError, r"5 entries, expected 6"),
        ("ema", torch.zeros(6, dtype=torch.bfloat16), ValueError, "'ema' must be float32"),
        ("ema", torch.zeros(2, 3), ValueError, r"'ema' .*shape \(2, 3\)"),
        ("ema", [0.0] * 6, TypeError, "'ema' must be a tensor or numpy array"),
        ("ema", torch.full((6,), math.inf), ValueError, "'ema' holds non-finite.*entry 0"),
        ("ema", None, TypeError, "'ema'"),
        ("last_seen", torch.full((6,), -2, dtype=torch.int32), ValueError, "'last_seen'"),
        ("last_seen", torch.full((6,), 9, dtype=torch.int32), ValueError, r"step=4"),
        ("last_seen", torch.zeros(6, dtype=torch.int64), ValueError, "'last_seen' must be int32"),
        ("snapshot", torch.zeros(5), ValueError, r"'snapshot'.*5 entries, expected 6"),
        ("snapshot", torch.tensor([0.0, 1, 2, 3, 5, 4]), ValueError, "sorted ascending"),
        ("snapshot", torch.tensor([0.0, 1, 2, 3, 4, math.nan]), ValueError, "'snapshot'.*finite"),
        ("step", 2.0, TypeError, "'step' must be an integer"),
        ("step", True, TypeError, "'step' must be an integer"),
        ("step", -2, ValueError, r"'step' = -2, but step must lie in \[-1, 2147483647\]"),
        ("step", 2**31, ValueError, "step must lie in"),
        ("step", 2, ValueError, r"'last_seen' must lie in \[-1, step=2\]"),
        ("snapshot_step", -7, ValueError, "snapshot_step must lie in"),
        ("snapshot_step", None, TypeError, "'snapshot_step'"),
        ("num_nonfinite", -1, ValueError, "num_nonfinite must lie in >= 0"),
        ("num_nonfinite", 1.5, TypeError, "'num_nonfinite' must be an integer"),
        ("num_items", 7, ValueError, "num_items=7 but this table has 6"),
        ("num_items", 6.0, ValueError, "num_items=6.0"),
        ("version", 3, ValueError, "version 3 is not supported"),
        ("version", 0, ValueError, "version 0 is not supported"),
        ("min_last_seen", 3, ValueError, r"'min_last_seen' = 3, but .* in \[0, 2\]"),
        ("min_last_seen", -1, ValueError, "min_last_seen must lie in"),
        ("min_last_seen", 1.0, TypeError, "'min_last_seen' must be an integer"),
        ("version", True, ValueError, "version True is not supported"),
        ("decay", 1.0, ValueError, r"'decay' must lie in \[0, 1\)"),
        ("decay", math.nan, ValueError, "'decay'"),
        ("decay", "0.5", TypeError, "'decay'"),
        ("prior", "median", ValueError, "'prior' must be 'mean' or a number"),
        ("prior", math.inf, ValueError, "'prior' must be finite"),
        ("prior", None, TypeError, "'prior'"),
        ("relax_steps", 0.0, ValueError, "'relax_steps'"),
        ("relax_steps", math.inf, ValueError, "'relax_steps'"),
        ("relax_steps", "10", TypeError, "'relax_steps'"),
    ],
)
def test_table_corruptions(key: str, value: Any, error: type[Exception], match: str) -> None:
    table, state, before = _table_and_state()
    state[key] = value
    with pytest.raises(error, match=match):
        table.load_state_dict(state)
    assert_same(table.state_dict(), before)


def test_table_state_structure_errors() -> None:
    table, state, before = _table_and_state()
    with pytest.raises(TypeError, match="not a LossTable state"):
        table.load_state_dict([1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'version' key"):
        table.load_state_dict({k: v for k, v in state.items() if k != "version"})
    for key in ("decay", "num_nonfinite", "snapshot", "last_seen"):
        with pytest.raises(ValueError, match=f"lacks key.*{key}"):
            table.load_state_dict({k: v for k, v in state.items() if k != key})
    assert_same(table.state_dict(), before)


def test_table_keeps_its_hyperparameters_and_accepts_others_in_the_state() -> None:
    """decay / prior / relax_steps are saved for reference: well-formed other values load."""
    source = LossTable(4, decay=0.9, prior=1.0, relax_steps=5.0)
    source.update([0, 1], [1.0, 2.0], step=0)
    table = LossTable(4, decay=0.1)
    table.load_state_dict(source.state_dict())
    assert (table.decay, table.prior, table.relax_steps) == (0.1, "mean", None)
    assert table.num_seen == 2


def test_table_reads_version_1_states() -> None:
    """Version 1 lacked min_last_seen: it loads, with the oldest last-seen step recounted."""
    source = LossTable(6)
    drive_table(source, range(5))
    state = {k: v for k, v in source.state_dict().items() if k != "min_last_seen"}
    state["version"] = 1
    table = LossTable(6)
    table.load_state_dict(state)
    assert_same(table.state_dict()["ema"], source.state_dict()["ema"])
    seen = state["last_seen"][state["last_seen"] >= 0]
    assert table.state_dict()["min_last_seen"] == int(seen.min())
    with pytest.raises(ValueError, match=r"lacks key\(s\): min_last_seen"):
        table.load_state_dict({**state, "version": 2})


def test_table_resume_is_exact_when_emas_span_many_magnitudes() -> None:
    """EMAs of 1e-9 next to 10 made a float64 running sum drift with the order of updates, so a
    restored table (which recounts) had another mean prior than the uninterrupted one. The sum
    is exact now: the prior is the correctly rounded mean, before and after a restore."""
    for seed in range(4):
        table = LossTable(300, decay=0.9, relax_steps=50.0)
        rng = np.random.default_rng(seed)
        for step in range(300):
            index = rng.integers(0, 300, 32)
            table.update(index, rng.exponential(1.0, 32) * rng.choice([1e-9, 10.0], 32), step)
        resumed = LossTable(300, decay=0.9, relax_steps=50.0)
        resumed.load_state_dict(torch_round_trip(table.state_dict()))
        assert resumed.prior_value() == table.prior_value()
        state = table.state_dict()
        seen = state["last_seen"].numpy() >= 0
        exact = sum(Fraction(float(v)) for v in state["ema"].numpy()[seen]) / int(seen.sum())
        assert table.prior_value() == float(exact)
        compare_tables(resumed, table)
        for step in range(300, 320):  # and they keep agreeing
            index = rng.integers(0, 300, 32)
            losses = rng.exponential(1.0, 32) * rng.choice([1e-9, 10.0], 32)
            table.update(index, losses, step)
            resumed.update(index, losses, step)
        compare_tables(resumed, table)


def test_exact_sum_of_float32_values() -> None:
    rng = np.random.default_rng(0)
    tiny = np.float32(np.finfo(np.float32).smallest_subnormal)
    big = np.float32(np.finfo(np.float32).max)
    values = np.concatenate(
        [
            rng.normal(0, 1, 1000) * 10.0 ** rng.integers(-40, 38, 1000),
            [tiny, -tiny, big, big, -big, 0.0, -0.0, 1e-38, 3e-45],
        ]
    ).astype(np.float32)
    assert np.isfinite(values).all()
    expected = sum(Fraction(float(v)) for v in values) * 2**149
    assert expected.denominator == 1
    assert exact_sum(values) == expected.numerator
    assert exact_sum(np.zeros(0, dtype=np.float32)) == 0


def test_table_snapshot_length_follows_the_configuration() -> None:
    source = LossTable(10, snapshot_size=4)
    drive_table(source, range(4))
    with pytest.raises(ValueError, match=r"'snapshot'.*4 entries, expected 10"):
        LossTable(10).load_state_dict(source.state_dict())
    LossTable(10, snapshot_size=4).load_state_dict(source.state_dict())


def _doremi() -> tuple[DoReMi, dict[str, Any], dict[str, Any]]:
    source = DoReMi(3, reference=[1.0] * 3, min_prob=0.02)
    drive_rule(source, range(6))
    target = DoReMi(3, reference=[1.0] * 3, min_prob=0.02)
    drive_rule(target, range(2), seed=3)
    return target, source.state_dict(), target.state_dict()


def _f64(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


@pytest.mark.parametrize(
    ("key", "value", "error", "match"),
    [
        ("alpha", _f64(0.5, 0.5), ValueError, r"'alpha' has shape \(2,\).*expected \(3,\)"),
        ("alpha", _f64(0.5, 0.5, 0.5), ValueError, "'alpha' is not a probability.*sums to 1.5"),
        ("alpha", _f64(1.1, -0.1, 0.0), ValueError, "'alpha' is not a probability.*< 0"),
        ("alpha", _f64(0.99, 0.0, 0.01), ValueError, "'alpha' entry 1 is 0.0, below.*0.02"),
        ("alpha", _f64(0.5, math.nan, 0.5), ValueError, "'alpha' entry 1 is nan"),
        ("alpha", torch.ones(3, 1, dtype=torch.float64) / 3, ValueError, r"shape \(3, 1\)"),
        ("alpha", torch.tensor([True, False, False]), TypeError, "'alpha' must hold real"),
        ("alpha", "uniform", TypeError, "'alpha' must be a 1-D tensor"),
        ("alpha", None, TypeError, "'alpha'"),
        ("average", _f64(0.2, 0.2, 0.2), ValueError, "'average' is not a probability"),
        ("average", _f64(math.inf, 0.0, 0.0), ValueError, "'average' entry 0 is inf"),
        ("excess", _f64(-1.0, 0.0, 0.0), ValueError, "'excess' must be >= 0"),
        ("excess", _f64(0.0, math.inf, 0.0), ValueError, "'excess' entry 1 is inf"),
        ("updates", -1, ValueError, "'updates' must be >= 0"),
        ("updates", 2.0, TypeError, "'updates' must be an integer"),
        ("updates", None, TypeError, "'updates'"),
        ("progress", 1.5, ValueError, r"'progress' must lie in \[0, 1\]"),
        ("progress", math.nan, ValueError, "'progress'"),
        ("progress", "0.5", TypeError, "'progress' must be a real number"),
        ("version", 2, ValueError, "'version' 2"),
        ("version", True, ValueError, "'version' True"),
        ("version", 1.0, ValueError, "'version' 1.0"),
        ("num_domains", 4, ValueError, r"for 4 domains \('num_domains'\)"),
        ("rule", "odm", ValueError, "belongs to rule 'odm'"),
        ("rule", None, ValueError, r"belongs to rule None \('rule'\)"),
    ],
)
def test_doremi_corruptions(key: str, value: Any, error: type[Exception], match: str) -> None:
    rule, state, before = _doremi()
    with pytest.raises(error, match=match):
        rule.load_state_dict({**state, key: value})
    assert_same(rule.state_dict(), before)


def test_doremi_initial_values_before_any_update() -> None:
    fresh = DoReMi(3, reference=[1.0] * 3).state_dict()
    rule, _, before = _doremi()
    for key, value, match in [
        ("average", _f64(0.5, 0.25, 0.25), "'average' must be equal to 'alpha' while 'updates'"),
        ("excess", _f64(0.0, 1.0, 0.0), "'excess' must be all zero while 'updates' is 0"),
    ]:
        with pytest.raises(ValueError, match=match):
            rule.load_state_dict({**fresh, key: value})
    assert_same(rule.state_dict(), before)
    rule.load_state_dict(fresh)  # the genuine fresh state loads
    assert_same(rule.state_dict(), fresh)


def test_doremi_rejects_a_state_saved_under_a_lower_floor() -> None:
    low = DoReMi(3, reference=[0.0] * 3, eta=50.0, min_prob=0.0)
    low.observe([0, 1, 2], [5.0, 0.0, 0.0], progress=0.1)
    high = DoReMi(3, reference=[0.0] * 3, eta=50.0, min_prob=0.1)
    before = high.state_dict()
    with pytest.raises(ValueError, match=r"below this rule's min_prob=0\.1"):
        high.load_state_dict(low.state_dict())
    assert_same(high.state_dict(), before)


def _odm() -> tuple[ODM, dict[str, Any], dict[str, Any]]:
    source = ODM(3, eta=1.0, warmup_steps=2, update_every=2)
    drive_rule(source, range(13))  # 13 observes → (13 − 2) // 2 = 5 updates
    assert not np.allclose(source.probs(0.5), 1 / 3)  # ε_5 < 1/K: no longer uniform
    target = ODM(3, eta=1.0, warmup_steps=2, update_every=2)
    drive_rule(target, range(5), seed=4)
    return target, source.state_dict(), target.state_dict()


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"weights": _f64(0.6, 0.6, -0.2)}, ValueError, "'weights' is not a probability"),
        ({"weights": _f64(0.5, 0.5)}, ValueError, r"'weights' has shape \(2,\)"),
        ({"weights": _f64(0.999, 0.0005, 0.0005)}, ValueError, "'weights' entry 1.*min_prob"),
        ({"rewards": _f64(math.nan, 0.0, 0.0)}, ValueError, "'rewards' entry 0 is nan"),
        ({"observes": -1}, ValueError, "'observes' must be >= 0"),
        ({"observes": 13.0}, TypeError, "'observes' must be an integer"),
        ({"updates": 14}, ValueError, "14 policy updates but only 13 observes"),
        ({"updates": 2}, ValueError, "'updates' is 2, but with warmup_steps=2 and update_every=2"),
        ({"observes": 16}, ValueError, "'updates' is 5.*16 observes make 7"),
        ({"observes": 1, "updates": 0}, ValueError, "'weights' must be uniform while 'updates'"),
        ({"progress": -0.5}, ValueError, "'progress' must lie in"),
    ],
)
def test_odm_corruptions(change: dict[str, Any], error: type[Exception], match: str) -> None:
    rule, state, before = _odm()
    with pytest.raises(error, match=match):
        rule.load_state_dict({**state, **change})
    assert_same(rule.state_dict(), before)


def test_odm_rewards_are_zero_before_the_first_observe() -> None:
    fresh = ODM(3).state_dict()
    rule, _, before = _odm()
    with pytest.raises(ValueError, match="'rewards' must be all zero while 'observes' is 0"):
        rule.load_state_dict({**fresh, "rewards": _f64(1.0, 0.0, 0.0)})
    assert_same(rule.state_dict(), before)


def test_odm_counts_follow_the_configuration() -> None:
    source = ODM(3, warmup_steps=2)
    drive_rule(source, range(6))
    with pytest.raises(ValueError, match="resume with the checkpoint's configuration"):
        ODM(3, warmup_steps=5).load_state_dict(source.state_dict())
    ODM(3, warmup_steps=2).load_state_dict(source.state_dict())


def test_end_upsample_nested_errors_name_the_path_and_change_nothing() -> None:
    def build() -> EndUpsample:
        return EndUpsample(DoReMi(3, reference=[1.0] * 3), fraction=0.3, factors={1: 2.0})

    source, target = build(), build()
    drive_rule(source, range(30))
    drive_rule(target, range(4), seed=1)
    state, before = source.state_dict(), target.state_dict()
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        (
            {"base": {**state["base"], "alpha": _f64(1.0, 1.0, 1.0)}},
            ValueError,
            "end_upsample state: 'base': doremi state: 'alpha' is not a probability",
        ),
        (
            {"base": {**state["base"], "updates": "3"}},
            TypeError,
            "'base': doremi state: 'updates' must be an integer",
        ),
        (
            {"base": {k: v for k, v in state["base"].items() if k != "excess"}},
            ValueError,
            r"'base': doremi state lacks key\(s\) \['excess'\]",
        ),
        ({"base": None}, TypeError, "'base': doremi state must be a mapping"),
        ({"base": ODM(3).state_dict()}, ValueError, "'base': state belongs to rule 'odm'"),
        ({"progress": math.inf}, ValueError, "end_upsample state: 'progress'"),
    ]
    for change, error, match in cases:
        with pytest.raises(error, match=match):
            target.load_state_dict({**state, **change})
        assert_same(target.state_dict(), before)
    # valid base, broken own field: the base is not touched either
    with pytest.raises(ValueError, match="'progress'"):
        target.load_state_dict({**state, "progress": 2.0})
    assert_same(target.state_dict(), before)
    target.load_state_dict(state)
    compare_rules(target, source)


@pytest.mark.parametrize("name", ["fixed", "temperature"])
def test_stateless_rules_validate_their_header_and_progress(name: str) -> None:
    rule = PARTS[name].real(5)
    state, before = rule.state_dict(), rule.state_dict()
    cases: list[tuple[dict[str, Any], type[Exception]]] = [
        ({"progress": None}, TypeError),
        ({"progress": -1.0}, ValueError),
        ({"num_domains": 3.0}, ValueError),
        ({"rule": 7}, ValueError),
    ]
    for change, error in cases:
        with pytest.raises(error, match=next(iter(change))):
            rule.load_state_dict({**state, **change})
        assert_same(rule.state_dict(), before)
    with pytest.raises(ValueError, match=r"lacks key\(s\) \['progress'\]"):
        rule.load_state_dict({k: v for k, v in state.items() if k != "progress"})
