"""shards.verify / info and pipeline.repair: every kind of damage is named, and repaired."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from indexnet_cli import app
from pipeline.repair import repair
from shards.codec import decode_color, decode_grey, encode_png
from shards.index import read_index
from shards.info import describe
from shards.store import NotFound
from shards.verify import verify
from shards.writer import sha256_file
from tests.conftest import version_2_config

runner = CliRunner()
TRAIN0 = "train/train-000000.tar"
TRAIN1 = "train/train-000001.tar"


@pytest.fixture
def built(shard_set) -> Path:
    """The session's finished shard set (read-only: tests copy it)."""
    return shard_set


@pytest.fixture
def damaged(built, tmp_path) -> Path:
    """A private copy of the built set to damage."""
    return Path(shutil.copytree(built, tmp_path / "set"))


def _members(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def _rewrite(root: Path, rel: str, members: list[tuple[str, bytes]]) -> None:
    """Write ``members`` as the shard ``rel`` and make index.json's entry match it."""
    with tarfile.open(root / rel, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    body = json.loads((root / "index.json").read_text())
    size, digest = sha256_file(root / rel)
    for entry in body["shards"]:
        if entry["path"] == rel:
            entry.update(bytes=size, sha256=digest,
                         samples=len({n.split(".", 1)[0] for n, _ in members}))  # fmt: skip
    (root / "index.json").write_text(json.dumps(body))


def _checks(report) -> set[tuple[str, str | None, str | None]]:
    return {(p.check, p.shard, p.key) for p in report.problems}


def _repair(root: Path, sample_data, deep: bool = False):
    def tasks(fn, items):
        return ((item, fn(item), None) for item in items)

    return repair(
        root, sample_data.data_dir, sample_data.bg_dir, lambda: verify(root, deep=deep), tasks
    )


def test_a_clean_set_verifies(built):
    for deep in (False, True):
        report = verify(built, deep=deep)
        assert report.ok, report.problems
        index = read_index(built)
        assert report.shards == len(index.shards) and report.samples == index.samples()
        assert report.bytes == sum(s.bytes for s in index.shards)


def test_flipped_byte(damaged, built, sample_data):
    path = damaged / TRAIN0
    data = bytearray(path.read_bytes())
    first = _members(path)[0][0]  # flip a byte inside the first sample's first member
    data[512 + 100] ^= 0xFF
    path.write_bytes(bytes(data))
    assert _checks(verify(damaged)) == {("sha256", TRAIN0, None)}
    deep = verify(damaged, deep=True)
    key = first.split(".")[0]
    assert ("member_sha256", TRAIN0, key) in _checks(deep)
    summary = _repair(damaged, sample_data)
    assert summary.rebuilt == [TRAIN0] and summary.ok
    assert sha256_file(damaged / TRAIN0) == sha256_file(built / TRAIN0)


def test_a_set_indexed_by_version_2_repairs_to_the_same_bytes(damaged, built, sample_data):
    """index.json of a set built before issue 24 records its config in the old shape (train,
    loss, a flat model section); repair reads it through configs.RENAMED, silently."""
    body = json.loads((damaged / "index.json").read_text())
    body["config"] = version_2_config(body["config"])
    assert "loss" in body["config"] and "optim" not in body["config"]
    (damaged / "index.json").write_text(json.dumps(body))
    (damaged / TRAIN1).unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        assert _repair(damaged, sample_data).ok
    assert sha256_file(damaged / TRAIN1) == sha256_file(built / TRAIN1)


def test_truncated_shard(damaged, sample_data):
    path = damaged / TRAIN0
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    checks = {c for c, shard, _ in _checks(verify(damaged)) if shard == TRAIN0}
    assert {"size", "sha256", "tar", "count", "keys"} <= checks
    assert _repair(damaged, sample_data).ok


def test_deleted_shard(damaged, sample_data):
    (damaged / TRAIN1).unlink()
    assert _checks(verify(damaged)) == {("missing", TRAIN1, None)}
    assert _repair(damaged, sample_data).ok


def test_unknown_extra_tar(damaged, sample_data):
    shutil.copy(damaged / TRAIN0, damaged / "train" / "train-999999.tar")
    assert _checks(verify(damaged)) == {("listing", "train/train-999999.tar", None)}
    summary = _repair(damaged, sample_data)
    assert summary.quarantined == ["train/train-999999.tar"] and summary.ok
    assert (damaged / ".quarantine" / "train" / "train-999999.tar").exists()


def test_sample_missing_a_member(damaged, sample_data):
    members = _members(damaged / TRAIN0)
    dropped = next(n for n, _ in members if n.endswith(".trimap.png"))
    _rewrite(damaged, TRAIN0, [(n, d) for n, d in members if n != dropped])
    report = verify(damaged)
    key = dropped.split(".")[0]
    # the sample is shorter than recorded, so its span differs too (said once for the shard)
    assert _checks(report) == {("members", TRAIN0, key), ("offsets", TRAIN0, key)}
    assert any("missing trimap.png" in p.detail for p in report.problems if p.check == "members")
    summary = _repair(damaged, sample_data)
    assert summary.ok and summary.index_corrected == [TRAIN0]


def test_a_sample_missing_a_member_is_still_deep_checked(damaged):
    """Deep checks follow the schema member by member: a missing trimap does not switch off the
    composite check of the same sample (it once did, when a member was absent from a list)."""
    members = _members(damaged / TRAIN0)
    key = members[0][0].split(".")[0]
    kept = []
    for name, data in members:
        if name == f"{key}.trimap.png":
            continue
        if name == f"{key}.merged.png":
            img = decode_color(data)
            img[0, 0] ^= 1  # one value off: still a valid PNG of the right size
            data = encode_png(img)
        kept.append((name, data))
    _rewrite(damaged, TRAIN0, kept)
    deep = verify(damaged, deep=True)
    checks = _checks(deep)
    assert {("members", TRAIN0, key), ("composite", TRAIN0, key)} <= checks
    assert ("member_sha256", TRAIN0, key) in checks  # the changed merged.png


def test_key_duplicated_across_shards(damaged, sample_data):
    first = _members(damaged / TRAIN0)
    key = first[0][0].split(".")[0]
    copied = [(n, d) for n, d in first if n.startswith(key + ".")]
    _rewrite(damaged, TRAIN1, _members(damaged / TRAIN1) + copied)
    report = verify(damaged)
    assert ("keys", TRAIN1, key) in _checks(report)
    dup = [p for p in report.problems if p.check == "keys" and "also in" in p.detail]
    assert dup and dup[0].detail == f"also in {TRAIN0}"
    assert _repair(damaged, sample_data).ok


def test_corrupt_png_in_a_valid_tar(damaged, built, sample_data):
    members = _members(damaged / TRAIN0)
    name = next(n for n, _ in members if n.endswith(".merged.png"))
    broken = [(n, d[:40] + b"\0" * (len(d) - 40) if n == name else d) for n, d in members]
    _rewrite(damaged, TRAIN0, broken)
    assert verify(damaged).ok  # the structure and the (updated) checksums hold
    deep = verify(damaged, deep=True)
    key = name.split(".")[0]
    assert {("member_sha256", TRAIN0, key), ("decode", TRAIN0, key)} <= _checks(deep)
    detail = next(p.detail for p in deep.problems if p.check == "decode")
    assert detail.startswith("merged.png")
    summary = _repair(damaged, sample_data, deep=True)
    assert summary.ok and summary.rebuilt == [TRAIN0] and summary.index_corrected == [TRAIN0]
    assert sha256_file(damaged / TRAIN0) == sha256_file(built / TRAIN0)


def test_wrong_composite_and_trimap_values(damaged):
    members = _members(damaged / TRAIN0)
    key = members[0][0].split(".")[0]
    fixed = []
    for n, d in members:
        if n == f"{key}.merged.png":
            img = decode_color(d)
            img[0, 0] ^= 1
            d = encode_png(img)
        elif n == f"{key}.trimap.png":
            tri = decode_grey(d)
            tri[0, 0] = 7
            d = encode_png(tri)
        fixed.append((n, d))
    _rewrite(damaged, TRAIN0, fixed)
    deep = verify(damaged, deep=True)
    assert {("composite", TRAIN0, key), ("trimap", TRAIN0, key)} <= _checks(deep)


def test_foreign_tar_is_never_extracted(damaged):
    target = (damaged / TRAIN0).parent.parent.parent / "x"
    _rewrite(damaged, TRAIN0, [("../../x", b"evil"), ("a.json", b"{}")])
    cwd = os.getcwd()
    os.chdir(damaged / "train")
    try:
        for deep in (False, True):
            report = verify(damaged, deep=deep)
            assert any(p.check == "members" and "'../../x'" in p.detail for p in report.problems)
    finally:
        os.chdir(cwd)
    assert not target.exists() and not (damaged.parent / "x").exists()


def test_index_damage(damaged):
    (damaged / "index.json").write_text("{not json")
    report = verify(damaged)
    assert [p.check for p in report.problems] == ["index"]
    assert "index.json is not valid JSON" in report.problems[0].detail
    (damaged / "index.json").unlink()  # nothing to check: an error before any shard is read
    with pytest.raises(NotFound, match="index.json is missing"):
        verify(damaged)


def test_samples_parquet_damage(damaged):
    (damaged / "samples.parquet").write_bytes(b"garbage")
    report = verify(damaged)
    assert "samples" in report.checks


def test_sample_offsets_are_checked_and_older_sets_without_them_still_verify(damaged):
    """samples.parquet records where each sample starts in its shard and how long it is (what
    a resumed reader seeks to); verify holds the shards to it."""
    table = pq.read_table(damaged / "samples.parquet")
    rows = table.to_pylist()
    first = next(r for r in rows if r["shard"] == TRAIN0 and r["position"] == 1)
    with open(damaged / TRAIN0, "rb") as f:  # the recorded span is a tar of just that sample
        f.seek(first["offset"])
        span = f.read(first["length"])
    with tarfile.open(fileobj=io.BytesIO(span + b"\0" * 1024)) as tar:
        assert sorted(m.name for m in tar) == sorted(
            f"{first['key']}.{m}" for m in first["members"]
        )
    first["offset"] += 512
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), damaged / "samples.parquet")
    report = verify(damaged)
    assert _checks(report) == {("offsets", TRAIN0, first["key"])}
    assert "samples.parquet records" in report.problems[0].detail
    older = table.drop_columns(["offset", "length"])  # a set built before the columns existed
    pq.write_table(older, damaged / "samples.parquet")
    assert verify(damaged).ok


