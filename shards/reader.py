"""The one shard reader: where a set's shards are, and the samples in them, decoded.

Where (``resolve_shards``): what a user passes as ``--shards`` becomes shard URLs and their
sample counts, always from a shard set's ``index.json``:

- a shard set folder (``/data/shards``) or its URL (``s3://bucket/shards``,
  ``http://host/shards/``, any store ``shards.store`` reads): the index there; a split's
  folder (``/data/shards/validation``) or URL (``s3://bucket/shards/validation``): that split,
  with the set's index;
- a brace pattern (``/data/shards/train/train-{000000..000099}.tar``) or URLs of shards: the
  set's index is found two levels up (``<set>/<split>/<shard>.tar``);
- a ``pipe:`` command (``pipe:aws s3 cp s3://b/train-{000000..000099}.tar -``): pass
  ``index=`` (the set's folder or URL), since a command has no location to look beside.

The ``ShardList`` carries the store's options (``--storage-option``) and the node's shard
cache (``shards.cache``), so that every process reading it (loader workers included) reads
alike.

What (``read_samples``): each shard (a local file, a URL read with ranged GETs through
``shards.store``, or a ``pipe:`` command's output) is read once, front to back, as a tar
stream (``tar_entries``, which ``shards.verify`` also uses); a sample's members are grouped by
key and only the members asked for are kept and decoded, by the codec ``shards.schema`` gives
them. Colour members decode to RGB, greys to (H, W) uint8, ``json`` to a dict.

A shard that cannot be opened or parsed raises ``ShardError`` naming it and the last key read;
a sample that lacks a member asked for, or whose member does not decode, raises ``ValueError``
naming the shard, the key and the member. Callers decide whether to stop or skip.
"""

from __future__ import annotations

import io
import json
import re
import sys
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from webdataset.gopen import gopen
from webdataset.shardlists import expand_urls

from shards import store
from shards.cache import ShardCache
from shards.codec import decode_color, decode_grey
from shards.index import INDEX_NAME, SAMPLES_NAME, Index, ShardInfo, parse_index
from shards.index import read_samples as read_sample_table
from shards.schema import (
    SCORED_MEMBERS,
    SHARED_MEMBERS,
    SPLITS,
    member,
    name_of,
    require_members,
)
from shards.store import CHUNK, NotFound, Options, StoreError, StoreUnavailable

VERIFY_HINT = "check the set with `indexnet shards verify`"


class ShardError(RuntimeError):
    """A shard that cannot be opened or read to its end; the message names it."""


class TransientShardError(ShardError):
    """A shard URL that failed in transit: a refused, reset or dropped connection, a timeout,
    a server error (5xx). Worth retrying, unlike a shard whose bytes are wrong or missing."""


class SampleError(ValueError):
    """A sample whose members are missing or do not decode: bad data (the message names the
    shard, key and member), as opposed to a failure of the code reading it."""


# -- where the shards are ---------------------------------------------------------------------


@dataclass(frozen=True)
class ShardList:
    """Shards to stream and their sample counts (from the set's index)."""

    urls: tuple[str, ...]
    samples: tuple[int, ...]
    index: Index
    # the store's --storage-option values: carried to every reader, never shown
    options: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    cache: ShardCache | None = None  # where shards read from a store are kept

    @property
    def total(self) -> int:
        return sum(self.samples)

    def info(self, url: str) -> ShardInfo | None:
        """What the index records of the shard at ``url`` (its bytes and sha256)."""
        name = shard_name(url)
        return next((s for s in self.index.shards if s.path.rsplit("/", 1)[-1] == name), None)


def is_url(spec: str) -> bool:
    """``scheme://...`` (s3, gs, http, ...), as opposed to a local path or a ``pipe:`` command."""
    return bool(re.match(r"^[a-z][a-z0-9+.-]*://", spec))


_FROM_CACHE: set[str] = set()  # sets this process has said it reads from the cache


def _read_meta(root: str, name: str, options: Options | None, cache: ShardCache | None) -> bytes:
    """``root/name`` (``index.json``, ``samples.parquet``) of a set: read where it is and kept
    in ``cache``; when the store is unreachable, the cache's copy, said once per set.

    Raises:
        shards.store.NotFound, shards.store.StoreError, shards.store.StoreUnavailable.
    """
    where = store.join(root, name)
    if cache is None or not is_url(root):
        return store.read_bytes(where, options)
    try:
        data = store.read_bytes(where, options)
    except StoreUnavailable as exc:
        data = cache.load_meta(root, name)
        if data is None:
            raise
        if root not in _FROM_CACHE:
            _FROM_CACHE.add(root)
            print(
                f"note: {store.redact(root)} is unreachable ({exc}); working from the cache "
                f"{cache.root}",
                file=sys.stderr,
                flush=True,
            )
        return data
    cache.save_meta(root, name, data)
    return data


