"""The one atomic write of the project: a unique temporary file, fsync, rename, fsync the folder.

Every output a reader may find half-written goes through here: shards, ``index.json``,
``samples.parquet``, shard records, checkpoints, predictions, exports, metrics files. A crash
or an exception at any point leaves either the previous file or the new one, whole, and no
temporary file behind (except after a hard kill, when ``<name>.<unique>.tmp`` may remain:
``TMP_SUFFIX`` lets a resumed build find and remove those).

- ``atomic_write_bytes(path, data)``: the whole content at once;
- ``atomic_file(path)``: a context manager yielding an open binary file (or, with
  ``as_path=True``, the temporary path, for writers that take a file name such as ONNX or
  Pillow); the rename happens when the block exits without an exception.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

TMP_SUFFIX = ".tmp"  # temporary files are named <name>.<unique>.tmp beside their target


def temporary_path(path: Path) -> Path:
    """A fresh temporary name beside ``path``, unique to this call (safe across processes)."""
    return path.with_name(f"{path.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp: Path, path: Path) -> None:
    """fsync ``tmp``, rename it to ``path``, fsync the folder: the file appears whole or not."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_file(path: str | Path, as_path: bool = False) -> Iterator[BinaryIO | Path]:
    """Write ``path`` atomically: yields the temporary file (or its path), commits on success.

    Args:
        path: the file to write; its folder must exist. An existing file is replaced.
        as_path: yield the temporary ``Path`` instead of an open file, for writers that open
            the file themselves.

    Raises:
        Whatever the block raises; the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        if as_path:
            yield tmp
        else:
            with open(tmp, "wb") as f:
                yield f
        commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (``atomic_file``)."""
    with atomic_file(path) as f:
        f.write(data)
