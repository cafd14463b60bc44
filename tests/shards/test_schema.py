"""shards.schema: the one table of members, and what the build writes agrees with it."""

from __future__ import annotations

import tarfile

import pytest

from shards.index import SAMPLE_SCHEMA, read_samples
from shards.schema import (
    MEMBERS,
    SCORED_MEMBERS,
    SPLITS,
    TRAIN_MEMBERS,
    hash_columns,
    member,
    member_file,
    members_of,
    name_of,
)


def test_file_names_come_from_the_table():
    assert member_file("merged") == "merged.png" and member_file("json") == "json"
    assert member_file("fg", "JPG") == "fg.jpg" and member_file("bg", "png") == "bg.png"
    with pytest.raises(ValueError, match="member fg needs its source's extension"):
        member_file("fg")
    with pytest.raises(KeyError, match="no shard member 'fgr'; members: merged, alpha, fg"):
        member("fgr")
    assert [name_of(member_file(m.name, "jpg")) for m in MEMBERS] == [m.name for m in MEMBERS]


def test_what_training_and_scoring_decode():
    assert set(TRAIN_MEMBERS) == {"fg", "bg", "alpha", "json"}  # merged and trimap are remade
    assert set(SCORED_MEMBERS) == {"merged", "trimap", "alpha"}
    assert member("trimap").values == (0, 128, 255) and not member("bg").sized


def test_samples_parquet_has_a_size_and_sha256_column_per_hashed_member():
    columns = set(SAMPLE_SCHEMA.names)
    assert set(hash_columns()) <= columns
    assert {f"{m.name}_sha256" for m in MEMBERS if m.hashed} <= columns


def test_every_built_sample_holds_exactly_the_schema_members(shard_set):
    rows = read_samples(shard_set).to_pylist()
    for split in SPLITS:
        names = sorted(m.name for m in members_of(split))
        split_rows = [r for r in rows if r["split"] == split]
        assert split_rows and all(sorted(map(name_of, r["members"])) == names for r in split_rows)
    with tarfile.open(shard_set / "validation" / "validation-000000.tar") as tar:
        files = {m.name.split(".", 1)[1] for m in tar.getmembers()}
    assert {name_of(f) for f in files} == {m.name for m in members_of("validation")}
