"""Validation helpers shared by the whole package (no project imports): every check names the
value, shows it and says how to fix it."""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import math
import numbers
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

# Progress may exceed [0, 1] by this much from float round-off (step / total); it is clamped.
PROGRESS_SLACK = 1e-9

# Schedules and rules are checked at construction on 0, 1/64, ..., 1 plus their own breakpoints.
PROGRESS_GRID_STEPS = 64

# Smallest positive float32 (normal) value: the sampler stores factors and domain probabilities
# as float32 and rejects positive values below it.
FLOAT32_TINY = float(np.finfo(np.float32).tiny)
FLOAT32_MAX = float(np.finfo(np.float32).max)
CHUNK = 1 << 20
"""Items processed at once by the O(N) passes (bounds their temporary memory)."""


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer (Python or numpy), bools excluded."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """Whether ``value`` is a real number (Python or numpy), bools excluded."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def from_tensor(values: Any) -> Any:
    """A tensor as a numpy array (detached, on the CPU; no copy on the CPU); anything else as
    it is."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return values


def chunks(n: int) -> Iterator[slice]:
    """Slices covering ``range(n)`` in order, :data:`CHUNK` items each (the last one shorter).

    Example:
        >>> list(chunks(3))
        [slice(0, 3, None)]
    """
    for start in range(0, n, CHUNK):
        yield slice(start, min(start + CHUNK, n))


def check_progress(progress: Any) -> float:
    """``progress`` as a float in [0, 1]; tiny round-off outside the range is clamped."""
    if isinstance(progress, bool) or not isinstance(progress, numbers.Real):
        raise TypeError(
            f"progress must be a real number in [0, 1] (fraction of training done), got "
            f"{progress!r} of type {type(progress).__name__}."
        )
    value = float(progress)
    if not math.isfinite(value) or not -PROGRESS_SLACK <= value <= 1.0 + PROGRESS_SLACK:
        raise ValueError(
            f"progress must lie in [0, 1] (fraction of training done), got {value!r}; divide "
            "the current step by the total number of steps."
        )
    return min(max(value, 0.0), 1.0)


def check_real(name: str, value: Any, *, finite: bool = True) -> float:
    """``value`` as a float; rejects bools, non-numbers, NaN and (if ``finite``) infinities."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__}).")
    out = float(value)
    if math.isnan(out) or (finite and not math.isfinite(out)):
        kind = "a finite number" if finite else "a number (not NaN)"
        raise ValueError(f"{name} must be {kind}, got {out!r}.")
    return out


def check_int(name: str, value: Any, *, minimum: int, hint: str = "") -> int:
    """``value`` as an int >= ``minimum`` (bools rejected); ``hint`` is added to errors."""
    end = f"; {hint}" if hint else "."
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__}){end}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {int(value)}{end}")
    return int(value)


def _bound(value: float | None, sign: str) -> str:
    return f"{sign}inf" if value is None else f"{value:g}"


def check_range(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = True,
    hint: str = "",
) -> float:
    """``value`` as a float in the interval given by ``low``/``high`` (open or closed ends).

    Bools and non-numbers raise TypeError; NaN, infinities (when ``finite``) and values outside
    the interval raise ValueError naming ``name``, showing the value and adding ``hint``.

    Example:
        >>> check_range("decay", 0.5, low=0.0, high=1.0, high_open=True)
        0.5
    """
    out = check_real(name, value, finite=finite)
    above = low is None or (out > low if low_open else out >= low)
    below = high is None or (out < high if high_open else out <= high)
    if not (above and below):
        interval = (
            f"{'(' if low_open or low is None else '['}{_bound(low, '-')}, "
            f"{_bound(high, '')}{')' if high_open or high is None else ']'}"
        )
        raise ValueError(
            f"{name} must lie in {interval}, got {out!r}" + (f"; {hint}" if hint else ".")
        )
    return out


