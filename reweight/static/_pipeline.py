"""Sources of documents, ordered parallel map over blocks, progress bars, streaming ``.npy``.

This process cuts the input into blocks (:class:`~reweight.static.io.Chunk`) and hands them to
a pool of worker processes; results come back in input order. For uncompressed JSONL and text
files a block is only a byte range: the worker reads those bytes itself, so every byte is read
once, by one worker, and nothing large passes through this process. Compressed files, Parquet
record batches and in-memory documents are read here and sent. At most ``2 × workers`` blocks
are in flight, so memory stays bounded.
"""

from __future__ import annotations

import io
import multiprocessing
import multiprocessing.forkserver
import os
import sys
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reweight.static.io import Chunk, Files, iter_chunks

BLOCK_BYTES = 1 << 20  # blocks read by this process (compressed files)
MIN_BLOCK_BYTES = 1 << 16
MAX_BLOCK_BYTES = 1 << 22
BATCH_DOCS = 1024

Source = Any  # Files | str | os.PathLike | sequence of PathLike | iterable of document strings


def resolve_workers(workers: int | None) -> int:
    """``None`` or 0 → every core this process may use; otherwise the number given (≥ 1)."""
    if workers is None or workers == 0:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - macOS / Windows
            return max(1, os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be an int >= 0 (0 = all cores), got {workers!r}.")
    return workers


def resolve_block_bytes(block_bytes: int | None, files: Files | None, workers: int) -> int:
    """The block size to use: ``block_bytes`` if given, else the input size over 4 blocks per
    worker, clamped to [64 KiB, 4 MiB] (large blocks cost less to hand out; enough of them
    keep every worker busy).

    Example:
        >>> resolve_block_bytes(None, None, 8), resolve_block_bytes(4096, None, 8)
        (1048576, 4096)
    """
    if block_bytes is not None:
        if isinstance(block_bytes, bool) or not isinstance(block_bytes, int) or block_bytes < 1:
            raise ValueError(f"block_bytes must be a positive int or None, got {block_bytes!r}.")
        return block_bytes
    if files is None:
        return BLOCK_BYTES
    total = sum(p.stat().st_size for p in files.paths if p.is_file())
    return int(min(MAX_BLOCK_BYTES, max(MIN_BLOCK_BYTES, total // (4 * max(workers, 1)))))


def as_files(source: Source, *, text_field: str, skip_bad_lines: bool, format: str) -> Files | None:
    """The :class:`Files` a source names, or None when it is an iterable of documents.

    A ``str`` or ``os.PathLike`` is one path; a list or tuple whose items are all
    ``os.PathLike`` (e.g. ``pathlib.Path``) is several paths; a :class:`Files` is used as is;
    anything else is an iterable of document strings.
    """
    if isinstance(source, Files):
        return source
    if isinstance(source, (str, os.PathLike)):
        return Files(source, text_field=text_field, format=format, skip_bad_lines=skip_bad_lines)
    if (
        isinstance(source, (list, tuple))
        and source
        and all(isinstance(s, os.PathLike) for s in source)
    ):
        return Files(source, text_field=text_field, format=format, skip_bad_lines=skip_bad_lines)
    return None


def describe(source: Source) -> str:
    """Short description of a source for error messages."""
    if not isinstance(source, Files):
        try:
            source = as_files(source, text_field="text", skip_bad_lines=False, format="auto")
        except (TypeError, ValueError):
            source = None
    if isinstance(source, Files):
        names = [str(p) for p in source.paths]
        return f"files {names[:3]}{' ...' if len(names) > 3 else ''}"
    return "the documents given"


def source_chunks(
    source: Source,
    files: Files | None,
    *,
    block_bytes: int = BLOCK_BYTES,
    batch_docs: int = BATCH_DOCS,
    all_columns: bool = False,
    spans: bool = False,
) -> Iterator[Chunk]:
    """Blocks of a source: file blocks for :class:`Files` (byte ranges that workers read, with
    ``spans``), batches of in-memory documents."""
    if files is not None:
        yield from iter_chunks(
            files,
            [files.text_field],
            all_columns=all_columns,
            block_bytes=block_bytes,
            spans=spans,
        )
        return
    if isinstance(source, (str, bytes)):
        raise TypeError("give documents as a list of strings, or a path / Files for files.")
    try:
        iterator = iter(source)
    except TypeError:
        raise TypeError(
            f"expected documents (an iterable of strings) or files (a path, a list of Paths or "
            f"Files), got {type(source).__name__}."
        ) from None
    start = 0
    batch: list[Any] = []
    for doc in iterator:
        batch.append(doc)
        if len(batch) >= batch_docs:
            yield Chunk("<documents>", "docs", start, batch)
            start += len(batch)
            batch = []
    if batch:
        yield Chunk("<documents>", "docs", start, batch)


def warm_up() -> None:
    """Builds the character table and loads the compiled kernels (in a worker process)."""
    from reweight.static.features import HashedNgrams
    from reweight.static.tasks import BlockTask

    chunk = Chunk("<warm up>", "docs", 0, ["warm up"])
    BlockTask(HashedNgrams(), "text", False)(chunk)
    BlockTask(HashedNgrams(), "text", False, np.zeros(10_000))(chunk)


_PRELOAD = "reweight.static._preload"


def _context() -> Any:
    """``forkserver`` where available (its server imports and warms the kernels once per
    program, and workers fork from it already warm; it never forks this process, so it is safe
    whatever threads run here), else ``spawn``."""
    if "forkserver" not in multiprocessing.get_all_start_methods():  # pragma: no cover
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    server = getattr(multiprocessing.forkserver, "_forkserver", None)
    preload = list(getattr(server, "_preload_modules", ["__main__"]))
    if _PRELOAD not in preload:
        context.set_forkserver_preload([*preload, _PRELOAD])
    return context


def _run_task(task: Callable[[Chunk], Any], chunk: Chunk) -> Any:
    return task(chunk)


@dataclass
class WorkerPool:
    """Worker processes shared by several passes (``executor`` is None for one process)."""

    executor: ProcessPoolExecutor | None
    workers: int


@contextmanager
def worker_pool(workers: int | None) -> Iterator[WorkerPool]:
    """A pool of ``workers`` processes (0 = all cores); with 1 everything runs in this process.

    As with any multiprocessing code, a script that uses ``workers > 1`` must guard its entry
    point with ``if __name__ == "__main__":``.
    """
    n = resolve_workers(workers)
    if n <= 1:
        yield WorkerPool(None, 1)
        return
    executor = ProcessPoolExecutor(max_workers=n, mp_context=_context(), initializer=warm_up)
    try:
        yield WorkerPool(executor, n)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def map_ordered(
    task: Callable[[Chunk], Any], chunks: Iterable[Chunk], pool: WorkerPool
) -> Generator[tuple[Chunk, Any], None, None]:
    """(chunk, task(chunk)) in input order, computed by the pool's workers.

    The task (small: a featurizer and at most one bucket-sized array) travels with each block;
    each block is read once by this process and sent to one worker. At most ``2 × workers``
    blocks are in flight.
    """
    if pool.executor is None:
        for chunk in chunks:
            yield chunk, task(chunk)
        return
    window = 2 * pool.workers
    pending: deque[tuple[Chunk, Future[Any]]] = deque()
    try:
        for chunk in chunks:
            pending.append((chunk, pool.executor.submit(_run_task, task, chunk)))
            if len(pending) >= window:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()
    finally:
        for _, future in pending:
            future.cancel()


def progress_bar(enabled: bool, desc: str) -> Any:
    """A tqdm bar counting documents (shows documents/s), or a no-op when disabled."""
    from tqdm.auto import tqdm

    return tqdm(
        desc=desc,
        unit="doc",
        unit_scale=True,
        disable=not enabled,
        file=sys.stderr,
        mininterval=0.5,
        dynamic_ncols=True,
    )


class NpyStreamWriter:
    """Writes a 1-D ``.npy`` file of unknown length in pieces (bounded memory), atomically.

    The data goes to a temporary file next to ``path``; :meth:`close` writes the final header
    and renames it into place, :meth:`abort` deletes it.

    Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "w.npy"
        >>> with NpyStreamWriter(path) as w:
        ...     w.write(np.array([1.0, 2.0])); w.write(np.array([3.0]))
        >>> np.load(path).tolist()
        [1.0, 2.0, 3.0]
    """

    def __init__(self, path: str | os.PathLike[str], dtype: Any = np.float64) -> None:
        self.path = Path(path)
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.count = 0
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._header_size = len(self._header(0))
        self._file: Any = open(self._tmp, "wb")  # noqa: SIM115 - closed in close()/abort()
        self._file.write(self._header(0))

    def _header(self, n: int) -> bytes:
        buffer = io.BytesIO()
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False}
        np.lib.format.write_array_header_1_0(buffer, {**header, "shape": (n,)})
        return buffer.getvalue()

    def write(self, values: np.ndarray) -> None:
        """Appends values (converted to the file's dtype)."""
        array = np.ascontiguousarray(values, dtype=self.dtype).reshape(-1)
        self._file.write(array.tobytes())
        self.count += array.size

    def close(self) -> None:
        """Finishes the header and moves the file into place."""
        header = self._header(self.count)
        if len(header) != self._header_size:  # pragma: no cover - only past ~10^40 items
            self.abort()
            raise ValueError(f"too many values ({self.count}) for one .npy header.")
        self._file.seek(0)
        self._file.write(header)
        self._file.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Discards the partial file."""
        self._file.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> NpyStreamWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