def load_index(
    location: str, options: Options | None = None, cache: ShardCache | None = None
) -> Index:
    """``index.json`` of a shard set given as a folder or a URL (``s3://``, ``http(s)://``...).

    Raises:
        ValueError: it is missing or not an index (``shards.store.StoreError``: the location
            is refused or its bucket missing), or the store is unreachable with no cached copy
            (each naming the URL).
    """
    try:
        text = _read_meta(location, INDEX_NAME, options, cache)
    except NotFound:
        raise ValueError(
            f"{store.redact(store.join(location, INDEX_NAME))} is missing: the shard set is "
            "unfinished or not a shard set (re-run the build to finish it)"
        ) from None
    except StoreUnavailable as exc:
        raise ValueError(f"cannot read {exc}; is the shard set served there?") from None
    return parse_index(text, location)


def _join(root: str, rel: str) -> str:
    return root.rstrip("/") + "/" + rel if is_url(root) else str(Path(root) / rel)


def shard_urls(index: Index, split: str) -> tuple[str, ...]:
    """URLs (or paths) of one split's shards of a set, joined to where its index was read."""
    return tuple(_join(index.root, s.path) for s in index.split(split))


def split_shards(
    index: Index, split: str, options: Options | None = None, cache: ShardCache | None = None
) -> ShardList:
    """The ``ShardList`` of one split of a set whose index is read (maybe empty)."""
    counts = tuple(s.samples for s in index.split(split))
    return ShardList(shard_urls(index, split), counts, index, dict(options or {}), cache)


def resolve_shards(
    spec: str,
    split: str = "train",
    index: str | None = None,
    options: Options | None = None,
    cache: ShardCache | None = None,
) -> ShardList:
    """Shard URLs and sample counts for ``--shards`` (see the module docstring).

    Args:
        options: the store's ``--storage-option``s, carried by the ``ShardList`` to whoever
            reads it (loader processes included).
        cache: where shards read from a store are kept (``shards.cache``), or None.

    Raises:
        ValueError: no index can be found, a named shard is not in it, or the split is empty.
    """
    is_set = not spec.endswith(".tar") and "{" not in spec and not spec.startswith("pipe:")
    parent, _, name = spec.rstrip("/").rpartition("/")
    if is_set and name in SPLITS and (is_url(spec) or not (Path(spec) / INDEX_NAME).exists()):
        # a split's folder (OUT/validation) or prefix (s3://b/set/validation): the set is its parent
        split, spec = name, parent or "."
    if is_set:
        shards = split_shards(load_index(index or spec, options, cache), split, options, cache)
        if not shards.urls:
            raise ValueError(f"{store.redact(spec)}: the shard set has no '{split}' shards")
        return shards
    urls = tuple(expand_urls(spec))
    if index is None:
        if spec.startswith("pipe:"):
            raise ValueError(
                f"{spec}: a pipe: command needs index= (the shard set's folder or URL)"
            )
        first = urls[0]
        index = first.rsplit("/", 2)[0] if is_url(first) else str(Path(first).parent.parent)
    idx = load_index(index, options, cache)
    by_name = {s.path.rsplit("/", 1)[-1]: s for s in idx.shards}
    counts = []
    for url in urls:
        name = shard_name(url)
        if name not in by_name:
            raise ValueError(f"{store.redact(url)}: shard {name} is not in {index}/{INDEX_NAME}")
        counts.append(by_name[name].samples)
    return ShardList(urls, tuple(counts), idx, dict(options or {}), cache)


def shard_name(url: str) -> str:
    """A shard's file name (``train-000000.tar``) from its path, URL or ``pipe:`` command."""
    return re.split(r"[/ ]", url.rstrip(" -"))[-1]