def check_choice(name: str, value: Any, valid: Sequence[str], what: str = "values") -> str:
    """``value`` if it is one of the names ``valid``; the error lists them.

    Example:
        >>> check_choice("mode", "sample", ("sample", "weight"), "modes")
        'sample'
    """
    if not isinstance(value, str):
        raise TypeError(
            f"{name} must be a string, one of {', '.join(valid)}; got {value!r} "
            f"({type(value).__name__})."
        )
    if value not in valid:
        raise ValueError(f"{name} {value!r} is unknown; valid {what}: {', '.join(valid)}.")
    return value


def progress_grid(breakpoints: Iterable[float] = ()) -> np.ndarray:
    """The progress values a schedule or rule is checked at: 0, 1/64, ..., 1 and the given
    breakpoints that lie in [0, 1] (sorted, unique).

    Example:
        >>> grid = progress_grid([0.3])
        >>> grid.size, float(grid[0]), float(grid[-1]), bool((grid == 0.3).any())
        (66, 0.0, 1.0, True)
    """
    points = set(np.linspace(0.0, 1.0, PROGRESS_GRID_STEPS + 1).tolist())
    for point in breakpoints:
        value = float(point)
        if 0.0 <= value <= 1.0:
            points.add(value)
    return np.array(sorted(points), dtype=np.float64)


@contextlib.contextmanager
def named(name: str) -> Iterator[None]:
    """Re-raises a TypeError or ValueError from inside the block with ``name: `` in front of its
    message (unless the message already names it), so every error names its field.

    Example:
        >>> with named("rule"):
        ...     check_real("tau", "x")
        Traceback (most recent call last):
        ...
        TypeError: rule: tau must be a real number, got 'x' (str).
    """
    try:
        yield
    except (TypeError, ValueError) as error:
        message = str(error)
        if name in message:
            raise
        kind = TypeError if isinstance(error, TypeError) else ValueError
        raise kind(f"{name}: {message}") from error


def as_float_array(name: str, values: Any) -> np.ndarray:
    """A 1-D float64 copy of an array-like or tensor."""
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    try:
        array = np.array(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a sequence of numbers, got {values!r}.") from error
    return array


def check_weights(name: str, values: Any, num_domains: int | None = None) -> np.ndarray:
    """Non-negative finite weights (one per domain), not all zero, as float64."""
    array = as_float_array(name, values)
    if num_domains is not None and array.size != num_domains:
        raise ValueError(
            f"{name} has {array.size} entries for {num_domains} domains; give one per domain."
        )
    if array.size == 0:
        raise ValueError(f"{name} is empty; give one weight per domain.")
    bad = ~np.isfinite(array) | (array < 0)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} must be finite and >= 0; entry {first} is {float(array[first])!r}."
        )
    if not array.sum() > 0:
        raise ValueError(f"{name} is all zero; give at least one positive weight.")
    return array


def check_probs(name: str, values: Any, num_domains: int) -> np.ndarray:
    """A probability vector (finite, >= 0, sums to 1 within 1e-9) of length ``num_domains``."""
    array = check_weights(name, values, num_domains)
    total = float(array.sum())
    if abs(total - 1.0) > 1e-9:
        raise ValueError(f"{name} must sum to 1, sums to {total!r}.")
    return array


_ITEM_STATE_VIEWS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "reweight_item_state_views", default=False
)


@contextlib.contextmanager
def item_state_views() -> Iterator[None]:
    """Within it, :func:`item_state` hands out views of the live per-item arrays instead of
    copies: for a writer that serialises the state before anything changes it
    (:func:`reweight.state_files.save_state`), so that no second copy is ever held."""
    token = _ITEM_STATE_VIEWS.set(True)
    try:
        yield
    finally:
        _ITEM_STATE_VIEWS.reset(token)


