"""shards.reader: one reader for files, HTTP and pipe:, one colour convention, named errors."""

from __future__ import annotations

import io
import shutil
import tarfile

import numpy as np
import pytest
from PIL import Image

from benchmarks.http_server import serve_directory
from shards.reader import (
    ShardError,
    raw_samples,
    read_samples,
    resolve_shards,
    scored_samples,
    tar_entries,
)
from shards.schema import MEMBERS, SCORED_MEMBERS, TRAIN_MEMBERS


def _keys(samples) -> list[str]:
    return [key for key, _ in samples]


def test_every_source_reads_the_same_samples(shard_set):
    local = resolve_shards(str(shard_set))
    # a pipe: command streams its output; a brace pattern expands to one command per shard
    pipe = resolve_shards(
        f"pipe:cat {shard_set}/train/train-{{000000..000003}}.tar", index=str(shard_set)
    )
    assert pipe.total == local.total and pipe.urls[1] == f"pipe:cat {local.urls[1]}"
    expected = list(read_samples(local.urls, ("alpha", "json")))
    assert len(expected) == local.total == 30
    with serve_directory(shard_set.parent) as base:
        remote = resolve_shards(base + shard_set.name + "/")
        for urls in (remote.urls, pipe.urls):
            got = list(read_samples(urls, ("alpha", "json")))
            assert _keys(got) == _keys(expected)
            for (_, a), (_, b) in zip(got, expected, strict=True):
                assert np.array_equal(a["alpha"], b["alpha"]) and a["json"] == b["json"]


def test_only_the_members_asked_for_are_kept_and_colour_is_rgb(shard_set):
    url = resolve_shards(str(shard_set), "validation").urls[0]
    raw = next(raw_samples(url, TRAIN_MEMBERS))
    assert sorted(f.split(".")[0] for f in raw.files) == sorted(TRAIN_MEMBERS)
    full = next(raw_samples(url))
    assert {f.split(".")[0] for f in full.files} == {m.name for m in MEMBERS}
    key, rgb, trimap, alpha = next(scored_samples([url]))
    pil = np.asarray(Image.open(io.BytesIO(full.files["merged.png"])).convert("RGB"))
    assert key == full.key and np.array_equal(rgb, pil)  # RGB, as an independent decoder sees it
    assert rgb.shape[:2] == trimap.shape == alpha.shape and set(np.unique(trimap)) <= {0, 128, 255}


def test_ranks_share_the_samples_and_limit_cuts(shard_set):
    urls = resolve_shards(str(shard_set)).urls
    every = _keys(read_samples(urls, SCORED_MEMBERS))
    shares = [_keys(read_samples(urls, SCORED_MEMBERS, rank=r, world=3)) for r in range(3)]
    assert sorted(sum(shares, [])) == sorted(every) and shares[1] == every[1::3]
    assert _keys(read_samples(urls, SCORED_MEMBERS, limit=5)) == every[:5]


def test_a_truncated_shard_is_named_with_its_last_key(shard_set, tmp_path):
    root = shutil.copytree(shard_set, tmp_path / "set")
    path = root / "train" / "train-000001.tar"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    got = []
    with pytest.raises(ShardError, match=r"corrupt shard .*train-000001.tar after key o_\w+-\d+"):
        for raw in raw_samples(str(path)):
            got.append(raw.key)
    assert 0 < len(got) < 8  # the whole samples before the damage were delivered
    with pytest.raises(ShardError, match="cannot read shard .*nope.tar"):
        list(raw_samples(str(root / "nope.tar")))


def _tar(members: list[tuple[str, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_missing_or_undecodable_member_is_named(tmp_path):
    path = tmp_path / "x.tar"
    path.write_bytes(_tar([("a.alpha.png", b"not a png"), ("a.json", b"{}"), ("b.json", b"{}")]))
    samples = read_samples([str(path)], ("alpha", "json"))
    with pytest.raises(ValueError, match=r"x.tar key a: alpha.png: not a decodable image"):
        next(samples)
    with pytest.raises(ValueError, match=r"x.tar key b: missing member\(s\) alpha; check the set"):
        list(read_samples([str(path)], ("json", "alpha"), rank=1, world=2))


def test_tar_entries_report_what_is_not_a_file():
    data = _tar([("a.json", b"1"), ("sub", None), ("a.alpha.png", b"2")])
    entries = list(tar_entries(io.BytesIO(data), read=lambda file: file == "json"))
    assert [(e.key, e.file, e.regular, e.data) for e in entries] == [
        ("a", "json", True, b"1"),
        ("sub", "", False, None),
        ("a", "alpha.png", True, None),  # not asked for: skipped in the stream
    ]


def test_a_local_read_seeks_past_unused_members_and_refuses_a_foreign_header(tmp_path):
    """Training reads local shards by walking their headers, reading only the members asked for
    (the others are seeked over); a header our writer never makes is refused, named."""
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in (("k1.json", b"{}"), ("k1.merged.png", b"x" * 5000), ("k2.json", b"[]")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    got = [(raw.key, raw.files) for raw in raw_samples(str(plain), ("json",))]
    assert got == [("k1", {"json": b"{}"}), ("k2", {"json": b"[]"})]
    pax = tmp_path / "pax.tar"
    with tarfile.open(pax, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("k" * 120 + ".json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    with pytest.raises(ShardError, match=r"corrupt shard .*pax.tar.*not a plain file"):
        list(raw_samples(str(pax), ("json",)))