@dataclass(frozen=True)
class ShardSamples:
    """What ``samples.parquet`` records of one shard's samples, in shard order.

    ``offsets[i]`` is where sample ``i``'s first tar header starts and ``lengths[i]`` its bytes
    to the end of its last member; both are None for sets built before they were recorded.
    ``sha256[name][i]`` is the recorded hash of sample ``i``'s member ``name``, for the members
    of ``shards.schema.SHARED_MEMBERS`` (which later samples hold the same bytes).
    """

    keys: tuple[str, ...]
    offsets: tuple[int, ...] | None
    lengths: tuple[int, ...] | None
    sha256: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def span(self, first: int, count: int) -> tuple[int, int | None]:
        """``(offset, length)`` of samples ``first .. first + count - 1``; ``(0, None)``, the
        whole shard, when no offsets are recorded."""
        if self.offsets is None or self.lengths is None:
            return 0, None
        last = first + count - 1
        return self.offsets[first], self.offsets[last] + self.lengths[last] - self.offsets[first]


def _read_table(shards: ShardList) -> pa.Table:
    root = shards.index.root
    if not is_url(root):
        return read_sample_table(Path(root))
    where = store.redact(store.join(root, SAMPLES_NAME))
    try:
        data = _read_meta(root, SAMPLES_NAME, shards.options, shards.cache)
        return pq.read_table(pa.BufferReader(data))
    except NotFound:
        raise ValueError(f"{where} is missing: not a finished shard set") from None
    except (StoreUnavailable, pa.ArrowInvalid) as exc:
        raise ValueError(f"cannot read {where} ({exc}); is the shard set served there?") from None


def shard_samples(shards: ShardList) -> tuple[ShardSamples, ...]:
    """Per shard of ``shards`` (in its order): the keys, byte offsets and lengths of its
    samples, from the set's ``samples.parquet``.

    Raises:
        ValueError: ``samples.parquet`` cannot be read, or disagrees with ``index.json`` on a
            shard's sample count (named: rebuild the index).
    """
    table = _read_table(shards)
    has_offsets = {"offset", "length"} <= set(table.column_names)
    columns = ["key", "shard", "position", "status"] + (["offset", "length"] if has_offsets else [])
    hashed = [name for name in SHARED_MEMBERS if f"{name}_sha256" in table.column_names]
    columns += [f"{name}_sha256" for name in hashed]
    table = table.select(columns).filter(pc.not_equal(table["status"], "failed"))
    rows: dict[str, list[dict]] = {}
    for row in table.to_pylist():
        rows.setdefault(row["shard"].rsplit("/", 1)[-1], []).append(row)
    out = []
    for url, count in zip(shards.urls, shards.samples, strict=True):
        mine = sorted(rows.get(shard_name(url), []), key=lambda r: r["position"])
        if len(mine) != count:
            raise ValueError(
                f"{shards.index.root}: {SAMPLES_NAME} records {len(mine)} sample(s) of shard "
                f"{shard_name(url)}, {INDEX_NAME} {count}; rebuild the index with `indexnet "
                "shards repair`, or re-copy the set"
            )
        offsets = lengths = None
        if has_offsets:
            offsets = tuple(int(r["offset"]) for r in mine)
            lengths = tuple(int(r["length"]) for r in mine)
        sha256 = {name: tuple(r[f"{name}_sha256"] for r in mine) for name in hashed}
        out.append(ShardSamples(tuple(r["key"] for r in mine), offsets, lengths, sha256))
    return tuple(out)


# -- reading a shard --------------------------------------------------------------------------


@dataclass(frozen=True)
class TarEntry:
    """One tar member: ``<key>.<file>``, and its bytes when they were asked for."""

    name: str  # the member's full name in the tar
    key: str  # before the first dot
    file: str  # after it: ``merged.png``, ``fg.jpg``, ``json`` ("" when there is no dot)
    regular: bool  # a regular file (not a folder, link or device)
    data: bytes | None  # None when not read (not asked for, or not a regular file)
    offset: int = 0  # where its header starts in the stream
    end: int = 0  # where its data, padded to the tar block, ends


def tar_entries(stream: BinaryIO, read: Callable[[str], bool] | None = None) -> Iterator[TarEntry]:
    """Every member of a tar stream, in order, in one sequential pass (the stream never seeks).

    Args:
        stream: the shard's bytes (a file, a socket, a pipe, or a wrapper that hashes them).
        read: which files (the part after the key) to read; None: all. Members not read are
            skipped in the stream, never kept.

    Raises:
        tarfile.TarError, EOFError, OSError: the stream is not a tar to its end.
    """
    # 64 KiB reads: a quarter less time than tarfile's default 10 KiB on MB-sized members
    with tarfile.open(fileobj=stream, mode="r|", bufsize=1 << 16) as tar:
        for info in tar:
            key, _, file = info.name.partition(".")
            wanted = info.isreg() and (read is None or read(file))
            data = tar.extractfile(info).read() if wanted else None
            end = info.offset_data + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            yield TarEntry(info.name, key, file, info.isreg(), data, info.offset, end)
            tar.members = []  # streaming: keep no history, memory stays flat


