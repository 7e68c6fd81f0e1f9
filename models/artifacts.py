"""Crash-safe artifact writes: the one save helper every artifact writer goes through.

    atomic_write(path, write)     write(tmp) fills a temporary file beside ``path``; then
                                  fsync(tmp) -> rename(tmp, path) -> fsync(parent directory)

A reader (or a process started after a crash, SIGKILL or power loss) sees either the previous complete file or
the new complete file, never a prefix: ``rename`` within one directory is atomic on POSIX, the file's fsync
before it makes sure the new name never points at data still in the page cache, and the directory's fsync
after it makes the rename itself durable. The temporary name starts with a dot and keeps the target's suffix
(``.<name>.<random>.tmp<suffix>``) because some writers append their own suffix (``np.savez`` adds ``.npz``,
``np.save`` adds ``.npy``) and because Triton/DVC/globs ignore dot files. A writer killed mid-write leaves such a
temporary file behind; :func:`remove_stale_temps` deletes them.

Directories (e.g. a model repository version) are built under a temporary name, made durable with
:func:`fsync_tree` and renamed into place by the caller.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable

__all__ = [
    "content_key",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "fsync_dir",
    "fsync_tree",
    "remove_stale_temps",
    "temp_path",
]

_TMP_MARK = ".tmp"


def temp_path(path: str | os.PathLike) -> Path:
    """A fresh temporary name beside ``path`` (hidden, same suffix): ``dir/.<name>.<hex>.tmp<suffix>``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:10]}{_TMP_MARK}{path.suffix}")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: str | os.PathLike) -> None:
    """fsync a directory, so the renames and creations inside it survive a crash."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(directory: str | os.PathLike) -> None:
    """fsync every file and directory under ``directory`` (before renaming a finished tree into place)."""
    directory = Path(directory)
    for root, _, files in os.walk(directory, topdown=False):
        for name in files:
            _fsync_file(Path(root) / name)
        fsync_dir(root)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, fsync it, rename it onto ``path`` and fsync
    the directory. On any exception (including KeyboardInterrupt) the temporary file is removed and ``path`` is
    untouched. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        write(tmp)
        if not tmp.is_file():
            raise ValueError(f"the writer for {path} did not create the temporary file {tmp.name}")
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, value: Any, **dumps_kwargs) -> Path:
    """JSON (``json.dumps(value, **dumps_kwargs)``) written atomically; the text is built before the file opens,
    so an unserializable value leaves nothing behind."""
    return atomic_write_text(path, json.dumps(value, **dumps_kwargs))


def remove_stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files :func:`atomic_write` leaves when its process is killed mid-write (names
    ``.<name>.<hex>.tmp<suffix>``) directly inside ``directory``. Only call it when no writer is running there.
    Returns the removed paths."""
    directory = Path(directory)
    removed = []
    if not directory.is_dir():
        return removed
    for p in directory.iterdir():
        stem = p.name[: len(p.name) - len(p.suffix)] if p.suffix != _TMP_MARK else p.name
        if p.is_file() and p.name.startswith(".") and stem.endswith(_TMP_MARK):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def content_key(payload: Any) -> str:
    """12 hex digits of sha256 over ``payload`` as sorted JSON: the run-directory name of an artifact, so the same
    inputs + config always land in the same directory (an interrupted run resumes there)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]
