"""Reading CPython's own text: the raw pieces of each built-in domain.

:func:`scan_stdlib` lists the standard library's Python files by domain (``code``, ``tests``,
``encodings``), leaving out the parts distributions package separately and machine-specific
files; :func:`help_topics` reads the bundled help topics; :func:`domain_texts` reads them all,
plus module docstrings and the built-ins' docstrings, into raw byte pieces per domain
(:data:`DOMAINS`). :mod:`recipes.data.builtin` cuts those pieces into the built-in corpus.

Example:
    >>> from recipes.data.stdlib import scan_stdlib, stdlib_root
    >>> files = scan_stdlib(stdlib_root(None))
    >>> sorted(files), any(rel == "os.py" for rel, _ in files["code"])
    (['code', 'encodings', 'tests'], True)
"""

from __future__ import annotations

import ast
import builtins
import inspect
import io
import os
import sysconfig
import tokenize
import types
from pathlib import Path

__all__ = ["DOMAINS", "domain_texts", "help_topics", "scan_stdlib", "stdlib_root"]

#: Built-in domains in id order (a domain the install does not ship is left out).
DOMAINS: dict[str, str] = {
    "code": "standard-library Python source (no tests, no separately packaged parts)",
    "tests": "the CPython test suite's Python source",
    "encodings": "codec modules and charmap tables (Lib/encodings)",
    "docs": "bundled help topics (pydoc_data.topics)",
    "docstrings": "module docstrings of the standard library",
    "builtins": "docstrings of the built-in functions and types",
}
# Parts of the standard library that distributions package separately (Debian: idle, python3-tk,
# python3-lib2to3, python3-distutils, python3-venv) or that are not text of the library itself.
_SEPARATE_PACKAGES = frozenset(
    {"idlelib", "tkinter", "turtledemo", "lib2to3", "distutils", "ensurepip", "pydoc_data"}
)
_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__"})
_TEST_DIRS = frozenset({"test", "tests"})
# Machine- or distribution-specific files (build paths, compiler flags, site hooks).
_SKIP_FILE_PREFIXES = ("_sysconfigdata", "sitecustomize", "usercustomize", "_distutils_system")


def stdlib_root(stdlib: str | os.PathLike[str] | None) -> Path | None:
    """The directory to read the standard library from: ``stdlib`` (checked), else this
    interpreter's, else None (then only the help topics and built-ins are read)."""
    if stdlib is not None:
        root = Path(stdlib)
        if not root.is_dir():
            raise ValueError(f"stdlib={str(stdlib)!r} is not a directory.")
        return root
    for candidate in (sysconfig.get_paths().get("stdlib"), os.path.dirname(os.__file__)):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def scan_stdlib(root: Path | None) -> dict[str, list[tuple[str, Path]]]:
    """``{"code"|"tests"|"encodings": [(posix relative path, path), ...]}``, sorted by path."""
    found: dict[str, list[tuple[str, Path]]] = {"code": [], "tests": [], "encodings": []}
    if root is None:
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        top = rel_dir.parts[0] if rel_dir.parts else ""
        dirnames[:] = sorted(
            d
            for d in dirnames
            if d not in _SKIP_DIRS
            and not d.startswith(("config-", "."))
            and not (not rel_dir.parts and d in _SEPARATE_PACKAGES)
        )
        if top in _SEPARATE_PACKAGES:
            continue
        for name in filenames:
            if not name.endswith(".py") or name.startswith(_SKIP_FILE_PREFIXES):
                continue
            rel = (rel_dir / name).as_posix()
            if _TEST_DIRS.intersection(rel_dir.parts):
                kind = "tests"
            elif top == "encodings":
                kind = "encodings"
            else:
                kind = "code"
            found[kind].append((rel, Path(dirpath) / name))
    for files in found.values():
        files.sort()
    return found


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes().replace(b"\r\n", b"\n")
    except OSError:
        return None


def _module_docstring(source: bytes) -> str | None:
    """The module docstring of Python ``source`` without parsing the whole file."""
    strings: list[str] = []
    skip = {tokenize.ENCODING, tokenize.COMMENT, tokenize.NL}
    try:
        for tok in tokenize.tokenize(io.BytesIO(source).readline):
            if tok.type in skip:
                continue
            if tok.type == tokenize.STRING:
                strings.append(tok.string)
                continue
            if strings and tok.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
                break
            return None
        else:
            return None
        value = ast.literal_eval(" ".join(strings))
    except (SyntaxError, ValueError, LookupError, UnicodeError, tokenize.TokenError):
        return None
    if not isinstance(value, str) or not value.strip():
        return None
    return inspect.cleandoc(value)


def _module_name(rel: str) -> str:
    name = rel[: -len(".py")].replace("/", ".")
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def _builtin_docs() -> list[str]:
    """Docstrings of the interpreter's own functions and types, in name order."""
    out = []
    for name, obj in sorted(vars(builtins).items()):
        if name.startswith("_") or getattr(obj, "__module__", None) != "builtins":
            continue
        if isinstance(obj, type):
            doc, kind = obj.__dict__.get("__doc__"), "class"
        elif isinstance(obj, types.BuiltinFunctionType):
            doc, kind = obj.__doc__, "function"
        else:
            continue
        if isinstance(doc, str) and doc.strip():
            out.append(f"{kind} {name}\n{inspect.cleandoc(doc)}")
    return out


def help_topics() -> tuple[list[str], Path | None]:
    """The texts ``help("assert")`` and friends print, in topic order, and the file they come
    from (``[], None`` when the install does not ship ``pydoc_data``)."""
    try:
        from pydoc_data import topics as module
    except ImportError:
        return [], None
    table = getattr(module, "topics", None)
    if not isinstance(table, dict):
        return [], None
    texts = [table[k] for k in sorted(table) if isinstance(table[k], str)]
    file = getattr(module, "__file__", None)
    return texts, Path(file) if file else None


def domain_texts(
    files: dict[str, list[tuple[str, Path]]], topics: list[str]
) -> tuple[dict[str, list[bytes]], dict[str, int]]:
    """Raw pieces per built-in domain (in :data:`DOMAINS` order) and how many sources each has."""
    pieces: dict[str, list[bytes]] = {name: [] for name in DOMAINS}
    docstrings: list[bytes] = []
    for kind in ("code", "tests", "encodings"):
        for rel, path in files[kind]:
            source = _read(path)
            if source is None:
                continue
            pieces[kind].append(source)
            if kind != "tests":
                doc = _module_docstring(source)
                if doc is not None:
                    docstrings.append(f"{_module_name(rel)}\n{doc}".encode())
    pieces["docs"] = [t.encode("utf-8") for t in topics]
    pieces["docstrings"] = docstrings
    pieces["builtins"] = [t.encode("utf-8") for t in _builtin_docs()]
    return pieces, {name: len(p) for name, p in pieces.items()}
