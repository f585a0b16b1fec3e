"""Schedules: pure functions of training progress in [0, 1] (no hidden counters).

Every schedule is a frozen dataclass; calling it with the fraction of training done returns a
float. The same progress always gives the same value, so a resumed run needs no schedule state.
Schedules are built in code or from plain dicts (Hydra configs) with :func:`make_schedule`.
"""

from __future__ import annotations

import abc
import bisect
import itertools
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reweight._checks import (
    call_kind,
    check_progress,
    check_range,
    check_real,
    progress_grid,
)

__all__ = [
    "SCHEDULES",
    "Constant",
    "Cosine",
    "Exponential",
    "Linear",
    "Phases",
    "Schedule",
    "Step",
    "check_schedule",
    "cooldown",
    "make_schedule",
]


class Schedule(abc.ABC):
    """A value as a pure function of training progress in [0, 1].

    Subclasses implement ``_value(progress)``; ``__call__`` validates the progress first (a real
    number in [0, 1]; round-off of up to 1e-9 outside the range is clamped).
    """

    def __call__(self, progress: float) -> float:
        return self._value(check_progress(progress))

    @abc.abstractmethod
    def _value(self, progress: float) -> float:
        """The value at a validated progress in [0, 1]."""

    def breakpoints(self) -> tuple[float, ...]:
        """Progress points where the schedule changes its shape (boundaries, ramp ends), checked
        besides the regular grid by :func:`check_schedule`.

        Example:
            >>> Step([5.0, 1.0], [0.3]).breakpoints()
            (0.3,)
        """
        return ()


def _number(name: str, value: Any, *, finite: bool = True) -> float:
    return check_real(name, value, finite=finite)


@dataclass(frozen=True)
class Constant(Schedule):
    """The same value at every progress (``math.inf`` allowed, e.g. τ = inf for uniform).

    Example:
        >>> Constant(3.0)(0.7)
        3.0
    """

    value: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", _number("Constant value", self.value, finite=False))

    def _value(self, progress: float) -> float:
        return self.value


@dataclass(frozen=True)
class Step(Schedule):
    """Piecewise constant: ``values[i]`` on ``[boundaries[i-1], boundaries[i])``.

    A progress exactly on a boundary takes the value after it (right-continuous).

    Args:
        values: ``len(boundaries) + 1`` values (``inf`` allowed).
        boundaries: strictly increasing progress points in [0, 1].

    Example:
        >>> s = Step([5.0, 2.0, 1.0], [0.5, 0.9])
        >>> [s(0.0), s(0.49), s(0.5), s(0.9), s(1.0)]
        [5.0, 5.0, 2.0, 1.0, 1.0]
    """

    values: Sequence[float]  # stored as a tuple
    boundaries: Sequence[float]  # stored as a tuple

    def __post_init__(self) -> None:
        values = tuple(
            _number("Step value", v, finite=False) for v in _sequence("values", self.values)
        )
        bounds = tuple(
            _number("Step boundary", b) for b in _sequence("boundaries", self.boundaries)
        )
        if len(values) != len(bounds) + 1:
            raise ValueError(
                f"Step needs one more value than boundaries, got {len(values)} values and "
                f"{len(bounds)} boundaries {list(bounds)}."
            )
        if any(not 0.0 <= b <= 1.0 for b in bounds) or any(
            b >= c for b, c in itertools.pairwise(bounds)
        ):
            raise ValueError(
                f"Step boundaries must be strictly increasing progress points in [0, 1], got "
                f"{list(bounds)}."
            )
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "boundaries", bounds)

    def _value(self, progress: float) -> float:
        return self.values[bisect.bisect_right(self.boundaries, progress)]

    def breakpoints(self) -> tuple[float, ...]:
        return tuple(self.boundaries)


