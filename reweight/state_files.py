"""A Reweighter's state as a directory: the per-item arrays streamed into ``.npy`` files, the
rest in one small ``torch.save`` file; for states too large to hold twice in memory.

:meth:`Reweighter.state_dict <reweight.engine.Reweighter.state_dict>` is a snapshot: it copies
every per-item array (16 bytes per item with a loss table), so saving it peaks at about twice
the steady memory: 32 GB at 10^9 items. :func:`save_state` writes the same state without the
copies, from views of the live arrays, one chunk at a time (peak: steady plus one chunk), and
:func:`load_state` memory-maps the files and restores through the usual validated, in-place
:meth:`~reweight.engine.Reweighter.load_state_dict` (the mapped pages are the page cache's,
which the kernel can drop, not a second copy). Both are synchronous: the state written is the
state at the call.

Layout of ``path``: ``state.pt`` (the state with each per-item array replaced by
``{"__reweight_array__": "<file>.npy"}``), ``<file>.npy`` per array, and ``COMPLETE``, written
last. A save replaces an existing directory only once the new one is complete, so an
interrupted save leaves the previous state intact.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from reweight._checks import CHUNK, item_state_views

if TYPE_CHECKING:  # pragma: no cover
    from reweight.engine import Reweighter

__all__ = ["load_state", "save_state"]

ARRAY_KEY = "__reweight_array__"
STATE_FILE = "state.pt"
COMPLETE_FILE = "COMPLETE"


def _replace_leaves(value: Any, visit: Callable[[Any], Any]) -> Any:
    """``value`` with each leaf (at any depth of dicts and lists) replaced by ``visit(leaf)``;
    a numpy array and an array-file marker ``{ARRAY_KEY: name}`` are leaves."""
    if isinstance(value, dict) and set(value) != {ARRAY_KEY}:
        return {key: _replace_leaves(item, visit) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_replace_leaves(item, visit) for item in value)
    return visit(value)


def _write_flat(array: np.ndarray, file: Path) -> None:
    """The row-major flattening of ``array`` (any shape and strides) into ``file`` as a 1-D
    ``.npy``, a chunk of about :data:`CHUNK` elements at a time."""
    out = np.lib.format.open_memmap(file, mode="w+", dtype=array.dtype, shape=(array.size,))
    rows = array.reshape(len(array), -1) if array.ndim > 1 else array[:, None]
    width = rows.shape[1]
    step = max(1, CHUNK // width)
    for start in range(0, len(rows), step):
        stop = min(len(rows), start + step)
        out[start * width : stop * width] = rows[start:stop].reshape(-1)
    out.flush()
    del out


def save_state(reweighter: Reweighter, path: str | os.PathLike[str]) -> Path:
    """Writes ``reweighter``'s state into the directory ``path`` without copying its per-item
    arrays (see the module's text); returns the path.

    Example:
        >>> import tempfile
        >>> from reweight import LossPriority, Reweighter
        >>> rw = Reweighter(domains=[0, 0, 1, 1], sources=[LossPriority()], seed=3)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     saved = save_state(rw, Path(tmp) / "reweighter")
        ...     twin = Reweighter(domains=[0, 0, 1, 1], sources=[LossPriority()], seed=3)
        ...     load_state(twin, saved)
        ...     sorted(p.name for p in saved.iterdir())[:2]
        ['COMPLETE', 'array-0000.npy']
    """
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    files: list[str] = []

    def write(leaf: Any) -> Any:
        if not isinstance(leaf, np.ndarray):
            return leaf
        name = f"array-{len(files):04d}.npy"
        _write_flat(leaf, partial / name)
        files.append(name)
        return {ARRAY_KEY: name}

    with item_state_views():
        state = _replace_leaves(reweighter.state_dict(), write)
    torch.save(state, partial / STATE_FILE)
    (partial / COMPLETE_FILE).write_text("\n".join(files) + "\n")
    if path.exists():
        previous = path.with_name(path.name + ".previous")
        if previous.exists():
            shutil.rmtree(previous)
        path.rename(previous)
        partial.rename(path)
        shutil.rmtree(previous)
    else:
        partial.rename(path)
    return path


def _read_arrays(state: Any, directory: Path) -> Any:
    """``state`` with each array-file marker replaced by its file, memory-mapped."""

    def read(leaf: Any) -> Any:
        if isinstance(leaf, dict):  # a marker
            return np.load(directory / str(leaf[ARRAY_KEY]), mmap_mode="r")
        return leaf

    return _replace_leaves(state, read)


def load_state(reweighter: Reweighter, path: str | os.PathLike[str]) -> None:
    """Restores a state written by :func:`save_state` into ``reweighter``, validated and in
    place as :meth:`~reweight.engine.Reweighter.load_state_dict` (a bad or foreign state
    raises ValueError and changes nothing); the arrays are read memory-mapped."""
    path = Path(path)
    if not (path / COMPLETE_FILE).is_file() or not (path / STATE_FILE).is_file():
        raise ValueError(
            f"{str(path)!r} is not a complete saved Reweighter state (no {COMPLETE_FILE!r} or "
            f"{STATE_FILE!r} in it); give the directory that Reweighter.save wrote."
        )
    state = torch.load(path / STATE_FILE, weights_only=True)
    try:
        state = _read_arrays(state, path)
    except (OSError, ValueError) as error:
        raise ValueError(f"{str(path)!r}: an array file is missing or corrupt ({error}).") from None
    reweighter.load_state_dict(state)