class _Dropped(EOFError):
    """A store or server that failed in transit: the connection, not the shard."""


class _Window(io.RawIOBase):
    """The next ``length`` bytes of a stream (all that is left when None); closing it closes
    the stream, after reading a ``pipe:`` command's output to its end (so that the command
    exits cleanly rather than by a broken pipe)."""

    def __init__(self, stream: BinaryIO, length: int | None, drain: bool = False) -> None:
        super().__init__()
        self.stream, self.left, self.drain = stream, length, drain

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.left is None:
            return self.stream.read(size)
        size = self.left if size < 0 else min(size, self.left)
        data = self.stream.read(size)
        if size and not data:
            raise EOFError(f"it ends {self.left:,} bytes before the samples asked for do")
        self.left -= len(data)
        return data

    def close(self) -> None:
        if not self.closed:
            try:
                while self.drain and self.stream.read(1 << 20):
                    pass
            finally:
                self.stream.close()
                super().close()


FIRST_PIECE = 1 << 20  # a run's first ranged GET; each next one twice as long, up to CHUNK


class _Ranged(io.RawIOBase):
    """Bytes ``start .. end - 1`` of a file on a store or server, fetched in order in pieces of
    1 MiB, then twice as long each time up to ``shards.store.CHUNK`` (8 MiB), each a ranged GET
    of exactly what is still wanted (a run whose window needs a few samples fetches little
    ahead of them; a long run costs few requests).

    A store that fails in transit raises ``_Dropped`` (the loader reads the rest again); one
    that refuses or lacks the file raises ``ShardError``; a file that ends before ``end``,
    ``EOFError`` (the samples recorded are not all there).
    """

    def __init__(self, url: str, start: int, end: int, options: Options | None) -> None:
        super().__init__()
        self.url, self.at, self.end, self.options = url, start, end, options
        self.piece, self.pos = b"", 0  # the piece fetched last, and how much of it was read
        self.next_size = FIRST_PIECE  # doubles up to CHUNK: few bytes ahead at a run's start

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.pos == len(self.piece) and self.at < self.end:
            stop = min(self.at + self.next_size, self.end)
            self.next_size = min(2 * self.next_size, CHUNK)
            try:
                piece = store.read_range(self.url, self.at, stop, self.options)
            except StoreUnavailable as exc:
                if _refused(exc):
                    raise ShardError(f"cannot read shard {exc}") from None
                raise _Dropped(str(exc)) from None
            except StoreError as exc:
                raise ShardError(f"cannot read shard {exc}") from None
            if len(piece) > stop - self.at:  # a server that ignores Range sends the whole file
                piece = piece[self.at : stop]
            if len(piece) < stop - self.at:
                raise EOFError(
                    f"it ends {self.end - self.at - len(piece):,} bytes before the samples asked "
                    "for do"
                )
            self.piece, self.pos, self.at = piece, 0, stop
        # slices of the piece, never the piece re-cut: tarfile reads 512-byte headers
        end = len(self.piece) if size < 0 else min(self.pos + size, len(self.piece))
        data, self.pos = self.piece[self.pos : end], end
        return data


def _refused(exc: BaseException) -> bool:
    """Whether a client error behind ``exc`` is an HTTP 4xx other than a timeout or throttling
    (the file is refused or absent: retrying will not help)."""
    status = getattr(exc.__cause__, "status", None)
    return isinstance(status, int) and 400 <= status < 500 and status not in (408, 429)


def _skip(stream: BinaryIO, count: int, url: str) -> None:
    """Read ``count`` bytes of ``stream`` and drop them (a source that cannot seek)."""
    while count > 0:
        data = stream.read(min(count, 1 << 20))
        if not data:
            raise OSError(f"{url} ends {count:,} bytes before the sample to start at")
        count -= len(data)