def item_state(values: np.ndarray) -> torch.Tensor | np.ndarray:
    """A per-item array for a state dict, as the row-major flattening of ``values``: a CPU
    tensor copy, or under :func:`item_state_views` ``values`` itself (a numpy view, maybe
    strided and of any shape, that the writer flattens chunk by chunk).

    Example:
        >>> live = np.arange(4.0).reshape(2, 2)
        >>> item_state(live).tolist()
        [0.0, 1.0, 2.0, 3.0]
        >>> with item_state_views():
        ...     item_state(live) is live
        True
    """
    if _ITEM_STATE_VIEWS.get():
        return values
    return torch.from_numpy(np.array(values, copy=True).reshape(-1))


def state_array(values: np.ndarray) -> torch.Tensor:
    """A float64 tensor copy for a state dict (safe for ``torch.load(weights_only=True)``)."""
    return torch.from_numpy(np.array(values, dtype=np.float64, copy=True))


# ---------------------------------------------------------------- item ids and item weights
#
# The sampler's per-item inputs: a wrong type raises TypeError, a wrong value (an id out of
# range, a negative or non-finite weight) ValueError.


def index_array(indices: Any) -> np.ndarray:
    """``indices`` as a contiguous 1-D int64 array (no copy when it already is one); checks
    the type (TypeError unless integers), not the range.

    Example:
        >>> index_array([[3], [1]]).tolist()
        [3, 1]
    """
    array = np.asarray(from_tensor(indices)).reshape(-1)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(
            f"item indices must be integers, got dtype {array.dtype}; pass item ids such as "
            "batch['index']."
        )
    return np.ascontiguousarray(array, dtype=np.int64)


def check_indices(indices: Any, num_items: int) -> np.ndarray:
    """:func:`index_array`, each id in ``[0, num_items)`` (else ValueError).

    Example:
        >>> check_indices([4], 3)
        Traceback (most recent call last):
        ...
        ValueError: item index 4 is out of range for 3 items (1 bad indices); indices must lie in [0, 3).
    """  # noqa: E501
    array = index_array(indices)
    if array.size and (array.min() < 0 or array.max() >= num_items):
        bad = array[(array < 0) | (array >= num_items)]
        raise ValueError(
            f"item index {int(bad[0])} is out of range for {num_items} items "
            f"({bad.size} bad indices); indices must lie in [0, {num_items})."
        )
    return array


def value_array(values: Any) -> np.ndarray:
    """``values`` as a contiguous 1-D float64 array (no copy when it already is one); checks
    nothing else."""
    return np.ascontiguousarray(np.asarray(from_tensor(values), dtype=np.float64).reshape(-1))


def _count_where(array: np.ndarray, test: Callable[[np.ndarray], np.ndarray]) -> tuple[int, int]:
    """(how many entries pass ``test``, the first that does or −1), one chunk at a time."""
    count, first = 0, -1
    for part in chunks(array.shape[0]):
        hits = test(array[part])
        found = int(np.count_nonzero(hits))
        if found and first < 0:
            first = part.start + int(np.flatnonzero(hits)[0])
        count += found
    return count, first


def check_factors(
    name: str, values: Any, length: int | None = None, *, keep_float32: bool = False
) -> np.ndarray:
    """``values`` as a 1-D float64 array of ``length`` weights stored as float32: each finite,
    >= 0, and either 0 or within float32's normal range (ValueError naming the first bad one).

    Checked one chunk at a time (no temporary of the array's size); with ``keep_float32`` a
    float32 array is returned as it is, not copied to float64.

    Example:
        >>> check_factors("static factor", [1, 0, 2.5]).tolist()
        [1.0, 0.0, 2.5]
    """
    array = from_tensor(values)
    if keep_float32 and isinstance(array, np.ndarray) and array.dtype == np.float32:
        array = array.reshape(-1)
    else:
        array = np.asarray(array, dtype=np.float64).reshape(-1)
    if length is not None and array.shape[0] != length:
        raise ValueError(
            f"{name} has {array.shape[0]} entries but {length} were expected; "
            f"pass one value per item (or per domain for domain probabilities)."
        )
    count, first = _count_where(array, lambda a: ~np.isfinite(a))
    if count:
        raise ValueError(
            f"{name} contains {count} non-finite value(s) (first at position {first}: "
            f"{array[first]!r}); weights must be finite — mask or clip them before passing them."
        )
    count, first = _count_where(array, lambda a: (a > FLOAT32_MAX) | ((a > 0) & (a < FLOAT32_TINY)))
    if count:
        raise ValueError(
            f"{name} has {count} value(s) outside float32's normal range "
            f"(first at position {first}: {array[first]!r}); weights are stored as float32 — "
            "rescale them (only ratios matter) into [1.2e-38, 3.4e38] or use 0."
        )
    count, first = _count_where(array, lambda a: a < 0)
    if count:
        raise ValueError(
            f"{name} contains {count} negative value(s) (first at position {first}: "
            f"{array[first]!r}); weights must be >= 0 (use 0 to exclude an item)."
        )
    return array