def test_keys_out_of_their_recorded_order_are_named(damaged):
    """The shard holds exactly its recorded samples, but two have changed places: what a
    resumed reader, which seeks by position, would get wrong."""
    members = _members(damaged / TRAIN0)
    keys = list(dict.fromkeys(name.split(".", 1)[0] for name, _ in members))
    swapped = [keys[1], keys[0], *keys[2:]]
    _rewrite(damaged, TRAIN0, [m for k in swapped for m in members if m[0].startswith(k + ".")])
    table = pq.read_table(damaged / "samples.parquet").drop_columns(["offset", "length"])
    pq.write_table(table, damaged / "samples.parquet")  # so that only the order is wrong
    report = verify(damaged)
    assert _checks(report) == {("order", TRAIN0, keys[1])}
    assert f"is sample 0 of the shard, where samples.parquet records {keys[0]}" in (
        report.problems[0].detail
    )


def test_repair_refuses_other_inputs(damaged, sample_data, tmp_path):
    (damaged / TRAIN0).unlink()
    other = tmp_path / "bgs"
    shutil.copytree(sample_data.bg_dir, other)
    (other / sorted(os.listdir(other))[0]).unlink()
    with pytest.raises(ValueError, match="do not give the plan this set was built from"):
        repair(damaged, sample_data.data_dir, other, lambda: verify(damaged),
               lambda fn, items: ((i, fn(i), None) for i in items))  # fmt: skip