def open_shard(
    url: str, offset: int = 0, length: int | None = None, shards: ShardList | None = None
) -> BinaryIO:
    """A shard's bytes as a stream, from byte ``offset``, ``length`` bytes (None: to its end).

    A local file seeks; a URL (``s3://``, ``gs://``, ``http(s)://``...) is read with ranged
    GETs of just those bytes (``shards.store.read_range``), or, when ``shards`` has a cache,
    downloaded whole once, checked against the index and read from the local copy; a
    ``pipe:`` command's output is read and dropped up to ``offset``. ``shards`` (the
    ``ShardList`` the URL comes from) also gives the store's options and the shard's size.

    Raises:
        TransientShardError: the store failed in transit; ShardError: it refused the shard,
            has none, or holds other bytes than the index records.
    """
    if url.startswith("pipe:"):
        stream = gopen(url, "rb")
        _skip(stream, offset, url)
        return _Window(stream, length, drain=True)
    if not is_url(url):
        if offset == 0 and length is None:
            return gopen(url, "rb")
        stream = open(url, "rb")  # noqa: SIM115 - closed by the caller
        stream.seek(offset)
        return _Window(stream, length)
    options = shards.options if shards is not None else None
    info = shards.info(url) if shards is not None else None
    try:
        if info is not None and shards.cache is not None:
            stream = shards.cache.open(url, info.sha256, info.bytes, options)
            stream.seek(offset)
            return _Window(stream, length)
        end = offset + length if length is not None else info.bytes if info else None
        if end is None:
            end = store.size(url, options)
            if end is None:
                raise NotFound(f"{store.redact(url)}: not found")
    except StoreUnavailable as exc:
        kind = ShardError if _refused(exc) else TransientShardError
        raise kind(f"cannot read shard {exc}") from None
    except ValueError as exc:  # StoreError, CacheMismatch
        raise ShardError(f"cannot read shard {exc}") from None
    return _Ranged(url, offset, end, options)


@dataclass(frozen=True)
class RawSample:
    """One sample's members as stored: file name after the key (``fg.jpg``) -> bytes."""

    key: str
    url: str
    files: dict[str, bytes]


def _seek_entries(
    f: BinaryIO, offset: int, length: int | None, read: Callable[[str], bool]
) -> Iterator[TarEntry]:
    """``tar_entries`` for a local file: the members ``read`` wants are read, the others
    seeked over (a full set's ``merged`` and ``trimap``, which training does not use: 0.6 of
    the loader's 9.7 ms per sample, docs/benchmarks.md). Our shards are plain USTAR files;
    a header of any other kind (a pax or GNU long name, a link) is refused, naming it.

    Raises:
        tarfile.TarError, EOFError: a header that does not parse, or bytes that end before
            the samples asked for do.
    """
    pos, end = offset, None if length is None else offset + length
    while end is None or pos < end:
        f.seek(pos)
        header = f.read(tarfile.BLOCKSIZE)
        if not header.strip(b"\0"):
            if end is not None:  # a run of recorded samples ends before its recorded length
                raise EOFError(f"it ends {end - pos:,} bytes before the samples asked for do")
            return  # the archive's end (two zero blocks, or the file's)
        info = tarfile.TarInfo.frombuf(header, tarfile.ENCODING, "surrogateescape")
        if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
            raise tarfile.HeaderError(f"member {info.name!r} is not a plain file (type "
                                      f"{info.type!r}); shards hold plain files only")  # fmt: skip
        key, _, file = info.name.partition(".")
        data = None
        if read(file):
            data = f.read(info.size)
            if len(data) < info.size:
                raise EOFError(f"member {info.name} ends {info.size - len(data):,} bytes short")
        next_pos = pos + tarfile.BLOCKSIZE + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        yield TarEntry(info.name, key, file, True, data, pos, next_pos)
        pos = next_pos


def raw_samples(
    url: str,
    names: Iterable[str] | None = None,
    offset: int = 0,
    length: int | None = None,
    shards: ShardList | None = None,
) -> Iterator[RawSample]:
    """The samples of one shard in order, with only the members ``names`` (None: all).

    ``offset`` and ``length`` read only those bytes (``open_shard``): a run of whole samples,
    as ``ShardSamples.span`` gives it; ``shards``, the ``ShardList`` of ``url``, gives the
    store's options and cache.

    Raises:
        ShardError: the shard cannot be opened or is not a tar to its end (named, with the
            last key read).
    """
    wanted = None if names is None else frozenset(names)
    read = None if wanted is None else (lambda file: name_of(file) in wanted)
    key, files = None, {}
    try:
        local = read is not None and not is_url(url) and not url.startswith("pipe:")
        with open(url, "rb") if local else open_shard(url, offset, length, shards) as stream:
            entries = (_seek_entries(stream, offset, length, read) if local
                       else tar_entries(stream, read))  # fmt: skip
            for entry in entries:
                if entry.key != key and key is not None:
                    yield RawSample(key, url, files)
                    files = {}
                key = entry.key
                if entry.data is not None:
                    files[entry.file] = entry.data
    except _Dropped as exc:
        where = f"{url} after key {key}" if key else url
        raise TransientShardError(f"reading shard {where}: {exc}") from exc
    except (tarfile.TarError, EOFError) as exc:
        where = f"{url} after key {key}" if key else url
        raise ShardError(f"corrupt shard {where}: {exc}; {VERIFY_HINT}") from exc
    except OSError as exc:  # no such file, a refused connection, a failing pipe: command
        where = f"{url} after key {key}" if key else url
        raise ShardError(f"cannot read shard {where}: {exc}") from exc
    if key is not None:
        yield RawSample(key, url, files)


