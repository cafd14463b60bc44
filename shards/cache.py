"""A node's local copy of the shards a run reads from a store (``--cache-dir DIR``).

A shard read once is downloaded whole, checked against the size and sha256 that ``index.json``
records, and kept, named by its content, so that later reads (the next epoch, another loader
process or rank on the node, the next run) open a local file and ask the store for nothing.
Beyond ``limit_bytes`` the least recently used shards are evicted. The set's ``index.json``
and ``samples.parquet`` are kept too (``save_meta``/``load_meta``): a run whose store is
unreachable but whose cache holds the whole set runs from the cache alone.

Layout of ``DIR``::

    DIR/shards/<sha256>.tar   a shard, named by its recorded sha256 (so a rebuilt set never
                              finds a stale copy: its shards have other names)
    DIR/shards/<sha256>.ok    the check that passed: the size, mtime and inode the .tar had
                              then (a file written since is hashed again); its mtime: last use
    DIR/sets/<key>/...        a set's index.json and samples.parquet (key: a hash of its URL)
    DIR/lock                  held around opening and evicting

Several processes share one cache: a shard is downloaded by one process at a time (a lock
per shard), committed by rename (``shards.atomic``), opened and evicted under ``DIR/lock``; a
file another process still has open may be evicted (POSIX keeps it readable until closed).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from shards import store
from shards.atomic import TMP_SUFFIX, atomic_file, atomic_write_bytes
from shards.store import CHUNK, Options

GB = 1 << 30


class CacheMismatch(ValueError):
    """A shard whose downloaded bytes differ from what ``index.json`` records."""


@dataclass(frozen=True)
class ShardCache:
    """A cache folder and its size limit; picklable, so loader processes get it."""

    root: str  # the folder (created on first use)
    limit_bytes: int = 0  # shards kept at most, in bytes (0: no limit)

    @classmethod
    def of(cls, cache_dir: str | Path | None, limit_gb: float = 0) -> ShardCache | None:
        """The cache of ``--cache-dir``/``--cache-limit-gb`` (None without a folder)."""
        if not cache_dir:
            return None
        if limit_gb < 0:
            raise ValueError(f"--cache-limit-gb must be >= 0 (0: no limit), got {limit_gb}")
        return cls(str(Path(cache_dir).expanduser().absolute()), int(limit_gb * GB))

    @property
    def shards(self) -> Path:
        return Path(self.root) / "shards"

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        self.shards.mkdir(parents=True, exist_ok=True)
        path = Path(self.root) / name if name == "lock" else self.shards / f"{name}.lock"
        with open(path, "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def open(self, url: str, sha256: str, size: int, options: Options | None = None) -> BinaryIO:
        """The shard at ``url`` as a local file, downloaded first unless a checked copy is here.

        Raises:
            shards.store.StoreError, shards.store.StoreUnavailable: the download failed.
            CacheMismatch: the store's bytes are not those ``index.json`` records.
        """
        path = self.shards / f"{sha256}.tar"
        with self._lock(sha256):  # one download of a shard at a time on the node
            with self._lock("lock"):
                stream = _open_or_none(path)
            if stream is not None:
                if self._checked(stream, path, sha256, size):
                    return stream
                stream.close()
                print(
                    f"warning: cached shard {path} ({store.redact(url)}) is not what the index "
                    "records; downloading it again",
                    file=sys.stderr,
                    flush=True,
                )
            self._download(url, path, sha256, size, options)
            with self._lock("lock"):
                stream = open(path, "rb")  # noqa: SIM115 - the caller closes it
                self._mark(stream, path)
                self._evict(keep=path)
            return stream

    def _checked(self, stream: BinaryIO, path: Path, sha256: str, size: int) -> bool:
        """Whether ``stream`` (the cached ``path``) holds the recorded bytes: hashed when it
        was written since its last check; a pass is recorded, and marks the shard used."""
        mark = path.with_suffix(".ok")
        now = _signature(stream)
        with contextlib.suppress(OSError):
            if mark.read_text() == now:
                os.utime(mark)
                return True
        digest, total = hashlib.sha256(), 0
        while block := stream.read(CHUNK):
            digest.update(block)
            total += len(block)
        stream.seek(0)
        if total != size or digest.hexdigest() != sha256:
            return False
        self._mark(stream, path)
        return True

    def _mark(self, stream: BinaryIO, path: Path) -> None:
        atomic_write_bytes(path.with_suffix(".ok"), _signature(stream).encode())

    def _download(self, url: str, path: Path, sha256: str, size: int, options) -> None:
        digest = hashlib.sha256()
        with atomic_file(path) as f:
            for start in range(0, size, CHUNK):
                block = store.read_range(url, start, min(start + CHUNK, size), options)
                digest.update(block)
                f.write(block)
                if len(block) < min(CHUNK, size - start):
                    break
            if f.tell() != size or digest.hexdigest() != sha256:
                raise CacheMismatch(
                    f"{store.redact(url)}: the store holds {f.tell():,} bytes with sha256 "
                    f"{digest.hexdigest()[:16]}..., index.json records {size:,} bytes with "
                    f"{sha256[:16]}...; check the set with `indexnet shards verify`"
                )

    def _evict(self, keep: Path) -> None:
        """Delete the least recently used shards until the rest fit the limit (``keep``, the
        shard just opened, stays whatever its size)."""
        if not self.limit_bytes:
            return
        entries = []
        for tar in self.shards.glob("*.tar"):
            with contextlib.suppress(OSError):
                used = tar.with_suffix(".ok").stat().st_mtime_ns
                entries.append((used if tar != keep else float("inf"), tar.stat().st_size, tar))
        total = sum(size for _, size, _ in entries)
        for _, size, tar in sorted(entries):
            if total <= self.limit_bytes or tar == keep:
                break
            tar.with_suffix(".ok").unlink(missing_ok=True)
            tar.unlink(missing_ok=True)
            total -= size
        for tmp in self.shards.glob(f"*{TMP_SUFFIX}"):  # left by a killed download
            with contextlib.suppress(OSError):
                if tmp.stat().st_mtime < os.path.getmtime(keep) - 24 * 3600:
                    tmp.unlink()

    # -- a set's index files --------------------------------------------------------------------

    def _meta(self, set_url: str, name: str) -> Path:
        key = hashlib.sha256(store.redact(set_url).rstrip("/").encode()).hexdigest()[:32]
        return Path(self.root) / "sets" / key / name

    def save_meta(self, set_url: str, name: str, data: bytes) -> None:
        """Keep ``name`` (``index.json``, ``samples.parquet``) of the set at ``set_url``."""
        path = self._meta(set_url, name)
        with contextlib.suppress(OSError):
            if path.read_bytes() == data:
                return
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)

    def load_meta(self, set_url: str, name: str) -> bytes | None:
        """The kept ``name`` of the set at ``set_url``; None when there is none."""
        try:
            return self._meta(set_url, name).read_bytes()
        except OSError:
            return None


def _open_or_none(path: Path) -> BinaryIO | None:
    try:
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    except FileNotFoundError:
        return None


def _signature(stream: BinaryIO) -> str:
    st = os.fstat(stream.fileno())
    return f"{st.st_size} {st.st_mtime_ns} {st.st_ino}"
