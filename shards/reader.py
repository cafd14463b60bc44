"""The one shard reader: where a set's shards are, and the samples in them, decoded.

Where (``resolve_shards``): what a user passes as ``--shards`` becomes shard URLs and their
sample counts, always from a shard set's ``index.json``:

- a shard set folder (``/data/shards``) or its URL (``http://host/shards/``): the index there;
  a split's folder (``/data/shards/validation``) or URL: that split, with the set's index;
- a brace pattern (``/data/shards/train/train-{000000..000099}.tar``) or ``http(s)://`` URLs
  of shards: the set's index is found two levels up (``<set>/<split>/<shard>.tar``);
- a ``pipe:`` command (``pipe:aws s3 cp s3://b/train-{000000..000099}.tar -``): pass
  ``index=`` (the set's folder or URL), since a command has no location to look beside.

What (``read_samples``): each shard is opened with WebDataset's ``gopen`` (a file, an HTTP URL
streamed through curl, or a ``pipe:`` command's output) and read once, front to back, as a tar
stream (``tar_entries``, which ``shards.verify`` also uses); a sample's members are grouped by
key and only the members asked for are kept and decoded, by the codec ``shards.schema`` gives
them. Colour members decode to RGB, greys to (H, W) uint8, ``json`` to a dict.

A shard that cannot be opened or parsed raises ``ShardError`` naming it and the last key read;
a sample that lacks a member asked for, or whose member does not decode, raises ``ValueError``
naming the shard, the key and the member. Callers decide whether to stop or skip.
"""

from __future__ import annotations

import json
import re
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from webdataset.gopen import gopen
from webdataset.shardlists import expand_urls

from shards.codec import decode_color, decode_grey
from shards.index import INDEX_NAME, Index, parse_index, read_index
from shards.schema import SCORED_MEMBERS, SPLITS, member, name_of

VERIFY_HINT = "check the set with `indexnet shards verify`"


class ShardError(RuntimeError):
    """A shard that cannot be opened or read to its end; the message names it."""


# -- where the shards are ---------------------------------------------------------------------


@dataclass(frozen=True)
class ShardList:
    """Shards to stream and their sample counts (from the set's index)."""

    urls: tuple[str, ...]
    samples: tuple[int, ...]
    index: Index

    @property
    def total(self) -> int:
        return sum(self.samples)


def is_url(spec: str) -> bool:
    """``scheme://...`` (http, https, ...), as opposed to a local path or a ``pipe:`` command."""
    return bool(re.match(r"^[a-z][a-z0-9+.-]*://", spec))


def load_index(location: str) -> Index:
    """``index.json`` of a shard set given as a folder or an ``http(s)://`` URL."""
    if not is_url(location):
        return read_index(Path(location))
    url = location.rstrip("/") + "/" + INDEX_NAME
    try:
        with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - user's URL
            return parse_index(response.read(), location)
    except (urllib.error.URLError, OSError) as exc:
        raise ValueError(f"cannot read {url} ({exc}); is the shard set served there?") from None


def _join(root: str, rel: str) -> str:
    return root.rstrip("/") + "/" + rel if is_url(root) else str(Path(root) / rel)


def shard_urls(index: Index, split: str) -> tuple[str, ...]:
    """URLs (or paths) of one split's shards of a set, joined to where its index was read."""
    return tuple(_join(index.root, s.path) for s in index.split(split))