# ---------------------------------------------------------------- rule states
#
# Every check below names the state (``what``, e.g. "doremi state") and the key, raises
# TypeError for a value of the wrong kind and ValueError for a wrong value, and never mutates.

PROB_TOL = 1e-9
"""How far a saved probability vector's sum may be from 1 (float64 round-off is ~1e-15)."""

FLOOR_TOL = 1e-12
"""How far below ``min_prob`` a saved probability may be (a running average of floored vectors
can round just under the floor)."""

HEADER_KEYS = ("rule", "version", "num_domains")


def check_state(
    state: Any, rule: str, version: int, num_domains: int, keys: tuple[str, ...]
) -> Mapping[str, Any]:
    """Checks a rule's state header (type, rule name, version, domain count) and its keys."""
    what = f"{rule} state"
    if not isinstance(state, Mapping):
        raise TypeError(f"{what} must be a mapping from state_dict(), got {type(state).__name__}.")
    missing = [key for key in HEADER_KEYS if key not in state]
    if missing:
        raise ValueError(f"{what} lacks key(s) {missing}; it is not from state_dict().")
    got_rule = state["rule"]
    if not isinstance(got_rule, str) or got_rule != rule:
        raise ValueError(
            f"state belongs to rule {got_rule!r} ('rule'), not {rule!r}; load it into the rule "
            "that saved it (the configuration must match the checkpoint)."
        )
    got_version = state["version"]
    if not is_int(got_version) or got_version != version:
        raise ValueError(
            f"{what} has 'version' {got_version!r}; this version of reweight reads version "
            f"{version}. Re-create the state with a matching reweight version."
        )
    got_k = state["num_domains"]
    if not is_int(got_k) or got_k != num_domains:
        raise ValueError(
            f"{what} is for {got_k!r} domains ('num_domains'), this rule has {num_domains}; the "
            "domains of the checkpoint and of the configuration must match."
        )
    missing = [key for key in keys if key not in state]
    if missing:
        raise ValueError(f"{what} lacks key(s) {missing}; it is not from state_dict().")
    return state


def state_int(state: Mapping[str, Any], key: str, what: str, *, minimum: int = 0) -> int:
    """``state[key]`` as an int >= ``minimum`` (bools and floats rejected)."""
    value = state[key]
    if not is_int(value):
        raise TypeError(
            f"{what}: {key!r} must be an integer, got {value!r} ({type(value).__name__})."
        )
    if int(value) < minimum:
        raise ValueError(f"{what}: {key!r} must be >= {minimum}, got {int(value)}.")
    return int(value)


def state_progress(state: Mapping[str, Any], what: str) -> float:
    """``state["progress"]`` as a float in [0, 1] (round-off clamped as by check_progress)."""
    value = state["progress"]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{what}: 'progress' must be a real number in [0, 1], got {value!r} "
            f"({type(value).__name__})."
        )
    out = float(value)
    if not math.isfinite(out) or not -PROGRESS_SLACK <= out <= 1.0 + PROGRESS_SLACK:
        raise ValueError(f"{what}: 'progress' must lie in [0, 1], got {out!r}.")
    return min(max(out, 0.0), 1.0)