@dataclass(frozen=True)
class _Ramp(Schedule):
    """Goes from ``start`` (progress <= ``begin``) to ``end`` (progress >= ``until``)."""

    start: float
    end: float
    begin: float = 0.0
    until: float = 1.0

    def __post_init__(self) -> None:
        name = type(self).__name__
        for field in ("start", "end", "begin", "until"):
            object.__setattr__(self, field, _number(f"{name} {field}", getattr(self, field)))
        if not 0.0 <= self.begin < self.until <= 1.0:
            raise ValueError(
                f"{name} needs 0 <= begin < until <= 1, got begin={self.begin!r}, "
                f"until={self.until!r}; use Step for an instant switch."
            )

    def _value(self, progress: float) -> float:
        if progress <= self.begin:
            return self.start
        if progress >= self.until:
            return self.end
        fraction = (progress - self.begin) / (self.until - self.begin)
        value = self._interpolate(fraction)
        # Clamping keeps round-off from stepping outside [start, end] (and so keeps monotonicity).
        return min(max(value, min(self.start, self.end)), max(self.start, self.end))

    @abc.abstractmethod
    def _interpolate(self, fraction: float) -> float:
        """The value at ``fraction`` in (0, 1) of the ramp."""

    def breakpoints(self) -> tuple[float, ...]:
        return (self.begin, self.until)


@dataclass(frozen=True)
class Linear(_Ramp):
    """Linear ramp from ``start`` to ``end`` over progress [``begin``, ``until``].

    Constant ``start`` before ``begin`` and ``end`` after ``until``.

    Example:
        >>> Linear(5.0, 1.0)(0.25)
        4.0
        >>> s = Linear(5.0, 1.0, begin=0.5)
        >>> [s(0.2), s(0.75), s(1.0)]
        [5.0, 3.0, 1.0]
    """

    def _interpolate(self, fraction: float) -> float:
        return self.start + (self.end - self.start) * fraction


@dataclass(frozen=True)
class Cosine(_Ramp):
    """Half-cosine ramp from ``start`` to ``end`` over progress [``begin``, ``until``].

    value = end + (start − end)·(1 + cos(π·f))/2 with f the fraction of the ramp done: flat at
    both ends, steepest in the middle (the shape of cosine learning-rate decay).

    Example:
        >>> Cosine(5.0, 1.0)(0.5)
        3.0
        >>> round(Cosine(5.0, 1.0)(0.25), 4)
        4.4142
    """

    def _interpolate(self, fraction: float) -> float:
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * fraction))