def resolve_shards(spec: str, split: str = "train", index: str | None = None) -> ShardList:
    """Shard URLs and sample counts for ``--shards`` (see the module docstring).

    Raises:
        ValueError: no index can be found, a named shard is not in it, or the split is empty.
    """
    is_set = not spec.endswith(".tar") and "{" not in spec and not spec.startswith("pipe:")
    parent, _, name = spec.rstrip("/").rpartition("/")
    if is_set and name in SPLITS and (is_url(spec) or not (Path(spec) / INDEX_NAME).exists()):
        # a split's folder (OUT/validation): the set is its parent
        split, spec = name, parent or "."
    if is_set:
        idx = load_index(index or spec)
        shards = idx.split(split)
        if not shards:
            raise ValueError(f"{spec}: the shard set has no '{split}' shards")
        return ShardList(shard_urls(idx, split), tuple(s.samples for s in shards), idx)
    urls = tuple(expand_urls(spec))
    if index is None:
        if spec.startswith("pipe:"):
            raise ValueError(
                f"{spec}: a pipe: command needs index= (the shard set's folder or URL)"
            )
        first = urls[0]
        index = first.rsplit("/", 2)[0] if is_url(first) else str(Path(first).parent.parent)
    idx = load_index(index)
    by_name = {s.path.rsplit("/", 1)[-1]: s for s in idx.shards}
    counts = []
    for url in urls:
        name = re.split(r"[/ ]", url.rstrip(" -"))[-1]
        if name not in by_name:
            raise ValueError(f"{url}: shard {name} is not in {index}/{INDEX_NAME}")
        counts.append(by_name[name].samples)
    return ShardList(urls, tuple(counts), idx)


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
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for info in tar:
            key, _, file = info.name.partition(".")
            wanted = info.isreg() and (read is None or read(file))
            data = tar.extractfile(info).read() if wanted else None
            end = info.offset_data + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            yield TarEntry(info.name, key, file, info.isreg(), data, info.offset, end)
            tar.members = []  # streaming: keep no history, memory stays flat


def open_shard(url: str) -> BinaryIO:
    """A shard's bytes as a stream: a local file, ``http(s)://`` through curl, or ``pipe:``."""
    return gopen(url, "rb")


@dataclass(frozen=True)
class RawSample:
    """One sample's members as stored: file name after the key (``fg.jpg``) -> bytes."""

    key: str
    url: str
    files: dict[str, bytes]


def raw_samples(url: str, names: Iterable[str] | None = None) -> Iterator[RawSample]:
    """The samples of one shard in order, with only the members ``names`` (None: all).

    Raises:
        ShardError: the shard cannot be opened or is not a tar to its end (named, with the
            last key read).
    """
    wanted = None if names is None else frozenset(names)
    read = None if wanted is None else (lambda file: name_of(file) in wanted)
    key, files = None, {}
    try:
        with open_shard(url) as stream:
            for entry in tar_entries(stream, read):
                if entry.key != key and key is not None:
                    yield RawSample(key, url, files)
                    files = {}
                key = entry.key
                if entry.data is not None:
                    files[entry.file] = entry.data
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


def decode(raw: RawSample, names: Iterable[str]) -> dict[str, Any]:
    """Decode the members ``names`` of a sample by their schema codec.

    Returns:
        Member name -> (H, W, 3) uint8 RGB, (H, W) uint8, or a dict (``json``).

    Raises:
        ValueError: a member is missing or does not decode (the shard, key and member named).
    """
    by_name = {name_of(file): file for file in raw.files}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise ValueError(
            f"{raw.url} key {raw.key}: missing member(s) {', '.join(missing)}; {VERIFY_HINT}"
        )
    out = {}
    for name in names:
        file = by_name[name]
        try:
            out[name] = decode_member(name, raw.files[file])
        except ValueError as exc:
            raise ValueError(f"{raw.url} key {raw.key}: {file}: {exc}; {VERIFY_HINT}") from None
    return out


def read_samples(
    urls: Iterable[str], names: Iterable[str], limit: int = 0, rank: int = 0, world: int = 1
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(key, decoded members)`` of the samples of the shards, in order.

    Args:
        urls: the shards, read one after the other.
        names: the members to decode (``shards.schema``), e.g. ``SCORED_MEMBERS``.
        limit: stop after the first ``limit`` samples (0: all).
        rank, world: keep only samples ``i`` with ``i % world == rank`` (the others are read
            past, never decoded): every rank of a job gets its own share.

    Raises:
        ShardError: a shard that cannot be read; ValueError: a sample that cannot be decoded.
    """
    names = tuple(names)
    samples = (raw for url in urls for raw in raw_samples(url, names))
    for i, raw in enumerate(samples):
        if limit and i >= limit:
            return
        if i % world == rank:
            yield raw.key, decode(raw, names)


def scored_samples(
    urls: Iterable[str], limit: int = 0, rank: int = 0, world: int = 1
) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """``(key, composite, trimap, alpha)`` of the samples, as validation and evaluation score
    them: (H, W, 3) uint8 RGB, (H, W) uint8 0/128/255, (H, W) uint8 (``read_samples``'s args).
    """
    for key, m in read_samples(urls, SCORED_MEMBERS, limit, rank, world):
        yield key, m["merged"], m["trimap"], m["alpha"]