def test_info_reads_only_the_index(built, damaged):
    info = describe(built)
    index = read_index(built)
    assert info["total"]["samples"] == index.samples()
    assert info["splits"]["train"]["shards"] == len(index.split("train"))
    assert info["split_rule"]["rule"] == "seeded"
    for tar in damaged.rglob("*.tar"):
        tar.unlink()  # info never opens a shard
    assert describe(damaged)["total"] == info["total"]


def test_cli_verify_info_repair(damaged, sample_data, tmp_path):
    report_path = tmp_path / "report.json"
    ok = runner.invoke(app, ["shards", "verify", str(damaged), "--workers", "1",
                             "--report", str(report_path)])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert json.loads(report_path.read_text())["ok"] is True
    (damaged / TRAIN1).unlink()
    bad = runner.invoke(app, ["shards", "verify", str(damaged), "--workers", "1",
                              "--report", str(report_path)])  # fmt: skip
    assert bad.exit_code == 1
    assert f"[missing] {TRAIN1}: listed in index.json but not in the set" in bad.output
    body = json.loads(report_path.read_text())
    assert body["ok"] is False and body["bad_shards"] == [TRAIN1]
    info = runner.invoke(app, ["shards", "info", str(damaged), "--json"])
    assert info.exit_code == 0 and json.loads(info.output)["splits"]["train"]["shards"] >= 2
    fixed = runner.invoke(app, ["shards", "repair", str(damaged), "--data-dir",
                                str(sample_data.data_dir), "--bg-dir", str(sample_data.bg_dir),
                                "--workers", "1"])  # fmt: skip
    assert fixed.exit_code == 0, fixed.output
    assert f"rebuilt {TRAIN1}" in fixed.output
    missing = runner.invoke(app, ["shards", "info", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "index.json is missing" in missing.output
    missing = runner.invoke(app, ["shards", "verify", str(tmp_path / "nope"), "--workers", "1"])
    assert missing.exit_code == 2 and "index.json is missing" in missing.output