@dataclass(frozen=True)
class Exponential(_Ramp):
    """Geometric ramp from ``start`` to ``end`` (both > 0) over progress [``begin``, ``until``].

    value = start·(end/start)^f, computed as exp of the linear interpolation of the logs: equal
    ratios per equal progress, e.g. τ halves at a constant rate.

    Example:
        >>> round(Exponential(8.0, 1.0)(1 / 3), 10)
        4.0
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.start > 0 and self.end > 0):
            raise ValueError(
                f"Exponential needs start > 0 and end > 0 (geometric interpolation), got "
                f"start={self.start!r}, end={self.end!r}; use Linear or Cosine otherwise."
            )

    def _interpolate(self, fraction: float) -> float:
        log_start = math.log(self.start)
        return math.exp(log_start + (math.log(self.end) - log_start) * fraction)


@dataclass(frozen=True)
class Phases(Schedule):
    """Consecutive phases, each its own schedule over its part of training.

    ``parts`` is a list of ``(until, schedule)``: phase i covers progress [until_{i-1}, until_i)
    (the first starts at 0, the last must end at 1 and also covers progress 1). Each phase's
    schedule sees the progress *within its phase*, rescaled to [0, 1]: a ``Linear(5, 1)`` in a
    phase covering [0.5, 1) is 5 at progress 0.5 and 3 at 0.75. A progress exactly on a boundary
    belongs to the phase after it. A number stands for a :class:`Constant`; a dict is passed to
    :func:`make_schedule`. Each part may also be a mapping ``{"until": u, "schedule": s}``.

    Example:
        >>> s = Phases([(0.5, 5.0), (1.0, Linear(5.0, 1.0))])
        >>> [s(0.0), s(0.5), s(0.75), s(1.0)]
        [5.0, 5.0, 3.0, 1.0]
    """

    parts: Sequence[Any]  # stored as a tuple of (until, Schedule) pairs

    def __post_init__(self) -> None:
        parts: list[tuple[float, Schedule]] = []
        for i, part in enumerate(_sequence("parts", self.parts)):
            if isinstance(part, Mapping):
                unknown = sorted(set(part) - {"until", "schedule"})
                if unknown or "until" not in part or "schedule" not in part:
                    raise ValueError(
                        f"Phases part {i} must have keys 'until' and 'schedule', got "
                        f"{sorted(part)}."
                    )
                until, spec = part["until"], part["schedule"]
            elif isinstance(part, Sequence) and not isinstance(part, str) and len(part) == 2:
                until, spec = part
            else:
                raise TypeError(f"Phases part {i} must be a pair (until, schedule), got {part!r}.")
            parts.append((_number(f"Phases part {i} until", until), make_schedule(spec)))
        untils = [u for u, _ in parts]
        if not parts:
            raise ValueError("Phases needs at least one part (until, schedule).")
        if untils[0] <= 0.0 or any(a >= b for a, b in itertools.pairwise(untils)):
            raise ValueError(
                f"Phases 'until' points must be strictly increasing and > 0, got {untils}."
            )
        if untils[-1] != 1.0:
            raise ValueError(
                f"the last phase must end at progress 1.0, got until={untils[-1]!r}; make the "
                "last part (1.0, schedule)."
            )
        object.__setattr__(self, "parts", tuple(parts))

    def _value(self, progress: float) -> float:
        untils = [u for u, _ in self.parts]
        index = min(bisect.bisect_right(untils, progress), len(self.parts) - 1)
        lo = untils[index - 1] if index > 0 else 0.0
        hi = untils[index]
        inner = min(max((progress - lo) / (hi - lo), 0.0), 1.0)
        return self.parts[index][1](inner)

    def breakpoints(self) -> tuple[float, ...]:
        points: list[float] = []
        lo = 0.0
        for until, schedule in self.parts:
            points.append(lo)
            points.extend(lo + (until - lo) * b for b in schedule.breakpoints() if b < 1.0)
            lo = until
        points.append(1.0)
        return tuple(points)


def cooldown(
    high: float = 5.0,
    low: float = 1.0,
    start: float = 0.2,
    end: float = 0.8,
    shape: str = "cosine",
) -> Schedule:
    """Cooldown temperature schedule: τ = ``high`` until ``start``, down to ``low`` by ``end``.

    Li et al. (NAACL 2025, "Upsample or Upweight? Balanced Training on Heavily Imbalanced
    Datasets") propose Cooldown: start with a high sampling temperature, which upsamples small
    domains and lowers gradient variance so training converges faster, then lower it so the
    small domains are not overfitted. Their exact schedule values could not be retrieved while
    writing this (only the abstract was available), so the defaults are ours:

    - ``high = 5``: the usual "high" temperature for imbalanced multilingual data (T = 5 in
      Arivazhagan et al. 2019's massively multilingual NMT, where it balanced high- and
      low-resource directions);
    - ``low = 1``: natural proportions, which the paper's analysis says avoids overfitting the
      small domains;
    - ``start = 0.2, end = 0.8``: the first fifth of training gets the fast-converging high τ,
      the last fifth trains on the natural mixture, and a cosine (smooth at both ends) links them.

    Args:
        high: initial temperature (>= ``low``).
        low: final temperature (> 0; 1 = natural proportions).
        start: progress at which cooling starts.
        end: progress at which τ reaches ``low`` (``start < end``).
        shape: "cosine", "linear" or "exponential" (geometric: equal τ ratios per progress).

    Returns:
        A :class:`Cosine`, :class:`Linear` or :class:`Exponential` schedule.

    Example:
        >>> s = cooldown(high=5.0, start=0.2, end=0.8)
        >>> [round(s(p), 6) for p in (0.0, 0.2, 0.5, 0.8, 1.0)]
        [5.0, 5.0, 3.0, 1.0, 1.0]
    """
    hi = _number("cooldown high", high)
    lo = _number("cooldown low", low)
    if not 0 < lo <= hi:
        raise ValueError(
            f"cooldown needs 0 < low <= high (it lowers τ), got high={hi!r}, low={lo!r}; use "
            "Linear or Cosine for a rising schedule."
        )
    ramps: dict[str, type[_Ramp]] = {"cosine": Cosine, "linear": Linear, "exponential": Exponential}
    if shape not in ramps:
        raise ValueError(f"unknown cooldown shape {shape!r}; valid shapes: {sorted(ramps)}.")
    return ramps[shape](hi, lo, begin=start, until=end)


SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "constant": Constant,
    "step": Step,
    "linear": Linear,
    "cosine": Cosine,
    "exponential": Exponential,
    "phases": Phases,
    "cooldown": cooldown,
}


def make_schedule(spec: Any) -> Schedule:
    """Builds a schedule from a number, a schedule, or a plain dict (e.g. a Hydra config).

    A dict names the schedule with ``"kind"`` (one of :data:`SCHEDULES`) and passes the other
    keys as arguments; nested schedules inside ``phases`` may be dicts too.

    Args:
        spec: a number (→ :class:`Constant`), a :class:`Schedule` (returned as is) or a mapping
            like ``{"kind": "cosine", "start": 5.0, "end": 1.0}``.

    Raises:
        ValueError: unknown kind (the error lists the valid kinds) or unknown/missing keys.
        TypeError: anything else.

    Example:
        >>> make_schedule({"kind": "cosine", "start": 5.0, "end": 1.0})
        Cosine(start=5.0, end=1.0, begin=0.0, until=1.0)
        >>> make_schedule(2)(0.3)
        2.0
        >>> make_schedule({"kind": "phases", "parts": [[0.5, 5], [1.0, {"kind": "linear",
        ...                "start": 5, "end": 1}]]})(0.75)
        3.0
    """
    if isinstance(spec, Schedule):
        return spec
    if isinstance(spec, numbers.Real) and not isinstance(spec, bool):
        return Constant(float(spec))
    if isinstance(spec, Mapping):
        return call_kind("schedule", SCHEDULES, spec)
    raise TypeError(
        f"a schedule spec must be a number, a Schedule or a mapping with 'kind', got {spec!r}."
    )


def check_schedule(
    name: str,
    schedule: Any,
    *,
    low: float | None = None,
    low_open: bool = False,
    high: float | None = None,
    high_open: bool = False,
    finite: bool = True,
    hint: str = "",
) -> Callable[[float], float]:
    """Checks that a schedule (any callable of progress) gives a valid value everywhere.

    The schedule is evaluated on the grid of :func:`reweight._checks.progress_grid`
    (0, 1/64, ..., 1, plus :meth:`Schedule.breakpoints` for schedules built here); every value
    must be a real number inside the interval given by ``low``/``high`` (and finite when
    ``finite``). A schedule that raises is reported as a ValueError naming ``name``.

    Args:
        name: the field the schedule configures (used in every error).
        schedule: a :class:`Schedule` or a callable of progress in [0, 1].
        low, low_open, high, high_open, finite: the valid interval of the values.
        hint: how to fix a bad value, appended to the error.

    Returns:
        ``schedule``, unchanged.

    Example:
        >>> check_schedule("r", Linear(1.0, -1.0), low=0.0, low_open=True)
        Traceback (most recent call last):
        ...
        ValueError: r at progress 0.5 must lie in (0, inf), got 0.0.
    """
    if not callable(schedule):
        raise TypeError(
            f"{name} must be a schedule (a callable of training progress), got {schedule!r}."
        )
    grid = progress_grid(schedule.breakpoints() if isinstance(schedule, Schedule) else ())
    for progress in grid.tolist():
        where = f"{name} at progress {progress:g}"
        try:
            value = schedule(progress)
        except Exception as error:
            raise ValueError(
                f"{where} raised {type(error).__name__}: {error}; the schedule must accept "
                "every progress in [0, 1]."
            ) from error
        if not isinstance(value, numbers.Real):
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise TypeError(
                    f"{where} returned {value!r} ({type(value).__name__}); a schedule must "
                    "return a real number."
                ) from None
        check_range(
            where,
            value,
            low=low,
            low_open=low_open,
            high=high,
            high_open=high_open,
            finite=finite,
            hint=hint,
        )
    return schedule


def _sequence(name: str, values: Any) -> Sequence[Any]:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        try:
            return list(values)
        except TypeError as error:
            raise TypeError(f"{name} must be a sequence, got {values!r}.") from error
    return values
