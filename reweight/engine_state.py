"""The Reweighter's checkpoint state: written whole, validated whole before any part is
applied, versioned (DESIGN.md, "Resume = uninterrupted")."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from reweight._checks import state_step, state_step_of_draws

if TYPE_CHECKING:  # pragma: no cover
    from reweight.engine import Reweighter

__all__ = ["MAX_STEP", "STATE_VERSION", "restore", "state_of"]

STATE_VERSION = 4  # 4: one state per source, the target's own masses
STATE_KEYS = ("fingerprint", "global_step", "total_steps", "record", "target", "sources", "sampler")
MAX_STEP = 2**31 - 1  # the loss table stores steps as int32


def state_of(rw: Reweighter) -> dict[str, Any]:
    """:meth:`Reweighter.state_dict`."""
    return {
        "version": STATE_VERSION,
        "fingerprint": rw._fingerprint,
        "global_step": rw.global_step,
        "total_steps": rw.total_steps,
        "record": rw._record.state_dict(),
        "target": rw._composition.state_dict(),
        "sources": {s.name: s.state_dict() for s in rw.sources},
        "sampler": rw.sampler.state_dict(),
    }


def restore(rw: Reweighter, state: Mapping[str, Any]) -> None:
    """:meth:`Reweighter.load_state_dict`: every part is validated (the per-item arrays one
    chunk at a time, without copies), then all of it is applied, the arrays copied in place."""
    own = _parse(rw, state)
    _apply(rw, own)
    saved, kept = own["total_steps"], rw.total_steps
    if saved is not None and kept not in (None, saved):
        warnings.warn(
            f"the checkpoint's run length is {saved} optimizer steps but this Reweighter was "
            f"built with total_steps={kept}; keeping {kept} (schedules read progress as step / "
            f"{kept}).",
            RuntimeWarning,
            stacklevel=3,
        )


def _parse(rw: Reweighter, state: Any) -> dict[str, Any]:
    """Every part of a state, validated (each part validates its own fields); changes nothing.
    Also checks that π set after the restore (the domain sources' at the restored progress)
    can be drawn from the saved factors, so applying cannot fail."""
    step, total = _parse_header(state, rw._fingerprint, rw.source_names)
    sources = {}
    for source in rw.sources:
        source.check_state(state["sources"][source.name], step)
        sources[source.name] = source.parse_state(state["sources"][source.name])
    progress = rw._progress_at(step, total if rw.total_steps is None else rw.total_steps)
    probs = rw._composition.domain_probs_after(sources, progress)
    return {
        "global_step": step,
        "total_steps": total,
        "sources": sources,
        "probs": probs,
        "sampler": rw.sampler.parse_state(state["sampler"], None if probs is None else probs[1]),
        "record": rw._record.parse_state(state["record"]),
        "target": rw._composition.parse_state(state["target"]),
    }


def _apply(rw: Reweighter, own: Mapping[str, Any]) -> None:
    """Applies what :func:`_parse` returned (cannot fail)."""
    rw.sampler.apply_state(own["sampler"])
    for source in rw.sources:
        source.apply_state(own["sources"][source.name])
    rw.global_step = own["global_step"]
    rw.sampler.clock = rw.global_step
    if rw.total_steps is None:
        rw.total_steps = own["total_steps"]
    rw._record.apply_state(own["record"])
    rw._composition.apply_state(own["target"])
    rw._composition.apply(own["probs"], force=True)


def _differences(saved: Any, current: Mapping[str, Any], path: str = "") -> list[str]:
    """The keys (``sources.mixing.mode``, ...) where a saved fingerprint differs."""
    if not isinstance(saved, Mapping):
        return [path or "the whole fingerprint"]
    out: list[str] = []
    for key in sorted(set(saved) | set(current), key=str):
        here = f"{path}.{key}" if path else str(key)
        if isinstance(current.get(key), Mapping) and isinstance(saved.get(key), Mapping):
            out += _differences(saved[key], current[key], here)
        elif saved.get(key) != current.get(key):
            out.append(here)
    return out


def _parse_header(
    state: Any, fingerprint: Mapping[str, Any], names: list[str]
) -> tuple[int, int | None]:
    """Checks a state's version, keys, fingerprint, steps and sources; returns (step, total)."""
    if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
        version = state.get("version") if isinstance(state, Mapping) else None
        raise ValueError(
            f"not a Reweighter state of version {STATE_VERSION} (got version {version!r})."
        )
    missing = [key for key in STATE_KEYS if key not in state]
    if missing:
        raise ValueError(
            f"Reweighter state: missing field(s) {missing}; the checkpoint is truncated or "
            "was written by another version."
        )
    saved = state["fingerprint"]
    if saved != fingerprint:
        diff = _differences(saved, fingerprint)
        raise ValueError(
            f"this checkpoint's reweighting state comes from another configuration (differs "
            f"in: {', '.join(diff)}); resume with the same data and reweighting settings, "
            "or start without restoring the reweighter."
        )
    step = state_step(state, "global_step", MAX_STEP)
    total = state["total_steps"]
    if total is not None:
        total = state_step(state, "total_steps", None, minimum=1)
    clock = state_step_of_draws(state["sampler"])
    if clock is not None and clock > step:
        raise ValueError(
            f"Reweighter state: draws in flight were made at step {clock}, after "
            f"'global_step' {step}; the state is corrupt."
        )
    if not isinstance(state["sources"], Mapping) or set(state["sources"]) != set(names):
        raise ValueError(f"Reweighter state: 'sources' must hold the states of {names}.")
    return step, total
