"""What :class:`~reweight.table.LossTable` accepts and saves: its parameters, its steps, its
versioned state dict, and the exact counts it recomputes from the per-item arrays.

* :func:`check_table_params` and :func:`check_priority_params` validate the table's and the
  priorities' parameters (also used by :class:`~reweight.sources.LossPriority`, with a prefix);
  :func:`check_step` a training step (stored as int32).
* :func:`parse_state` validates a saved state dict, every field named in its errors, and
  returns the restored arrays and counts as a :class:`TableState` without mutating anything.
* :func:`exact_sum` and :func:`recount` give the running sums exactly (as Python ints), so a
  restored table equals the uninterrupted one whatever order the updates came in.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import torch

from reweight._checks import CHUNK, chunks, is_int, is_real

__all__ = [
    "CHUNK",
    "INT32_MAX",
    "PRIORITY_METHODS",
    "STATE_VERSION",
    "TableState",
    "check_priority_params",
    "check_step",
    "check_table_params",
    "check_track_last_seen",
    "chunks",
    "exact_sum",
    "parse_state",
    "recount",
]

STATE_VERSION = 2  # 2 added "min_last_seen"; version 1 states load with it recounted
INT32_MAX = int(np.iinfo(np.int32).max)
_EXP_MIN = -148  # smallest np.frexp exponent of a nonzero float32 (2^-149 = 0.5 · 2^-148)
PRIORITY_METHODS = ("rank", "softmax")
"""Names accepted by :meth:`LossTable.priorities <reweight.table.LossTable.priorities>`
``method``."""


# ---------------------------------------------------------------- input checks


def _number(name: str, value: Any) -> float:
    """``value`` as a float (NaN and infinities pass: the caller's range check explains the
    range); TypeError for a bool or a non-number."""
    if not is_real(value):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__}).")
    return float(value)


def check_table_params(
    decay: Any, prior: Any, relax_steps: Any, *, prefix: str = ""
) -> tuple[float, str | float, float | None]:
    """Validates :class:`~reweight.table.LossTable`'s ``decay``, ``prior`` and ``relax_steps``.

    Returns them as ``(float, "mean" or float, float or None)``. ``prefix`` goes in front of
    each name in errors (e.g. ``"LossPriority."``).

    Example:
        >>> check_table_params(0.9, "mean", None)
        (0.9, 'mean', None)
    """
    value = _number(f"{prefix}decay", decay)
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"{prefix}decay must lie in [0, 1) (the EMA decay; 0 keeps the latest loss), "
            f"got {decay!r}."
        )
    if isinstance(prior, str):
        if prior != "mean":
            raise ValueError(f"{prefix}prior must be 'mean' or a finite number, got {prior!r}.")
        estimate: str | float = prior
    else:
        if not is_real(prior):
            raise TypeError(
                f"{prefix}prior must be 'mean' or a finite number, got {prior!r} "
                f"({type(prior).__name__})."
            )
        if not math.isfinite(float(prior)):
            raise ValueError(f"{prefix}prior must be 'mean' or a finite number, got {prior!r}.")
        estimate = float(prior)
    relax: float | None = None
    if relax_steps is not None:
        relax = _number(f"{prefix}relax_steps", relax_steps)
        if not (math.isfinite(relax) and relax > 0):
            raise ValueError(
                f"{prefix}relax_steps must be None (no relaxation) or a finite number > 0, "
                f"got {relax_steps!r}."
            )
    return value, estimate, relax


def check_track_last_seen(track_last_seen: Any, relax_steps: Any, *, prefix: str = "") -> bool:
    """Validates ``track_last_seen`` (a bool; False only without ``relax_steps``, which needs
    each item's last-seen step) and returns it.

    Example:
        >>> check_track_last_seen(False, None)
        False
    """
    if not isinstance(track_last_seen, (bool, np.bool_)):
        raise TypeError(f"{prefix}track_last_seen must be True or False, got {track_last_seen!r}.")
    if not track_last_seen and relax_steps is not None:
        raise ValueError(
            f"{prefix}relax_steps={relax_steps!r} needs each item's last-seen step; keep "
            "track_last_seen=True, or set relax_steps=None."
        )
    return bool(track_last_seen)


def check_priority_params(
    method: Any, pressure: Any, temperature: Any, floor: Any, *, prefix: str = ""
) -> tuple[str, float, float, float]:
    """Validates the priority parameters of
    :meth:`LossTable.priorities <reweight.table.LossTable.priorities>`.

    ``method`` one of :data:`PRIORITY_METHODS`, ``pressure`` finite >= 1, ``temperature`` > 0
    (``math.inf`` allowed), ``floor`` in [0, 1]. ``prefix`` goes in front of each name in
    errors (e.g. ``"LossPriority."``).

    Example:
        >>> check_priority_params("rank", 100, 1.0, 1e-3)
        ('rank', 100.0, 1.0, 0.001)
    """
    if not isinstance(method, str) or method not in PRIORITY_METHODS:
        raise ValueError(
            f"unknown {prefix}priority method {method!r}; valid names: "
            f"{', '.join(PRIORITY_METHODS)}."
        )
    pressure = _number(f"{prefix}pressure", pressure)
    temperature = _number(f"{prefix}temperature", temperature)
    floor = _number(f"{prefix}floor", floor)
    if not (math.isfinite(pressure) and pressure >= 1.0):
        raise ValueError(
            f"{prefix}pressure must be a finite number >= 1 (the ratio between the most and the "
            f"least likely item; 1: uniform), got {pressure!r}."
        )
    if math.isnan(temperature) or temperature <= 0:
        raise ValueError(
            f"{prefix}temperature must be > 0 (math.inf: uniform), got {temperature!r}."
        )
    if not 0.0 <= floor <= 1.0:
        raise ValueError(
            f"{prefix}floor must lie in [0, 1] (relative to the largest priority, 1), "
            f"got {floor!r}."
        )
    return method, pressure, temperature, floor


def check_step(step: Any, name: str = "step") -> int:
    """``step`` as an int in ``[0, 2^31 − 1]`` (a training step, stored as int32); TypeError
    for a bool or a non-integer, ValueError outside the range.

    Example:
        >>> check_step(7)
        7
        >>> check_step(-1)
        Traceback (most recent call last):
        ...
        ValueError: step must lie in [0, 2147483647] (stored as int32), got -1.
    """
    if isinstance(step, bool):
        raise TypeError(f"{name} must be an integer (a training step), got {step!r}.")
    try:
        value = operator.index(step)
    except TypeError:
        raise TypeError(f"{name} must be an integer (a training step), got {step!r}.") from None
    if not 0 <= value <= INT32_MAX:
        raise ValueError(f"{name} must lie in [0, {INT32_MAX}] (stored as int32), got {value}.")
    return value


# ---------------------------------------------------------------- exact counts


def exact_sum(values: np.ndarray) -> int:
    """Σ of float32 ``values``, exactly, in units of 2^−149 (the float32 quantum): a Python int.

    A running float64 sum of float32 EMAs drifts once they span more than 2^29 in magnitude
    (e.g. 1e-9 and 10), so it would depend on the order of updates and a restored table (which
    recounts) would differ from the uninterrupted one. Exact integers make the sum a function of
    the EMAs alone. Each float32 is m · 2^(e − 24) with an integer |m| < 2^24; the m are summed
    per exponent e (below 2^53 per chunk, so exact in float64), then shifted into place.

    Example:
        >>> exact_sum(np.array([1.5, -0.25], dtype=np.float32)) == (5 << 147)  # 1.25 · 2^149
        True
    """
    total = 0
    for part in chunks(values.size):
        mant, exp = np.frexp(values[part].astype(np.float64))
        m = np.ldexp(mant, 24)  # integers, |m| < 2^24
        bucket = exp - _EXP_MIN
        sums = np.bincount(bucket, weights=m, minlength=0)
        for offset in np.flatnonzero(sums).tolist():
            shift = offset + _EXP_MIN - 24 + 149
            s_int = int(sums[offset])
            # exact: every float32 is a multiple of 2^-149, so is each bucket's sum
            total += s_int << shift if shift >= 0 else s_int >> -shift
    return total


def recount(ema: np.ndarray, last: np.ndarray | None) -> tuple[int, int, int, int]:
    """(number seen, Σ EMA over seen in units of 2^−149, Σ last_seen over seen, min last_seen
    or −1), exactly; an item is seen when its ``last`` step is >= 0 (without last-seen steps,
    ``last`` None: when its EMA is not NaN; the sums of steps are then 0 and −1).

    Example:
        >>> ema = np.array([2.0, 9.0, 1.0], dtype=np.float32)
        >>> num_seen, sum_ema, sum_last, min_last = recount(ema, np.array([3, -1, 5]))
        >>> num_seen, sum_ema == 3 << 149, sum_last, min_last
        (2, True, 8, 3)
    """
    num_seen, sum_ema, sum_last, min_last = 0, 0, 0, -1
    for part in chunks(ema.size):
        if last is None:
            values = ema[part]
            seen = ~np.isnan(values)
            num_seen += int(np.count_nonzero(seen))
            sum_ema += exact_sum(values[seen])
            continue
        seen_last = last[part]
        seen = seen_last >= 0
        count = int(np.count_nonzero(seen))
        if count == 0:
            continue
        seen_last = seen_last[seen]
        num_seen += count
        sum_ema += exact_sum(ema[part][seen])
        sum_last += int(np.sum(seen_last, dtype=np.int64))
        low = int(seen_last.min())
        min_last = low if min_last < 0 else min(min_last, low)
    return num_seen, sum_ema, sum_last, min_last


# ---------------------------------------------------------------- state checks
#
# Each raises TypeError for a field of the wrong kind and ValueError for a wrong value, naming
# the field ("loss table state: 'ema' ..."), and never mutates anything.

_STATE_WHAT = "loss table state"
_STATE_KEYS = (
    "num_items",
    "decay",
    "prior",
    "relax_steps",
    "step",
    "snapshot_step",
    "num_nonfinite",
    "ema",
    "last_seen",
    "snapshot",
    "min_last_seen",  # version 2
)


def _state_int(
    state: Mapping[str, Any], key: str, low: int, high: int | None, hint: str = ""
) -> int:
    value = state[key]
    if not is_int(value):
        raise TypeError(
            f"{_STATE_WHAT}: {key!r} must be an integer, got {value!r} ({type(value).__name__})."
        )
    value = int(value)
    if value < low or (high is not None and value > high):
        bounds = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{_STATE_WHAT}: {key!r} = {value}, but {key} must lie in {bounds}{hint}.")
    return value


def _state_hyperparameters(state: Mapping[str, Any]) -> None:
    """Checks the saved ``decay``, ``prior`` and ``relax_steps`` (kept for reference only)."""
    decay = state["decay"]
    if not is_real(decay):
        raise TypeError(f"{_STATE_WHAT}: 'decay' must be a real number, got {decay!r}.")
    if not 0.0 <= float(decay) < 1.0:
        raise ValueError(f"{_STATE_WHAT}: 'decay' must lie in [0, 1), got {decay!r}.")
    prior = state["prior"]
    if isinstance(prior, str):
        if prior != "mean":
            raise ValueError(f"{_STATE_WHAT}: 'prior' must be 'mean' or a number, got {prior!r}.")
    elif not is_real(prior):
        raise TypeError(f"{_STATE_WHAT}: 'prior' must be 'mean' or a number, got {prior!r}.")
    elif not math.isfinite(float(prior)):
        raise ValueError(f"{_STATE_WHAT}: 'prior' must be finite, got {prior!r}.")
    relax = state["relax_steps"]
    if relax is None:
        return
    if not is_real(relax):
        raise TypeError(
            f"{_STATE_WHAT}: 'relax_steps' must be None or a number > 0, got {relax!r}."
        )
    if not (math.isfinite(float(relax)) and float(relax) > 0):
        raise ValueError(
            f"{_STATE_WHAT}: 'relax_steps' must be None or a finite number > 0, got {relax!r}."
        )


def _state_array(
    state: Mapping[str, Any], key: str, dtype: Any, size: int, meaning: str
) -> np.ndarray:
    """A 1-D tensor or array field of exactly ``dtype`` and ``size`` entries, as a numpy array
    (a view of it, not a copy)."""
    value = state[key]
    want = np.dtype(dtype)
    expected = f"{want.name} of shape ({size},)"
    if isinstance(value, torch.Tensor):
        got_dtype, shape = str(value.dtype).removeprefix("torch."), tuple(value.shape)
        ok_dtype = value.dtype == torch.from_numpy(np.zeros(0, dtype=want)).dtype
    elif isinstance(value, np.ndarray):
        got_dtype, shape = value.dtype.name, value.shape
        ok_dtype = value.dtype == want
    else:
        raise TypeError(
            f"{_STATE_WHAT}: {key!r} must be a tensor or numpy array, {expected} {meaning}; got "
            f"{type(value).__name__}."
        )
    if not ok_dtype or shape != (size,):
        entries = f" ({math.prod(shape)} entries, expected {size})" if shape != (size,) else ""
        raise ValueError(
            f"{_STATE_WHAT}: {key!r} must be {expected}, got {got_dtype} of shape {shape}{entries}."
        )
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value


def _last_seen(state: Mapping[str, Any], num_items: int, tracked: bool) -> np.ndarray | None:
    """The ``last_seen`` field: an int32 array when the table keeps last-seen steps, else None;
    a state of the other kind is refused, naming the setting."""
    saved = state["last_seen"]
    if tracked and saved is None:
        raise ValueError(
            f"{_STATE_WHAT}: 'last_seen' is None: the checkpoint's table kept no last-seen "
            "steps but this one does; build it with track_last_seen=False, as the run saved."
        )
    if not tracked and saved is not None:
        raise ValueError(
            f"{_STATE_WHAT}: 'last_seen' holds steps but this table keeps none "
            "(track_last_seen=False); build it with track_last_seen=True, as the run saved."
        )
    return (
        None
        if saved is None
        else _state_array(state, "last_seen", np.int32, num_items, "(num_items)")
    )


def _state_header(state: Any, num_items: int) -> int:
    """Checks the state's type, version, keys and ``num_items``; returns the version."""
    if not isinstance(state, Mapping):
        raise TypeError(
            f"not a LossTable state: expected a mapping from state_dict(), got "
            f"{type(state).__name__}."
        )
    if "version" not in state:
        raise ValueError("not a LossTable state (expected a mapping with a 'version' key).")
    version = state["version"]
    if not is_int(version) or version not in (1, STATE_VERSION):
        raise ValueError(
            f"LossTable state version {version!r} is not supported ({_STATE_WHAT}: "
            f"'version' must be 1 or {STATE_VERSION}); re-create the state with a matching "
            "reweight version."
        )
    keys = _STATE_KEYS if version == STATE_VERSION else _STATE_KEYS[:-1]
    missing = [key for key in keys if key not in state]
    if missing:
        raise ValueError(f"LossTable state lacks key(s): {', '.join(missing)}.")
    saved_items = state["num_items"]
    if not is_int(saved_items) or saved_items != num_items:
        raise ValueError(
            f"this checkpoint's loss table has num_items={saved_items!r} but this table has "
            f"{num_items}; resume with the same data set, or start a fresh table."
        )
    return int(version)


def _check_contents(
    ema: np.ndarray, last: np.ndarray | None, snapshot: np.ndarray, step: int
) -> None:
    """Checks that every EMA is finite (or NaN: unseen, without last-seen steps), every
    last-seen step in ``[-1, step]`` and the snapshot finite and sorted ascending."""
    for part in chunks(ema.size):
        values = ema[part]
        bad = np.isinf(values) if last is None else ~np.isfinite(values)
        if bad.any():
            first = part.start + int(np.flatnonzero(bad)[0])
            allowed = "finite or NaN (unseen)" if last is None else "finite"
            raise ValueError(
                f"{_STATE_WHAT}: 'ema' holds non-finite values: entry {first} is "
                f"{float(ema[first])!r}; every EMA must be {allowed}."
            )
        if last is None:
            continue
        chunk = last[part]
        low, high = int(chunk.min()), int(chunk.max())
        if low < -1 or high > step:
            raise ValueError(
                f"{_STATE_WHAT}: 'last_seen' must lie in [-1, step={step}] (-1: never seen; "
                f"no item is seen after the latest update), got values in [{low}, {high}]."
            )
    if not np.isfinite(snapshot).all():
        raise ValueError(f"{_STATE_WHAT}: 'snapshot' must be finite and sorted ascending.")
    if bool(np.any(snapshot[1:] < snapshot[:-1])):
        first = int(np.flatnonzero(snapshot[1:] < snapshot[:-1])[0])
        raise ValueError(
            f"{_STATE_WHAT}: 'snapshot' must be finite and sorted ascending; entry "
            f"{first + 1} ({float(snapshot[first + 1])!r}) is below entry {first} "
            f"({float(snapshot[first])!r})."
        )


class TableState(NamedTuple):
    """A validated loss table state: the arrays (views of the state's, to be copied), the steps
    and the exact counts (as :func:`recount` gives them; ``min_last`` as saved for version 2)."""

    ema: np.ndarray
    last: np.ndarray | None
    snapshot: np.ndarray
    step: int
    snapshot_step: int
    nonfinite: int
    num_seen: int
    sum_ema: int
    sum_last: int
    min_last: int


def parse_state(
    state: Any, num_items: int, snapshot_size: int, track_last_seen: bool = True
) -> TableState:
    """Validates a :meth:`LossTable.state_dict <reweight.table.LossTable.state_dict>` for a
    table of ``num_items`` items and ``snapshot_size``, with or without last-seen steps;
    mutates nothing.

    The checks, and the errors, are those listed by
    :meth:`LossTable.load_state_dict <reweight.table.LossTable.load_state_dict>`.

    Example:
        >>> from reweight.table import LossTable
        >>> state = LossTable(3, snapshot_size=2).state_dict()
        >>> parse_state(state, 3, 2).num_seen
        0
        >>> parse_state({**state, "step": 1.0}, 3, 2)
        Traceback (most recent call last):
        ...
        TypeError: loss table state: 'step' must be an integer, got 1.0 (float).
    """
    version = _state_header(state, num_items)
    _state_hyperparameters(state)
    step = _state_int(state, "step", -1, INT32_MAX, " (-1: before the first update)")
    snapshot_step = _state_int(
        state, "snapshot_step", -1, INT32_MAX, " (-1: before the first refresh)"
    )
    nonfinite = _state_int(state, "num_nonfinite", 0, None, " (a count)")
    size = min(num_items, snapshot_size)
    ema = _state_array(state, "ema", np.float32, num_items, "(num_items)")
    last = _last_seen(state, num_items, track_last_seen)
    snapshot = _state_array(state, "snapshot", np.float32, size, "(min(num_items, snapshot_size))")
    _check_contents(ema, last, snapshot, step)
    num_seen, sum_ema, sum_last, min_last = recount(ema, last)
    if version == STATE_VERSION:
        low, high = (-1, -1) if num_seen == 0 or last is None else (0, min_last)
        min_last = _state_int(
            state,
            "min_last_seen",
            low,
            high,
            " (-1 while no item is seen, else at most the oldest 'last_seen')",
        )
    return TableState(
        ema, last, snapshot, step, snapshot_step, nonfinite, num_seen, sum_ema, sum_last, min_last
    )
