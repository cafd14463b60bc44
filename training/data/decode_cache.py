"""Decode a foreground once per visit: a loader process's cache of decoded shared members.

Within a shard the samples of a few foregrounds are interleaved, and their ``fg`` and ``alpha``
members (``shards.schema.SHARED_MEMBERS``) are byte-identical across those samples. Decoding
them is most of a sample's cost, so each loader process keeps the decoded arrays while a later
sample it will decode needs them.

The loader knows its whole future: ``training.data.order`` fixes which samples a process decodes,
in which order, and ``samples.parquet`` records each member's sha256. ``plan_uses`` turns that
into, per access, the next access of the same bytes. The cache then keeps exactly the entries
still needed, and when its byte bound is reached it drops the one needed last (Belady's rule,
the best hit rate any cache of that size can have). An entry is used only when its bytes equal
the sample's (a full comparison), so a recorded hash that is wrong costs a decode, never a
wrong array. Cached arrays are read-only; the augmentation never writes into its inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shards.reader import ShardSamples
from shards.schema import SHARED_MEMBERS

MB = 1 << 20


def plan_uses(
    refs: Sequence[tuple[int, int]], layout: Sequence[ShardSamples]
) -> list[dict[str, Use]]:
    """Per access ``i`` (a ``(shard, position)`` in decode order), for each shared member whose
    hash is recorded: its sha256 and the index of the next access holding the same bytes."""
    uses: list[dict[str, Use]] = [{} for _ in refs]
    for name in SHARED_MEMBERS:
        later: dict[str, int] = {}  # sha256 -> the earliest access after the current one
        for i in range(len(refs) - 1, -1, -1):
            shard, position = refs[i]
            recorded = layout[shard].sha256.get(name)
            if recorded is None:  # a set without the hash: never kept
                continue
            sha = recorded[position]
            uses[i][name] = Use(sha, later.get(sha))
            later[sha] = i
    return uses


@dataclass(frozen=True)
class Use:
    """One access of a shared member: its recorded sha256, and the next access of the same
    bytes (None: no later one)."""

    sha256: str
    next_use: int | None


@dataclass
class _Entry:
    data: bytes  # the member's bytes, compared in full on every hit
    array: np.ndarray  # decoded, read-only
    next_use: int  # the access that needs it next
    nbytes: int
    hits: int = 0  # accesses it served
    derived: object = None  # what a caller made of the array once (``DecodeCache.derived``)


class DecodeCache:
    """Decoded shared members of one loader process, bounded to ``max_bytes``.

    ``decode(name, data, use)`` returns the decoded member and keeps it for the next access
    of the same bytes (``use.next_use``; None: no later access needs it, so it is dropped).
    ``hits`` and ``lookups`` count the accesses served from the cache and all accesses.
    """

    def __init__(self, max_bytes: int, decoder: Callable[[str, bytes], np.ndarray]) -> None:
        self.max_bytes, self.decoder = max_bytes, decoder
        self.entries: dict[tuple[str, str], _Entry] = {}  # (member, sha256) -> entry
        self.by_array: dict[int, _Entry] = {}  # id(entry.array) -> entry, while it is cached
        self.bytes = 0
        self.hits = self.lookups = 0

    def decode(self, name: str, data: bytes, use: Use | None) -> np.ndarray:
        self.lookups += 1
        if use is None:  # not recorded: decoded every time
            return self.decoder(name, data)
        key = (name, use.sha256)
        entry = self.entries.get(key)
        if entry is not None and entry.data == data:
            self.hits += 1
            entry.hits += 1
        else:  # a first visit, or bytes that are not what samples.parquet records
            if entry is not None:
                self._drop(key)
            array = self.decoder(name, data)
            array.flags.writeable = False
            entry = _Entry(data, array, 0, array.nbytes + len(data))
            if use.next_use is None or entry.nbytes > self.max_bytes:
                return array
            self.entries[key] = entry
            self.by_array[id(array)] = entry
            self.bytes += entry.nbytes
        if use.next_use is None:
            self._drop(key)
            return entry.array
        entry.next_use = use.next_use
        while self.bytes > self.max_bytes:  # drop what is needed last (possibly this one)
            self._drop(max(self.entries, key=lambda k: self.entries[k].next_use))
        return entry.array

    def derived(self, array: np.ndarray, make: Callable[[np.ndarray], Any]) -> Any:
        """``make(array)`` (which has an ``nbytes``), made once per cached array that has been
        reused (so that it is made for arrays used at least twice) and kept, and counted, with
        it; None otherwise (the caller computes what it needs itself)."""
        entry = self.by_array.get(id(array))
        if entry is None or entry.array is not array or not entry.hits:
            return None
        if entry.derived is None:
            entry.derived = made = make(array)
            self.bytes += made.nbytes
            entry.nbytes += made.nbytes
            while self.bytes > self.max_bytes:  # drop what is needed last (possibly this one)
                self._drop(max(self.entries, key=lambda k: self.entries[k].next_use))
            return made
        return entry.derived

    def _drop(self, key: tuple[str, str]) -> None:
        entry = self.entries.pop(key)
        del self.by_array[id(entry.array)]
        self.bytes -= entry.nbytes
