"""shards.cache: shards kept by content, checked against the index, evicted least recently used,
shared by processes."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from shards.cache import CacheMismatch, ShardCache
from shards.index import read_index


def _shards(shard_set):
    """(path, sha256, bytes) of the set's train shards."""
    index = read_index(shard_set)
    return [(str(shard_set / s.path), s.sha256, s.bytes) for s in index.split("train")]


def test_least_recently_used_shards_are_evicted_beyond_the_limit(shard_set, tmp_path):
    shards = _shards(shard_set)
    limit = shards[0][2] + shards[1][2]  # room for about two shards
    cache = ShardCache(str(tmp_path / "cache"), limit)
    for path, sha, size in shards[:2]:
        with cache.open(path, sha, size) as f:
            assert f.read() == Path(path).read_bytes()
    with cache.open(*shards[0]):  # shard 0 used again: shard 1 is now the least recent
        pass
    with cache.open(*shards[2]):
        pass
    kept = {p.stem for p in (tmp_path / "cache" / "shards").glob("*.tar")}
    assert kept == {shards[0][1], shards[2][1]}
    assert ShardCache.of(None) is None and ShardCache.of(tmp_path, 0.5).limit_bytes == 1 << 29
    with pytest.raises(ValueError, match="--cache-limit-gb must be >= 0"):
        ShardCache.of(tmp_path, -1)


def test_a_corrupt_copy_is_fetched_again_and_a_wrong_source_is_refused(shard_set, tmp_path, capfd):
    path, sha, size = _shards(shard_set)[0]
    cache = ShardCache(str(tmp_path / "cache"))
    cache.open(path, sha, size).close()
    copy = tmp_path / "cache" / "shards" / f"{sha}.tar"
    data = bytearray(copy.read_bytes())
    data[700] ^= 1
    copy.write_bytes(bytes(data))
    with cache.open(path, sha, size) as f:
        assert f.read() == Path(path).read_bytes()
    assert "is not what the index records; downloading it again" in capfd.readouterr().err
    with pytest.raises(CacheMismatch, match="index.json records"):
        cache.open(path, "0" * 64, size)
    assert not list((tmp_path / "cache" / "shards").glob("0000*.tar*"))  # nothing half-written kept


def _open_all(args) -> list[bytes]:
    root, shards = args
    cache = ShardCache(root)
    out = []
    for shard in shards:
        with cache.open(*shard) as f:
            out.append(f.read())
    return out


def test_processes_share_one_cache(shard_set, tmp_path):
    shards = _shards(shard_set)
    args = (str(tmp_path / "cache"), shards)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        got = pool.map(_open_all, [args, (args[0], shards[::-1])])
    expected = [Path(path).read_bytes() for path, _, _ in shards]
    assert got == [expected, expected[::-1]]
    assert len(list((tmp_path / "cache" / "shards").glob("*.tar"))) == len(shards)
