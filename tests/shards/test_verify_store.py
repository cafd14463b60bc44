"""shards verify / info on a store: the same results as on a folder, damage named, a store that
fails told apart from a corrupt shard, and nothing to check an error (exit 2) naming the URL."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from benchmarks.s3_server import KEY_ID, SECRET
from indexnet_cli import app
from shards import store
from shards.info import describe
from shards.verify import verify

runner = CliRunner()
URL = "s3://test/set"
TRAIN0 = "train/train-000000.tar"
TRAIN1 = "train/train-000001.tar"
ONE_TRY = "config_kwargs.retries.max_attempts=1"  # a store that went away fails at once


def _upload(root: Path, url: str = URL) -> None:
    for rel in store.walk_files(root):
        store.upload(root / rel, store.join(url, rel))


def _no_credentials_but_options(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Take the key pair out of the environment and give it as storage options instead: a run
    that still reads the store proves the options reached whatever read it."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    return ["--storage-option", f"key={KEY_ID}", "--storage-option", f"secret={SECRET}"]


def test_verify_and_info_on_a_store_equal_a_folder(shard_set, s3):
    _upload(shard_set)
    s3.requests(reset=True)
    remote = verify(URL)
    local = verify(shard_set)
    assert remote.ok and local.ok, remote.problems
    assert remote.root == URL
    assert (remote.shards, remote.samples, remote.bytes) == (
        local.shards, local.samples, local.bytes)  # fmt: skip
    shards = [r for r in s3.requests() if r["path"].endswith(".tar")]
    gets = Counter(r["path"] for r in shards if r["method"] == "GET")
    assert gets and set(gets.values()) == {1}, gets  # one sequential ranged GET per shard
    assert len(gets) == remote.shards
    assert describe(URL) == {**describe(shard_set), "root": URL}


def test_damage_on_a_store_is_named_by_shard_and_check(shard_set, s3, monkeypatch, tmp_path):
    _upload(shard_set)
    data = bytearray(store.read_bytes(store.join(URL, TRAIN0)))
    data[512 + 100] ^= 0xFF  # inside the first sample's first member
    store.write_bytes(store.join(URL, TRAIN0), bytes(data))
    store.remove(store.join(URL, TRAIN1))
    options = _no_credentials_but_options(monkeypatch)
    report_path = tmp_path / "report.json"
    s3.requests(reset=True)
    result = runner.invoke(app, ["shards", "verify", URL, "--workers", "1", *options,
                                 "--report", str(report_path)])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert f"[sha256] {TRAIN0}: sha256" in result.output
    assert f"[missing] {TRAIN1}: listed in index.json but not in the set" in result.output
    body = json.loads(report_path.read_text())
    assert body["root"] == URL and body["bad_shards"] == [TRAIN0, TRAIN1]
    assert {(p["check"], p["shard"]) for p in body["problems"]} == {
        ("sha256", TRAIN0), ("missing", TRAIN1)}  # fmt: skip
    on_worker = Counter((r["method"], r["path"]) for r in s3.requests() if ".tar" in r["path"])
    shards = {path for _, path in on_worker}
    assert len(shards) == 5 and max(on_worker.values()) == 1  # at most a HEAD and a GET each
    for text in (result.output, report_path.read_text()):
        assert SECRET not in text and KEY_ID not in text


def test_nothing_to_check_is_an_error_naming_the_url_before_any_shard(shard_set, s3, monkeypatch):
    _upload(shard_set)
    options = _no_credentials_but_options(monkeypatch)
    s3.requests(reset=True)
    for command in ("verify", "info"):
        missing = runner.invoke(app, ["shards", command, "s3://no-such-bucket/set", *options])
        assert missing.exit_code == 2, missing.output
        assert "s3://no-such-bucket/set/index.json: no such bucket" in missing.output
        empty = runner.invoke(app, ["shards", command, "s3://test/elsewhere", *options])
        assert empty.exit_code == 2, empty.output
        assert "s3://test/elsewhere/index.json is missing" in empty.output
        s3.fault("deny", "/test/set/index.json", times=2)
        denied = runner.invoke(app, ["shards", command, URL, *options])
        assert denied.exit_code == 2, denied.output
        assert f"{URL}/index.json: access denied" in denied.output
        for result in (missing, empty, denied):
            assert SECRET not in result.output and KEY_ID not in result.output
    assert not [r for r in s3.requests() if r["path"].endswith(".tar")]  # no shard was read


def test_a_store_that_goes_away_mid_verify_is_not_a_corrupt_shard(shard_set, s3):
    _upload(shard_set)
    s3.fault("die", f"GET /test/set/{TRAIN1}")  # the server exits as this shard is asked for
    result = runner.invoke(app, ["shards", "verify", URL, "--workers", "1",
                                 "--storage-option", ONE_TRY])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert f"[unreadable] {TRAIN1}: {URL}/{TRAIN1}: the store failed" in result.output
    assert "the store failed while" in result.output  # the summary says so too
    assert "[sha256]" not in result.output and "[tar]" not in result.output
