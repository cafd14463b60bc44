"""The shard set's index: ``index.json`` (the commit marker) and ``samples.parquet``.

Layout of a shard set ``OUT``::

    OUT/index.json          version, config, split, per shard: path/samples/bytes/sha256
    OUT/samples.parquet     one row per planned sample: where, made of what, status
    OUT/train/train-000000.tar ...  WebDataset shards
    OUT/validation/validation-000000.tar ...

``index.json`` is written last and atomically: a set without it is unfinished. Everything a
reader needs (shard list, sample counts per shard) comes from it.

``OUT`` is a local folder or a store URL (``s3://bucket/set``): every function here takes
either, with the store's ``options`` (``shards.store``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from shards.schema import hash_columns
from shards.store import NotFound, Options, join, read_bytes, redact, write_bytes

FORMAT_VERSION = 1
INDEX_NAME = "index.json"
SAMPLES_NAME = "samples.parquet"

SAMPLE_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("split", pa.string()),
        ("shard", pa.string()),  # path relative to the set, e.g. train/train-000000.tar
        ("position", pa.int32()),  # order within the shard
        ("foreground", pa.string()),  # file name in original/
        ("k", pa.int32()),  # composite number of this foreground
        ("background", pa.string()),  # file name in the bg dir actually used
        ("planned_background", pa.string()),  # as planned (differs when replaced)
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("status", pa.string()),  # ok | replaced | failed
        ("error", pa.string()),  # why replaced or failed; empty when ok
        ("members", pa.list_(pa.string())),  # member file names, e.g. fg.jpg
        # where the sample starts in its shard (its first tar header) and its bytes to the end
        # of its last member: a reader seeks there (null for failed samples; absent in sets
        # built before the columns existed, which verify and the readers accept)
        ("offset", pa.int64()),
        ("length", pa.int64()),
        # <member>_size, <member>_sha256 of every hashed member of shards.schema.MEMBERS
        *[(c, pa.int64() if c.endswith("_size") else pa.string()) for c in hash_columns()],
    ]
)


@dataclass(frozen=True)
class ShardInfo:
    """One shard as ``index.json`` records it."""

    path: str  # relative to the set, e.g. train/train-000000.tar
    split: str
    samples: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Index:
    """A parsed ``index.json``."""

    root: str  # where it was read from (a folder or a URL prefix)
    format_version: int
    shards: tuple[ShardInfo, ...]
    meta: dict[str, Any]  # everything else: config, split rule, composition, build info

    def split(self, name: str) -> tuple[ShardInfo, ...]:
        """The shards of one split, in order."""
        return tuple(s for s in self.shards if s.split == name)

    def samples(self, split: str | None = None) -> int:
        """Sample count of a split, or of the whole set."""
        return sum(s.samples for s in self.shards if split in (None, s.split))


def write_samples(root: str | Path, rows: list[dict[str, Any]], options: Options | None = None):
    """Write ``samples.parquet`` whole (rows in the order given)."""
    table = pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    write_bytes(join(root, SAMPLES_NAME), sink.getvalue().to_pybytes(), options)


def read_samples(root: str | Path, options: Options | None = None) -> pa.Table:
    """Read ``samples.parquet``; a clear ``ValueError`` when absent or unreadable."""
    where = join(root, SAMPLES_NAME)
    try:
        data = read_bytes(where, options)
    except NotFound:
        raise ValueError(f"{redact(where)} is missing: not a finished shard set") from None
    try:
        return pq.read_table(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValueError(f"{redact(where)} is not a readable parquet file ({exc})") from None


def write_index(
    root: str | Path, shards: list[ShardInfo], meta: dict[str, Any], options: Options | None = None
) -> None:
    """Write ``index.json`` whole: the last step of a build, its commit marker."""
    body = {"format_version": FORMAT_VERSION, **meta, "shards": [asdict(s) for s in shards]}
    data = (json.dumps(body, indent=1) + "\n").encode()
    write_bytes(join(root, INDEX_NAME), data, options)


def parse_index(text: str | bytes, root: str) -> Index:
    """Parse and check ``index.json`` content read from ``root`` (a folder or URL)."""
    where = f"{root.rstrip('/')}/{INDEX_NAME}"
    try:
        body = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{where} is not valid JSON ({exc}); rebuild or re-copy the set") from None
    if not isinstance(body, dict) or "shards" not in body:
        raise ValueError(f"{where} has no 'shards' list: not a shard-set index")
    version = body.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{where} has format_version {version!r}; this code reads {FORMAT_VERSION}"
        )
    try:
        shards = tuple(ShardInfo(**entry) for entry in body.pop("shards"))
    except TypeError as exc:
        raise ValueError(f"{where}: malformed shard entry ({exc})") from None
    body.pop("format_version")
    return Index(root=root, format_version=version, shards=shards, meta=body)


def read_index(root: str | Path, options: Options | None = None) -> Index:
    """Read ``root/index.json`` of a shard set in a folder or at a URL.

    Raises:
        ValueError: it is not a valid index; ``shards.store.NotFound`` (a ValueError too): it
            is missing (an unfinished set, or no set); ``shards.store.StoreError`` (its base):
            the location is refused or its bucket missing.
    """
    where = join(root, INDEX_NAME)
    try:
        text = read_bytes(where, options)
    except NotFound:  # still a NotFound: a command says so with exit 2, before any work
        raise NotFound(
            f"{redact(where)} is missing: the shard set is unfinished or not a shard set "
            "(re-run the build to finish it)"
        ) from None
    return parse_index(text, str(root))
