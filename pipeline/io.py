"""Atomic output: write to a temporary file (or folder) beside the target, then rename.

An interrupted stage therefore leaves either the old output or none, never a half-written one.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline import signals


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` if the block succeeds.

    Args:
        path: Final destination.
        suffix: Suffix for the temporary file, for writers that insist on an extension
            (Keras wants `.keras`, numpy appends `.npz`).

    Yields:
        The temporary path to write to.
    """
    target = Path(path)
    created = _make_parents(target)
    _remove_stale(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + suffix,
                                    dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files: the usual permissions
    done = False
    try:
        yield tmp
        os.replace(tmp, target)
        done = True
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if not done:
            _remove_empty(created)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; if the block succeeds, it replaces
    `path` (any old folder there is removed after the swap).

    Yields:
        The temporary folder to write into.
    """
    target = Path(path)
    created = _make_parents(target)
    _remove_stale(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
    done = False
    try:
        yield tmp
        with signals.deferred():  # the two renames go together
            old = None
            if target.exists() or target.is_symlink():
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old",
                                            dir=target.parent))
                os.replace(target, old / target.name)
            os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        done = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not done:
            _remove_empty(created)


def _make_parents(target: Path) -> list[Path]:
    """Create the missing parent folders of `target`; returns them, deepest first."""
    missing = [p for p in target.parents if not p.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove folders an unfinished write created, deepest first, while they are empty: a
    refused or interrupted stage leaves nothing behind, not even a folder."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _remove_stale(target: Path) -> None:
    """Remove temporaries of `target` that a killed process (SIGKILL, out of memory) could
    not clean up: `.<name>.*.tmp*` and `.<name>.*.old` beside it."""
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*"):
        if stale.name.endswith(".old") or ".tmp" in stale.name:
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically and return the path."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write `obj` as indented, key-sorted JSON to `path` atomically and return the path."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows as CSV text: a header of `columns` (default: every key of the rows, in the order
    they first appear), one line a row (a missing key: an empty cell)."""
    import csv
    import io

    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_csv(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]],
              columns: Sequence[str] | None = None) -> Path:
    """Write rows as CSV (`csv_text`) to `path` atomically and return the path."""
    return write_text(path, csv_text(rows, columns))


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
