"""Training and evaluation data from object storage: a real S3 server on loopback (moto), the
real s3fs client; the same batches as from a local folder, resumes that read only what is left,
the shard cache, clear errors and retried faults."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from configs import load_config
from indexnet_cli import app
from shards import store
from shards.cache import ShardCache
from shards.reader import resolve_shards, shard_samples
from tests.training.data.test_stream import _run, _train_cfg
from tests.training.run.test_trainer import TINY, _batches, _env, _kill_tree
from training.checkpoint import load_checkpoint
from training.data.stream import MattingStream
from training.run.trainer import RunOptions, train

SET = "s3://test/set"


def _tar_gets(s3) -> list[dict]:
    return [r for r in s3.requests() if r["method"] == "GET" and r["path"].endswith(".tar")]


def test_a_bucket_gives_the_local_folders_batches_and_a_resume_reads_only_what_is_left(
    shard_set, s3
):
    store.upload_folder(shard_set, SET)
    reference = _run(resolve_shards(str(shard_set)), batch=4)
    shards = resolve_shards(SET)
    assert resolve_shards(SET + "/validation").samples == (4,)  # a split's URL: that split
    assert _run(shards, batch=4, workers=2) == reference
    recorded = shard_samples(shards)
    order = MattingStream(shards, _train_cfg(batch_size=4, shuffle_window=4)).order
    for start in (0, 5):  # from the start, then resumed mid-epoch
        s3.requests(reset=True)
        assert _run(shards, batch=4, start=start, workers=2) == reference[start:]
        gets = _tar_gets(s3)
        assert all(r["range"] for r in gets)  # ranged GETs only, never a whole shard
        wanted = {ref for s in order.streams for ref in (s.samples[i] for i in s.remaining(start))}
        assert sum(r["sent"] for r in gets) == sum(recorded[s].lengths[p] for s, p in wanted)


def test_throttling_and_a_dropped_connection_are_retried_and_change_nothing(shard_set, s3):
    """The client retries a few; the loader's retries (loader.read_retries) take the rest."""
    store.upload_folder(shard_set, SET)
    reference = _run(resolve_shards(str(shard_set)), batch=4)
    s3.fault("slowdown", ".tar", times=6)  # beyond what the client retries alone
    s3.fault("drop", ".tar", times=2)
    got = _run(resolve_shards(SET), batch=4, cfg={"read_backoff_s": 0.01, "read_retries": 8})
    assert got == reference
    assert [r["status"] for r in _tar_gets(s3)].count(503) == 6


def test_the_cache_serves_later_epochs_a_corrupt_copy_and_a_store_that_is_down(
    shard_set, s3, tmp_path, capfd
):
    store.upload_folder(shard_set, SET)
    local = resolve_shards(str(shard_set))
    cache = ShardCache(str(tmp_path / "cache"))
    shards = resolve_shards(SET, cache=cache)
    layout = shard_samples(shards)  # read once per run, as the trainer does
    assert _run(shards, batch=4, workers=2, layout=layout) == _run(local, batch=4)  # cold
    s3.requests(reset=True)
    warm = _run(shards, batch=4, epoch=1, workers=2, layout=layout)
    assert warm == _run(local, batch=4, epoch=1)
    assert s3.requests() == []  # not one request: the epoch came from the cache

    copy = next((tmp_path / "cache" / "shards").glob("*.tar"))
    data = bytearray(copy.read_bytes())
    data[600] ^= 0xFF
    copy.write_bytes(bytes(data))
    assert _run(shards, batch=4, workers=2, layout=layout) == _run(local, batch=4)
    assert "is not what the index records; downloading it again" in capfd.readouterr().err
    assert len(_tar_gets(s3)) == 1  # that shard again, whole; the others from the cache

    s3.stop()  # the store goes away: a new run reads the index and shards from the cache
    fail_fast = {"config_kwargs": {"retries": {"max_attempts": 1}}}
    offline = resolve_shards(SET, options=fail_fast, cache=cache)
    assert _run(offline, batch=4) == _run(local, batch=4)
    err = capfd.readouterr().err
    assert err.count("working from the cache") == 1, err  # said once


def test_a_missing_bucket_and_a_403_exit_2_naming_the_url_and_no_secret(shard_set, s3, tmp_path):
    store.upload_folder(shard_set, SET)
    runner = CliRunner()
    secret = "S3CR3T-VALUE"
    for shards, fault in (("s3://no-such-bucket/set", None), (SET, "deny")):
        if fault:
            s3.fault(fault, "/test/set/index.json")
        out = tmp_path / "run"
        result = runner.invoke(
            app,
            ["train", "--shards", shards, "--out", str(out), "--storage-option",
             f"client_kwargs.aws_session_token={secret}"],
        )  # fmt: skip
        assert result.exit_code == 2, result.output
        assert shards in result.output and secret not in result.output
        assert not out.exists()  # before any work


def _node(rank: int, port: int, cwd: Path, *args: str) -> subprocess.Popen:
    """One "node" of a 2-node torchrun job (one rank), in a working directory of its own."""
    cwd.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node",
           "1", "--node-rank", str(rank), "--rdzv-backend", "c10d", "--rdzv-id", "store",
           "--rdzv-endpoint", f"127.0.0.1:{port}", "--max-restarts", "0", "-m", "training",
           *args]  # fmt: skip
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=cwd
    )


@pytest.mark.slow  # 2 torchrun jobs of 2 nodes each, and a reference run
def test_two_nodes_without_a_shared_disk_train_from_a_bucket_as_from_a_folder(
    shard_set, s3, tmp_path
):
    """2 gloo ranks, one per "node" (own working directory, own run folder, own cache), read
    s3://: batches.jsonl equals a 1-rank run's from the local folder, across a resume at
    step 5; no storage option's value is written anywhere in the run folder."""
    store.upload_folder(shard_set, SET)
    sets = [*TINY, "runtime.log_batches=true", "validation.enabled=false"]
    one = load_config(overrides=[*sets, "train.batch_size=4"])  # the same global batch of 4
    reference = tmp_path / "reference"
    train(one, RunOptions(str(shard_set), reference, max_steps=9, loader_workers=1))
    secret = "S3CR3T-TOKEN-VALUE"
    nodes = [tmp_path / "node0", tmp_path / "node1"]
    for steps, extra in ((5, []), (9, ["--resume"])):
        port = _free_port()
        args = ["--shards", SET, "--out", "run", "--max-steps", str(steps), "--loader-workers",
                "1", "--cache-dir", "cache", "--storage-option",
                f"client_kwargs.aws_session_token={secret}",
                *[x for s in sets for x in ("--set", s)], *extra]  # fmt: skip
        procs = [_node(rank, port, nodes[rank], *args) for rank in (0, 1)]
        try:
            outs = [p.communicate(timeout=300) for p in procs]
        finally:
            for p in procs:
                _kill_tree(p)
        for p, (out, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, out + err
    assert _batches(nodes[0] / "run") == _batches(reference)
    assert not (nodes[1] / "run" / "checkpoints").exists()  # rank 0 writes the run folder
    assert list((nodes[1] / "cache" / "shards").glob("*.tar"))  # each node its own cache
    for path in (nodes[0] / "run").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    config = json.dumps(load_checkpoint(nodes[0] / "run" / "checkpoints" / "last.pt")["config"])
    assert secret not in config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
