"""``shards.store`` against a real S3-compatible server on loopback and local paths alike."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from shards import store
from shards.store import StoreError, StoreUnavailable


@pytest.mark.parametrize("remote", [False, True], ids=["local", "s3"])
def test_the_same_calls_work_on_a_folder_and_a_bucket(remote, request, tmp_path: Path):
    root = "s3://test/set" if remote else str(tmp_path / "set")
    if remote:
        request.getfixturevalue("s3")
    store.make_dirs(root)
    data = bytes(range(256)) * 1000
    store.write_bytes(store.join(root, "a", "x.bin"), data)
    local = tmp_path / "upload.bin"
    local.write_bytes(data[::-1])
    store.upload(local, store.join(root, "b.bin"))
    assert store.read_bytes(store.join(root, "a/x.bin")) == data
    assert store.read_range(store.join(root, "a/x.bin"), 10, 20) == data[10:20]
    assert store.size(store.join(root, "b.bin")) == len(data)
    assert store.size(store.join(root, "nothing.bin")) is None
    assert store.listdir(root) == [("a", True), ("b.bin", False)]
    assert list(store.walk_files(root)) == ["a/x.bin", "b.bin"]
    assert store.hash_file(store.join(root, "b.bin")) == (
        len(data), hashlib.sha256(data[::-1]).hexdigest())  # fmt: skip
    store.move(store.join(root, "b.bin"), store.join(root, "c", "b.bin"))
    assert store.size(store.join(root, "b.bin")) is None
    assert store.read_bytes(store.join(root, "c/b.bin")) == data[::-1]
    store.remove(store.join(root, "a"), recursive=True)
    assert store.listdir(root) == [("c", True)]


def test_a_missing_object_a_missing_bucket_and_a_403_are_clear_errors(s3):
    with pytest.raises(StoreError, match=r"s3://test/nothing: not found"):
        store.read_bytes("s3://test/nothing")
    with pytest.raises(StoreError, match=r"s3://no-such-bucket/x: no such bucket"):
        store.read_bytes("s3://no-such-bucket/x")
    with pytest.raises(StoreError, match=r"s3://no-such-bucket: no such bucket"):
        store.make_dirs("s3://no-such-bucket/out")
    store.write_bytes("s3://test/x", b"x")
    s3.fault("deny", "GET /test/x")
    with pytest.raises(StoreError, match=r"s3://test/x: access denied") as err:
        store.read_bytes("s3://test/x")
    assert "testing-secret-key" not in str(err.value)


def test_throttling_is_retried_and_a_store_that_went_away_is_transient(s3):
    store.write_bytes("s3://test/x", b"hello")
    s3.fault("slowdown", "GET /test/x", times=2)
    assert store.read_bytes("s3://test/x") == b"hello"
    assert sum(r["status"] == 503 for r in s3.requests()) == 2
    s3.stop()
    with pytest.raises(StoreUnavailable, match="s3://test/x: the store failed"):
        store.read_bytes("s3://test/x")


def test_options_parse_and_a_missing_client_names_its_extra():
    assert store.parse_options(["anon=true", "client_kwargs.region_name=eu-west-1", "n=3"]) == {
        "anon": True, "client_kwargs": {"region_name": "eu-west-1"}, "n": 3}  # fmt: skip
    with pytest.raises(StoreError, match="expected KEY=VALUE"):
        store.parse_options(["anon"])
    with pytest.raises(StoreError, match=r"indexnet-matting\[azure\]"):
        store.filesystem("az://container/set")
    with pytest.raises(StoreError, match="read-only"):
        store.write_bytes("http://127.0.0.1:1/x", b"")
    assert store.redact("https://user:secret@host/set") == "https://host/set"


def test_no_credentials_and_an_option_the_client_refuses_are_the_users_to_fix(s3, monkeypatch):
    import fsspec

    fsspec.filesystem("s3").clear_instance_cache()
    with pytest.raises(StoreError, match="refused its options"):
        store.read_bytes("s3://test/x", {"no_such_option": 1})
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    fsspec.filesystem("s3").clear_instance_cache()
    with pytest.raises(StoreError, match="found no credentials"):
        store.read_bytes("s3://test/x")
