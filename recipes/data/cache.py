"""The on-disk corpus cache: one directory per build key, with a manifest.

An entry is a directory ``<stem>-<hash of the key>`` under the cache base
(:func:`default_cache_dir` unless given) holding ``tokens.npy`` (uint8, documents × seq_len),
``domains.npy`` (int64) and ``manifest.json`` (the corpus's :attr:`~recipes.data.Corpus.manifest`,
whose ``"key"`` records the build parameters and a :func:`fingerprint` of the source files).
:func:`load_cached` trusts an entry only if its key matches, its arrays rebuild a valid
:class:`~recipes.data.Corpus` with the recorded content hash and its sizes match the manifest;
otherwise the caller rebuilds and :func:`save_cached` replaces the entry atomically.

Example:
    >>> import tempfile
    >>> from recipes.data import Corpus
    >>> from recipes.data.cache import entry_path, load_cached, save_cached
    >>> key = {"format": 1, "seq_len": 4}
    >>> path = entry_path(tempfile.mkdtemp(), "demo", key)
    >>> corpus = Corpus.from_texts({"a": "x" * 8, "b": "y" * 8}, seq_len=4)
    >>> corpus = Corpus(corpus.tokens, corpus.domains, corpus.domain_names,
    ...                 manifest={"key": key, "domain_names": corpus.domain_names,
    ...                           "sizes": corpus.domain_sizes})
    >>> load_cached(path, key) is None, save_cached(path, corpus)
    (True, True)
    >>> load_cached(path, key).cache_hit, load_cached(path, {"format": 2}) is None
    (True, True)
    >>> import shutil; shutil.rmtree(path.parent)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from recipes.data.corpus import Corpus

__all__ = ["default_cache_dir", "entry_path", "fingerprint", "load_cached", "save_cached"]


def default_cache_dir() -> Path:
    """Where :func:`~recipes.data.build_corpus` caches by default: ``$REWEIGHT_CACHE/corpus`` or
    ``~/.cache/reweight/corpus``.

    Example:
        >>> from recipes.data import default_cache_dir
        >>> default_cache_dir().name
        'corpus'
    """
    env = os.environ.get("REWEIGHT_CACHE")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "reweight"
    return base / "corpus"


def entry_path(cache_dir: str | os.PathLike[str] | None, stem: str, key: dict[str, Any]) -> Path:
    """The entry directory for ``key``: ``<cache_dir>/<stem>-<first 12 hex of sha256(key)>``
    (``cache_dir`` None = :func:`default_cache_dir`)."""
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key_hash = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return base / f"{stem}-{key_hash}"


def fingerprint(sources: Iterable[tuple[str, str, Path]]) -> str:
    """sha256 of ``(kind, relative name, size and mtime)`` of each source file, in order.

    A file that cannot be read is stamped ``"missing"``; any edit, addition or removal of a
    source changes the fingerprint, so a cache key holding it goes stale.
    """
    digest = hashlib.sha256()
    for kind, rel, path in sources:
        try:
            st = path.stat()
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        digest.update(f"{kind}\0{rel}\0{stamp}\n".encode())
    return digest.hexdigest()


def load_cached(path: Path, key: dict[str, Any]) -> Corpus | None:
    """The corpus cached at ``path`` if its manifest's key is ``key`` and it is intact, else
    None (missing, stale or corrupt entries are never raised, only rebuilt by the caller)."""
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or manifest.get("key") != key:
            return None
        tokens = np.load(path / "tokens.npy", allow_pickle=False)
        domains = np.load(path / "domains.npy", allow_pickle=False)
        corpus = Corpus(
            tokens, domains, manifest["domain_names"], manifest=manifest, cache_path=path
        )
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if corpus.domain_sizes != manifest.get("sizes"):
        return None
    corpus.cache_hit = True
    return corpus


def save_cached(path: Path, corpus: Corpus) -> bool:
    """Write ``corpus`` to the entry ``path`` atomically (a temporary directory, then a
    rename); returns whether the entry now holds it. Failures warn and return False."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=path.name + ".tmp-", dir=path.parent))
    except OSError as exc:
        warnings.warn(f"could not cache the corpus in {path.parent}: {exc}", stacklevel=3)
        return False
    try:
        np.save(tmp / "tokens.npy", corpus.tokens, allow_pickle=False)
        np.save(tmp / "domains.npy", corpus.domains, allow_pickle=False)
        (tmp / "manifest.json").write_text(
            json.dumps(corpus.manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
        return True
    except OSError as exc:
        # Another process may have written the same corpus first; its copy is as good as ours.
        if (path / "manifest.json").exists():
            return True
        warnings.warn(f"could not cache the corpus in {path}: {exc}", stacklevel=3)
        return False
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