_DECODERS: dict[str, Callable[[bytes], Any]] = {
    "color": decode_color,
    "grey": decode_grey,
    "json": json.loads,
}


def decode_member(name: str, data: bytes) -> Any:
    """One member's bytes decoded by its schema codec.

    Raises:
        ValueError: the bytes do not decode (``not a decodable image``, invalid JSON).
    """
    return _DECODERS[member(name).codec](data)


def decode(
    raw: RawSample,
    names: Iterable[str],
    decoder: Callable[[str, bytes], Any] = decode_member,
) -> dict[str, Any]:
    """Decode the members ``names`` of a sample by their schema codec.

    ``decoder(name, data)`` decodes one member (``decode_member``; the training loader passes
    one that keeps shared members decoded, ``training.data.decode_cache``).

    Returns:
        Member name -> (H, W, 3) uint8 RGB, (H, W) uint8, or a dict (``json``).

    Raises:
        SampleError: a member is missing or does not decode (the shard, key and member named).
    """
    by_name = {name_of(file): file for file in raw.files}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise SampleError(
            f"{raw.url} key {raw.key}: missing member(s) {', '.join(missing)}; {VERIFY_HINT}"
        )
    out = {}
    for name in names:
        file = by_name[name]
        try:
            out[name] = decoder(name, raw.files[file])
        except ValueError as exc:
            raise SampleError(f"{raw.url} key {raw.key}: {file}: {exc}; {VERIFY_HINT}") from None
    return out


def require(shards: ShardList, names: Iterable[str]) -> None:
    """Check that the samples of ``shards`` hold the members ``names``, before reading any.

    Raises:
        shards.schema.MissingMembers: they do not (a lean set's train split lacks ``merged``
            and ``trimap``); the message says what they hold and how to rebuild.
    """
    names = tuple(names)
    for split in dict.fromkeys(i.split for i in map(shards.info, shards.urls) if i is not None):
        require_members(shards.index.meta, split, names, store.redact(str(shards.index.root)))


def read_samples(
    urls: Iterable[str] | ShardList,
    names: Iterable[str],
    limit: int = 0,
    rank: int = 0,
    world: int = 1,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(key, decoded members)`` of the samples of the shards, in order.

    Args:
        urls: the shards, read one after the other (a ``ShardList``: with its store's
            options and cache).
        names: the members to decode (``shards.schema``), e.g. ``SCORED_MEMBERS``.
        limit: stop after the first ``limit`` samples (0: all).
        rank, world: keep only samples ``i`` with ``i % world == rank`` (the others are read
            past, never decoded): every rank of a job gets its own share.

    Raises:
        ShardError: a shard that cannot be read; ValueError: a sample that cannot be decoded.
    """
    names = tuple(names)
    shards = urls if isinstance(urls, ShardList) else None
    if shards is not None:
        urls = shards.urls
        require(shards, names)
    samples = (raw for url in urls for raw in raw_samples(url, names, shards=shards))
    for i, raw in enumerate(samples):
        if limit and i >= limit:
            return
        if i % world == rank:
            yield raw.key, decode(raw, names)


def scored_samples(
    urls: Iterable[str] | ShardList, limit: int = 0, rank: int = 0, world: int = 1
) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """``(key, composite, trimap, alpha)`` of the samples, as validation and evaluation score
    them: (H, W, 3) uint8 RGB, (H, W) uint8 0/128/255, (H, W) uint8 (``read_samples``'s args).
    """
    for key, m in read_samples(urls, SCORED_MEMBERS, limit, rank, world):
        yield key, m["merged"], m["trimap"], m["alpha"]
