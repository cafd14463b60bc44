"""training.data.decode_cache: shared members decoded once per visit, within a byte bound."""

from __future__ import annotations

import numpy as np
import pytest

from shards.reader import ShardSamples
from training.data.decode_cache import DecodeCache, Use, plan_uses


def _layout(*fg_hashes: str) -> tuple[ShardSamples, ...]:
    keys = tuple(f"k{i}" for i in range(len(fg_hashes)))
    return (ShardSamples(keys, None, None, {"fg": fg_hashes, "alpha": fg_hashes}),)


def test_plan_uses_points_each_access_at_the_next_one_of_the_same_bytes():
    layout = _layout("a", "b", "a", "c", "b", "a")
    refs = [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (0, 5), (0, 1)]  # the last reads b again
    uses = plan_uses(refs, layout)
    assert [u["fg"].next_use for u in uses] == [2, 4, 5, None, 6, None, None]
    assert [u["fg"].sha256 for u in uses] == ["a", "b", "a", "c", "b", "a", "b"]
    assert uses[0]["alpha"] == uses[0]["fg"]
    bare = (ShardSamples(("k0",), None, None),)  # a set without recorded hashes: never kept
    assert plan_uses([(0, 0)], bare) == [{}]


class _Counting:
    def __init__(self):
        self.calls: list[bytes] = []

    def __call__(self, name: str, data: bytes) -> np.ndarray:
        self.calls.append(data)
        return np.full(100, data[0], np.uint8)  # 100 bytes decoded


def _run(sequence: list[str], max_bytes: int) -> tuple[DecodeCache, _Counting, list[int]]:
    decoder = _Counting()
    cache = DecodeCache(max_bytes, decoder)
    layout = _layout(*sequence)
    uses = plan_uses([(0, i) for i in range(len(sequence))], layout)
    sizes = []
    for name, use in zip(sequence, uses, strict=True):
        array = cache.decode("fg", name.encode(), use["fg"])
        assert array[0] == ord(name) and not array.flags.writeable
        sizes.append(cache.bytes)
    return cache, decoder, sizes


def test_a_foreground_is_decoded_once_while_later_samples_need_it():
    cache, decoder, _ = _run(list("abcabcabc"), 10_000)
    assert decoder.calls == [b"a", b"b", b"c"]
    assert (cache.hits, cache.lookups) == (6, 9)
    assert cache.bytes == 0  # nothing is kept once no later access needs it


def test_the_bound_holds_and_what_is_needed_last_goes_first():
    # room for two entries (101 bytes each: the array and its 1-byte source); a, b, c cycle:
    # keeping the two needed soonest (Belady) serves 4 of the 6 repeats, where LRU serves none
    cache, decoder, sizes = _run(list("abcabcabc"), 202)
    assert max(sizes) <= 202
    assert cache.hits == 4 and len(decoder.calls) == 5
    tiny, decoder, _ = _run(list("aaaa"), 50)  # an entry larger than the bound is never kept
    assert tiny.hits == 0 and len(decoder.calls) == 4


def test_bytes_that_differ_from_the_record_are_decoded_never_served_from_the_cache():
    decoder = _Counting()
    cache = DecodeCache(10_000, decoder)
    first = cache.decode("fg", b"xyz", Use("h", 1))
    second = cache.decode("fg", b"q-other", Use("h", None))  # recorded as h, but not h's bytes
    assert first[0] == ord("x") and second[0] == ord("q")
    assert cache.hits == 0 and len(decoder.calls) == 2
    assert cache.decode("fg", b"z", None)[0] == ord("z")  # not recorded: decoded, not kept
    assert cache.bytes == 0


def test_derived_maps_are_made_once_for_a_reused_array_and_counted():
    decoder = _Counting()
    cache = DecodeCache(10_000, decoder)
    made = []

    class Maps:
        nbytes = 40

    def make(array):
        made.append(array)
        return Maps()

    array = cache.decode("alpha", b"a", Use("a", 1))
    assert cache.derived(array, make) is None  # not reused yet: the caller computes its own
    again = cache.decode("alpha", b"a", Use("a", 2))
    assert again is array
    maps = cache.derived(array, make)
    assert cache.derived(array, make) is maps and len(made) == 1
    assert cache.bytes == 101 + 40
    assert cache.derived(np.zeros(3, np.uint8), make) is None  # not a cached array
    cache.decode("alpha", b"a", Use("a", None))  # the last access drops it with its maps
    assert cache.bytes == 0


@pytest.mark.parametrize("bound", [0, 150, 10_000])
def test_any_bound_gives_the_same_arrays(bound):
    sequence = list("abacbdcadb")
    decoder = _Counting()
    cache = DecodeCache(bound, decoder)
    uses = plan_uses([(0, i) for i in range(len(sequence))], _layout(*sequence))
    got = [
        int(cache.decode("fg", s.encode(), u["fg"])[0]) for s, u in zip(sequence, uses, strict=True)
    ]
    assert got == [ord(s) for s in sequence]
    assert cache.bytes <= max(bound, 0)
