"""shards.writer: deterministic, atomic tars that WebDataset reads."""

from __future__ import annotations

import hashlib
import tarfile

import pytest
import webdataset as wds

from shards.atomic import TMP_SUFFIX, atomic_file, atomic_write_bytes
from shards.writer import ShardWriter, check_key, sha256_file


def _write(path, samples):
    with ShardWriter(path) as writer:
        for key, members in samples:
            writer.write(key, members)
        return writer.close()


SAMPLES = [
    ("a-000", {"json": b"{}", "alpha.png": b"AA"}),
    ("b-001", {"json": b"[]", "fg.jpg": b"F"}),
]


def test_tar_is_deterministic_sorted_and_anonymous(tmp_path):
    size, digest = _write(tmp_path / "x.tar", SAMPLES)
    again = _write(tmp_path / "y.tar", SAMPLES)
    assert (size, digest) == again == sha256_file(tmp_path / "x.tar")
    assert digest == hashlib.sha256((tmp_path / "y.tar").read_bytes()).hexdigest()
    with tarfile.open(tmp_path / "x.tar") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == [
        "a-000.alpha.png",
        "a-000.json",
        "b-001.fg.jpg",
        "b-001.json",
    ]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {
        (0, 0, 0, "", "", 0o644)
    }


def test_webdataset_reads_it(tmp_path):
    _write(tmp_path / "x.tar", SAMPLES)
    got = list(wds.WebDataset(str(tmp_path / "x.tar"), shardshuffle=False))
    assert [s["__key__"] for s in got] == ["a-000", "b-001"]
    assert got[0]["alpha.png"] == b"AA" and got[1]["fg.jpg"] == b"F"


def test_failure_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), ShardWriter(tmp_path / "x.tar") as writer:
        writer.write("a", {"json": b"{}"})
        raise RuntimeError("worker died")
    assert list(tmp_path.iterdir()) == []


def test_unfinished_shard_is_only_a_tmp_file(tmp_path):
    writer = ShardWriter(tmp_path / "x.tar")
    writer.write("a", {"json": b"{}"})
    names = [p.name for p in tmp_path.iterdir()]
    assert len(names) == 1 and names[0].startswith("x.tar.") and names[0].endswith(".tmp")
    writer.abort()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key", ["", "a.b", "a/b", "a\\b"])
def test_bad_keys(key):
    with pytest.raises(ValueError, match="must be non-empty"):
        check_key(key)


def test_duplicate_key_in_a_shard(tmp_path):
    with pytest.raises(ValueError, match="duplicate key 'a'"), ShardWriter(tmp_path / "x.tar") as w:
        w.write("a", {"json": b"1"})
        w.write("a", {"json": b"2"})


def test_atomic_write_bytes_replaces(tmp_path):
    path = tmp_path / "f.json"
    atomic_write_bytes(path, b"1")
    atomic_write_bytes(path, b"2")
    assert path.read_bytes() == b"2" and [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_atomic_file_leaves_the_old_file_and_no_temporary_on_error(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_file(path) as f:
        f.write(b"half of the new")
        raise RuntimeError("disk full")
    assert path.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [path]
    with atomic_file(tmp_path / "g.bin", as_path=True) as tmp:
        assert tmp.name.startswith("g.bin.") and tmp.name.endswith(TMP_SUFFIX)
        tmp.write_bytes(b"new")  # a writer that opens the file itself (ONNX, Pillow)
    assert (tmp_path / "g.bin").read_bytes() == b"new" and len(list(tmp_path.iterdir())) == 2
