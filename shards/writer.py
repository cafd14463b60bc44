"""Deterministic, atomic WebDataset tar writing.

A shard is written to a temporary name unique to this process, hashed while it is written,
then committed by ``shards.atomic`` (fsync, rename to ``name.tar``): a reader or a resumed
build never sees a partial ``.tar``. Member headers are fixed (mtime 0, uid/gid 0, no owner
names, mode 0644) and each sample's members are sorted by name, so the same samples give
byte-identical tars.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from shards.atomic import commit, temporary_path


def check_key(key: str) -> None:
    """A WebDataset key: non-empty, no dots (they split key from member), no path separators."""
    if not key or "." in key or "/" in key or "\\" in key:
        raise ValueError(f"sample key {key!r} must be non-empty, without '.', '/' or '\\'")


class _HashingFile(io.RawIOBase):
    """Write-through file wrapper that counts and hashes every byte written."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        self.sha256.update(data)
        self.size += len(data)
        return self._raw.write(data)

    def tell(self) -> int:
        return self.size


class ShardWriter:
    """Write samples into ``path`` atomically; ``close()`` returns ``(bytes, sha256)``.

    Use as a context manager: on an exception the temporary file is removed and nothing
    appears at ``path``.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = temporary_path(self.path)  # <name>.tar.<unique>.tmp
        self._file = open(self._tmp, "wb")  # noqa: SIM115 - closed by close() or abort()
        self._hashing = _HashingFile(self._file)
        self._tar = tarfile.TarFile(fileobj=self._hashing, mode="w", format=tarfile.USTAR_FORMAT)
        self._keys: set[str] = set()
        self.samples = 0

    def write(self, key: str, members: Mapping[str, bytes]) -> tuple[int, int]:
        """Append one sample: ``members`` maps extensions (``merged.png``) to bytes.

        Returns:
            ``(offset, length)``: where the sample's first tar header starts in the shard, and
            its bytes up to the end of its last member (headers, data and padding), so that a
            reader can seek straight to it.
        """
        start = self._hashing.size
        check_key(key)
        if key in self._keys:
            raise ValueError(f"duplicate key {key!r} in {self.path.name}")
        self._keys.add(key)
        for ext in sorted(members):
            data = members[ext]
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(data))  # written through at once, padded to 512
        self.samples += 1
        return start, self._hashing.size - start

    def close(self) -> tuple[int, str]:
        """Finish the tar, make it durable, rename it into place; return (bytes, sha256)."""
        self._tar.close()
        self._file.close()
        commit(self._tmp, self.path)
        return self._hashing.size, self._hashing.sha256.hexdigest()

    def abort(self) -> None:
        """Drop the partial shard."""
        self._file.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def sha256_file(path: Path, chunk: int = 1 << 22) -> tuple[int, str]:
    """``(size, sha256 hex)`` of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()