def state_vector(state: Mapping[str, Any], key: str, what: str, num_domains: int) -> np.ndarray:
    """A float64 copy of ``state[key]``: 1-D, real, finite, one entry per domain.

    Accepts a tensor, a numpy array or a list/tuple of numbers; rejects bools, complex numbers,
    other shapes and non-finite entries.
    """
    value = state[key]
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{what}: {key!r} must hold real numbers, got dtype {value.dtype}.")
        array = value.detach().to("cpu", torch.float64).numpy()
    elif isinstance(value, np.ndarray | list | tuple):
        array = np.asarray(value)
        if array.dtype.kind not in "iuf":
            raise TypeError(f"{what}: {key!r} must hold real numbers, got {value!r}.")
    else:
        raise TypeError(
            f"{what}: {key!r} must be a 1-D tensor with one number per domain, got "
            f"{value!r} ({type(value).__name__})."
        )
    if array.ndim != 1 or array.size != num_domains:
        raise ValueError(
            f"{what}: {key!r} has shape {tuple(array.shape)} ({array.size} entries), expected "
            f"({num_domains},); it must hold {num_domains} finite numbers, one per domain."
        )
    bad = ~np.isfinite(array)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{what}: {key!r} entry {first} is {float(array[first])!r}; it must hold "
            f"{num_domains} finite numbers."
        )
    return np.array(array, dtype=np.float64, copy=True)


def state_probs(
    state: Mapping[str, Any], key: str, what: str, num_domains: int, *, min_prob: float = 0.0
) -> np.ndarray:
    """:func:`state_vector` that is a probability vector: >= 0, sums to 1 within
    :data:`PROB_TOL`, and every entry >= ``min_prob`` (within :data:`FLOOR_TOL`)."""
    array = state_vector(state, key, what, num_domains)
    negative = array < 0
    if negative.any():
        first = int(np.flatnonzero(negative)[0])
        raise ValueError(
            f"{what}: {key!r} is not a probability vector: entry {first} is "
            f"{float(array[first])!r} < 0."
        )
    total = float(array.sum())
    if abs(total - 1.0) > PROB_TOL:
        raise ValueError(
            f"{what}: {key!r} is not a probability vector: it sums to {total!r}, not 1."
        )
    low = array < min_prob - FLOOR_TOL
    if low.any():
        first = int(np.flatnonzero(low)[0])
        raise ValueError(
            f"{what}: {key!r} entry {first} is {float(array[first])!r}, below this rule's "
            f"min_prob={min_prob!r}; the checkpoint was saved with another min_prob (resume "
            "with its configuration) or is corrupt."
        )
    return array


def state_initial(
    what: str, key: str, array: np.ndarray, expected: np.ndarray, initial: str, counter: str
) -> None:
    """Checks that ``array`` still equals its initial value ``expected`` (described by
    ``initial``, e.g. ``"all zero"``) while the counter field ``counter`` is 0."""
    if not np.array_equal(array, expected):
        raise ValueError(
            f"{what}: {key!r} must be {initial} while {counter!r} is 0 (nothing has changed it "
            f"yet), got {array.tolist()!r}."
        )


# ---------------------------------------------------------------- sampler states
#
# The sampler's state is checked field by field as it is read; every bad field, of a wrong kind
# or a wrong value, raises ValueError (a corrupt state), naming ``what`` and the key.


def read_state_array(what: str, key: str, value: Any) -> np.ndarray:
    """A state field holding a tensor or array, as a numpy array of real numbers or bools;
    anything else raises ValueError naming ``what`` and ``key``.

    Example:
        >>> read_state_array("sampler state", "static", [1.0])
        Traceback (most recent call last):
        ...
        ValueError: sampler state: 'static' must be a tensor, got list.
    """
    if isinstance(value, torch.Tensor):
        try:
            value = value.detach().cpu().numpy()
        except (TypeError, RuntimeError) as error:
            raise ValueError(
                f"{what}: {key!r} is a {value.dtype} tensor, which this state never holds "
                f"({error}); the state is corrupt or was cast by another tool."
            ) from None
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{what}: {key!r} must be a tensor, got {type(value).__name__}.")
    if value.dtype.kind not in "biuf":
        raise ValueError(f"{what}: {key!r} must hold real numbers, got dtype {value.dtype}.")
    return value


def read_state_vector(what: str, key: str, value: Any, dtype: type) -> np.ndarray:
    """:func:`read_state_array` that is 1-D and holds integers (``dtype`` np.int64) or reals
    (np.float64), as a contiguous array of ``dtype``."""
    array = read_state_array(what, key, value)
    if array.ndim != 1:
        raise ValueError(
            f"{what}: {key!r} must be a 1-D tensor, got {type(array).__name__} of shape "
            f"{array.shape}."
        )
    kinds = "iu" if dtype is np.int64 else "iuf"
    if array.dtype.kind not in kinds:
        raise ValueError(
            f"{what}: {key!r} must hold {'integers' if kinds == 'iu' else 'reals'}, "
            f"got {array.dtype}."
        )
    return np.ascontiguousarray(array, dtype=dtype)


def read_state_scalar(what: str, key: str, value: Any) -> Any:
    """A state field holding one plain value (int, float, bool, str or None); a tensor, an
    array or a container raises ValueError naming ``what`` and ``key``."""
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(
        f"{what}: {key!r} must be a single plain value, got {type(value).__name__}; the state "
        "is corrupt."
    )


def read_state_int(what: str, key: str, value: Any, *, minimum: int) -> int:
    """A state field holding an integer >= ``minimum`` (a one-element tensor is accepted);
    anything else raises ValueError naming ``what`` and ``key``."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if not is_int(value):
        raise ValueError(f"{what}: {key!r} must be an integer, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{what}: {key!r} must be >= {minimum}, got {value!r}.")
    return int(value)


def call_kind(
    what: str, registry: Mapping[str, Callable[..., Any]], spec: Mapping[str, Any], **extra: Any
) -> Any:
    """Calls ``registry[spec["kind"]]`` with the other keys, checking names first."""
    kind = spec.get("kind")
    if not isinstance(kind, str) or kind not in registry:
        raise ValueError(f"unknown {what} kind {kind!r}; valid kinds: {sorted(registry)}.")
    builder = registry[kind]
    params = {str(k): v for k, v in spec.items() if k != "kind"}
    signature = inspect.signature(builder)
    accepted = [
        name
        for name, p in signature.parameters.items()
        if name not in extra and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"{what} kind {kind!r} got unknown key(s) {unknown}; valid keys: {accepted}."
        )
    missing = [
        name
        for name in accepted
        if signature.parameters[name].default is inspect.Parameter.empty and name not in params
    ]
    if missing:
        raise ValueError(f"{what} kind {kind!r} needs key(s) {missing}; valid keys: {accepted}.")
    return builder(**params, **extra)


def state_step(state: Mapping[str, Any], key: str, maximum: int | None, *, minimum: int = 0) -> int:
    """An integer step field of a Reweighter state, in [minimum, maximum]."""
    value = state[key]
    if not is_int(value) or value < minimum or (maximum is not None and value > maximum):
        bound = "" if maximum is None else f" and <= {maximum}"
        raise ValueError(
            f"Reweighter state: {key!r} must be an integer >= {minimum}{bound}, got {value!r}; "
            "the state is corrupt."
        )
    return int(value)


def state_step_of_draws(sampler_state: Any) -> int | None:
    """The latest step at which a sampler state's draws in flight were made (None when there
    are none or the state is malformed: the sampler's own validation names the problem)."""
    try:
        clock = np.asarray(torch.as_tensor(sampler_state["stream"]["clock"]).cpu().numpy())
    except (KeyError, TypeError, ValueError, RuntimeError):
        return None
    return int(clock.max()) if clock.size else None
