"""training.data.stream: the exact order read from every kind of source, resumed, skipped,
refused."""

from __future__ import annotations

import re
import shutil
import threading
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from benchmarks.http_server import serve_directory
from configs import load_config
from configs.schema import all_keys
from shards.reader import ShardError, resolve_shards, shard_samples, tar_entries
from training.data.batching import batches, device_inputs, make_loader
from training.data.stream import MattingStream, check_order
from training.models.indexnet.input import make_input


def test_folder_source_uses_the_index(shard_set):
    shards = resolve_shards(str(shard_set))
    assert [u.rsplit("/", 1)[-1] for u in shards.urls] == [f"train-{i:06d}.tar" for i in range(4)]
    assert shards.samples == (8, 8, 8, 6) and shards.total == 30
    val = resolve_shards(str(shard_set), "validation")
    assert val.samples == (4,)
    assert resolve_shards(str(shard_set / "validation")).urls == val.urls  # a split's folder
    assert resolve_shards(str(shard_set / "train") + "/", "validation").samples == (8, 8, 8, 6)


def test_brace_pattern_and_pipe_sources(shard_set):
    pattern = str(shard_set / "train" / "train-{000001..000003}.tar")
    shards = resolve_shards(pattern)
    assert shards.samples == (8, 8, 6)
    pipe = "pipe:cat " + str(shard_set / "train" / "train-{000000..000001}.tar")
    assert resolve_shards(pipe, index=str(shard_set)).samples == (8, 8)
    with pytest.raises(ValueError, match="a pipe: command needs index="):
        resolve_shards(pipe)


def test_bad_sources_are_named(shard_set, tmp_path):
    with pytest.raises(ValueError, match="index.json is missing"):
        resolve_shards(str(tmp_path))
    with pytest.raises(ValueError, match="shard train-000009.tar is not in"):
        resolve_shards(str(shard_set / "train" / "train-000009.tar"))
    with pytest.raises(ValueError, match="no 'test' shards"):
        resolve_shards(str(shard_set), "test")
    with pytest.raises(ValueError, match="cannot read http://127.0.0.1:9/index.json"):
        resolve_shards("http://127.0.0.1:9/")


def _train_cfg(**values):
    """The config of a tiny run: ``values`` by bare key, of the train, augment or loader section."""
    base = {"input_size": 32, "crop_sizes": [32], "small_image_min_side": 64, "batch_size": 2}
    known = all_keys()
    sections = {k: next(s for s in ("train", "augment", "loader") if f"{s}.{k}" in known)
                for k in {**base, **values}}  # fmt: skip
    return load_config(overrides=[f"{sections[k]}.{k}={v}" for k, v in {**base, **values}.items()])


def _run(shards, world=1, workers=0, epoch=0, start=0, batch=2, **kwargs) -> list[tuple]:
    """Every global batch of an epoch from ``start`` on: (keys, digests), ranks concatenated."""
    cfg = _train_cfg(
        batch_size=batch, shuffle_window=kwargs.pop("window", 4), **kwargs.pop("cfg", {})
    )
    per_rank = []
    for rank in range(world):
        stream = MattingStream(shards, cfg, rank, world, epoch, start, digests=True, **kwargs)
        got = batches(iter(make_loader(stream, workers)), batch)
        per_rank.append([(b.keys, b.digests) for b in got])
    return [
        (sum((r[step][0] for r in per_rank), []), sum((r[step][1] for r in per_rank), []))
        for step in range(len(per_rank[0]))
    ]


def test_the_same_global_batches_on_any_number_of_ranks_and_workers(shard_set):
    shards = resolve_shards(str(shard_set))
    # 30 samples, global batch 4: 7 steps, 2 samples dropped
    reference = _run(shards, world=1, workers=0, batch=4)
    assert len(reference) == 7 and all(len(keys) == 4 for keys, _ in reference)
    assert _run(shards, world=1, workers=2, batch=4) == reference
    assert _run(shards, world=1, workers=4, batch=4) == reference
    assert _run(shards, world=2, workers=1, batch=2) == reference
    eight = _run(shards, world=1, workers=0, batch=8)  # global batch 8: 3 steps
    assert len(eight) == 3 and eight != reference[:3]
    assert _run(shards, world=4, workers=2, batch=2) == eight
    assert _run(shards, world=2, workers=4, batch=4) == eight


def test_an_epoch_covers_every_sample_once_and_epochs_differ(shard_set):
    shards = resolve_shards(str(shard_set))
    every = {key for recorded in shard_samples(shards) for key in recorded.keys}
    orders = []
    for epoch in range(2):
        keys = [key for got, _ in _run(shards, epoch=epoch, batch=4) for key in got]
        assert len(keys) == len(set(keys)) == 28 and set(keys) <= every
        orders.append(keys)
    assert orders[0] != orders[1]
    digests = [_run(shards, epoch=e, batch=4)[0][1] for e in range(2)]
    assert digests[0] != digests[1]  # augmentation is drawn per epoch too


def test_a_resumed_stream_continues_the_order_without_decoding_what_was_consumed(
    shard_set, monkeypatch
):
    shards = resolve_shards(str(shard_set))
    reference = _run(shards, batch=4)
    decoded = []
    import training.data.stream as data

    real = data.decode_sample
    monkeypatch.setattr(
        data, "decode_sample", lambda raw, *a: decoded.append(raw.key) or real(raw, *a)
    )
    for start in (1, 5, 6):
        decoded.clear()
        assert _run(shards, start=start, batch=4) == reference[start:]
        assert sorted(decoded) == sorted(k for keys, _ in reference[start:] for k in keys)


def test_brace_pattern_pipe_and_http_sources_give_the_same_batches(shard_set):
    reference = _run(resolve_shards(str(shard_set)), batch=4, workers=2)
    pattern = str(shard_set / "train" / "train-{000000..000003}.tar")
    assert _run(resolve_shards(pattern), batch=4, workers=2) == reference
    pipe = resolve_shards("pipe:cat " + pattern, index=str(shard_set))
    assert _run(pipe, batch=4, workers=2) == reference  # read and dropped up to each run
    for ranges in (True, False):  # a server that ignores Range sends whole files
        with serve_directory(shard_set.parent, ranges=ranges) as base:
            http = resolve_shards(base + shard_set.name + "/")
            assert http.urls[0].startswith("http://127.0.0.1:")
            assert _run(http, batch=4, workers=2) == reference
            assert _run(http, batch=4, start=4) == reference[4:]


def test_each_sample_of_an_epoch_is_fetched_once(shard_set):
    """Over HTTP with Range requests: the bytes served of each shard are disjoint ranges that
    add up to the samples still to be given, at the start and after a resume (which reads no
    byte of a sample already given)."""
    served = []
    with serve_directory(shard_set.parent, served=served) as base:
        shards = resolve_shards(base + shard_set.name + "/")
        recorded = shard_samples(shards)
        order = MattingStream(shards, _train_cfg(batch_size=4, shuffle_window=4)).order
        for start, resume in ((0, 0), (5, 5)):
            served.clear()
            _run(shards, batch=4, start=start, workers=2)
            tars = [(path, first, size) for path, first, size in served if path.endswith(".tar")]
            by_shard = {}
            for path, first, size in tars:
                by_shard.setdefault(path.rsplit("/", 1)[-1], []).append((first, first + size))
            for spans in by_shard.values():
                spans.sort()
                assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
            wanted = {
                ref
                for stream in order.streams
                for ref in (stream.samples[i] for i in stream.remaining(resume))
            }
            assert sum(size for _, _, size in tars) == sum(
                recorded[s].lengths[p] for s, p in wanted
            )


def test_a_set_without_recorded_offsets_reads_from_shard_starts(shard_set, tmp_path):
    """Sets built before samples.parquet had offset/length columns: the same order, each run
    read from its shard's start (slower to resume, never different)."""
    root = shutil.copytree(shard_set, tmp_path / "old")
    table = pq.read_table(root / "samples.parquet")
    pq.write_table(table.drop_columns(["offset", "length"]), root / "samples.parquet")
    old = resolve_shards(str(root))
    assert shard_samples(old)[0].offsets is None
    reference = _run(resolve_shards(str(shard_set)), batch=4)
    assert _run(old, batch=4) == reference
    assert _run(old, batch=4, start=3) == reference[3:]


def test_bad_run_shapes_are_refused_before_training(shard_set):
    shards = resolve_shards(str(shard_set))
    cfg = _train_cfg(batch_size=16)
    with pytest.raises(ValueError, match="30 train samples cannot fill one global batch of 32"):
        check_order(shards, cfg, world_size=2, loader_workers=1)
    with pytest.raises(ValueError, match=r"--loader-workers 3 must divide .*use one of 1, 2, 4"):
        check_order(shards, _train_cfg(batch_size=4), world_size=1, loader_workers=3)
    assert check_order(shards, _train_cfg(batch_size=4), 1, 2).steps == 7


def test_a_samples_table_that_disagrees_with_the_index_is_refused(shard_set, tmp_path):
    root = shutil.copytree(shard_set, tmp_path / "set")
    table = pq.read_table(root / "samples.parquet")
    pq.write_table(table.slice(1), root / "samples.parquet")  # drop one sample's row
    with pytest.raises(ValueError, match=r"records 7 sample\(s\) of shard train-000000.tar"):
        shard_samples(resolve_shards(str(root)))


def _corrupt(shard_set: Path, tmp_path: Path) -> Path:
    root = shutil.copytree(shard_set, tmp_path / "set")
    path = root / "train" / "train-000000.tar"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated mid-member
    return root


def test_a_corrupt_shard_stops_naming_it(shard_set, tmp_path):
    shards = resolve_shards(str(_corrupt(shard_set, tmp_path)))
    with pytest.raises(ShardError, match=r"train-000000.tar.*from key o_\w+-\d+.*corrupt=skip"):
        _run(shards, batch=4)


def test_the_skip_policy_replaces_and_counts_and_keeps_the_step_count(shard_set, tmp_path):
    shards = resolve_shards(str(_corrupt(shard_set, tmp_path)))
    skipped = torch.multiprocessing.get_context("fork").Value("i", 0)
    cfg = _train_cfg(batch_size=4)
    stream = MattingStream(shards, cfg, corrupt="skip", skipped=skipped, digests=True)
    got = list(batches(iter(make_loader(stream, 2)), 4))
    assert len(got) == 7  # as many steps as an undamaged set: ranks stay in lockstep
    reasons = [reason for b in got for reason in b.skipped if reason]
    assert 0 < len(reasons) == skipped.value < 8
    cpu = torch.device("cpu")
    assert all(
        torch.isfinite(device_inputs(b.tensors, cpu, make_input)["image"]).all() for b in got
    )
    reference = _run(resolve_shards(str(shard_set)), batch=4)
    fine = [
        (key, digest)
        for b in got
        for key, digest, reason in zip(b.keys, b.digests, b.skipped, strict=True)
        if not reason
    ]
    assert set(fine) <= {pair for keys, ds in reference for pair in zip(keys, ds, strict=True)}
    with pytest.raises(ValueError, match="corrupt policy must be one of"):
        MattingStream(shards, cfg, corrupt="ignore")


def test_loader_items_are_uint8_crops_that_the_step_composes(shard_set):
    shards = resolve_shards(str(shard_set))
    stream = MattingStream(shards, _train_cfg(batch_size=2))
    batch = next(batches(iter(make_loader(stream, 2)), 2))
    assert list(batch.tensors) == ["crops"]
    assert batch.tensors["crops"].shape == (2, 32, 32, 8)
    assert batch.tensors["crops"].dtype == torch.uint8
    inputs = device_inputs(batch.tensors, torch.device("cpu"), make_input, channels_last=True)
    assert inputs["image"].shape == (2, 4, 32, 32)
    assert inputs["image"].is_contiguous(memory_format=torch.channels_last)
    assert inputs["alpha"].shape == inputs["unknown"].shape == (2, 1, 32, 32)
    assert Counter(len(k) > 0 for k in batch.keys) == {True: 2}


def test_the_decode_cache_and_the_float_baseline_change_no_sample(shard_set):
    """Decoding a foreground once per visit (any bound, any loader shape) and shipping uint8
    crops give exactly the samples of a fresh decode each time composed in the loader."""
    shards = resolve_shards(str(shard_set))
    reference = _run(shards, batch=4, cache_bytes=0)
    counts = torch.multiprocessing.get_context("fork").Array("q", 2)
    assert _run(shards, batch=4, workers=2, cache_counts=counts) == reference
    hits, lookups = counts[:]
    assert lookups == 2 * 28  # fg and alpha of the 7 steps x 4 samples
    assert 28 <= hits < lookups  # 5 foregrounds, each decoded at least once per process
    assert _run(shards, batch=4, cache_bytes=300_000) == reference  # room for a few only
    cfg = _train_cfg(batch_size=4)
    packed = MattingStream(shards, cfg)
    floats = MattingStream(shards, cfg, make_input=make_input, ship="float", cache_bytes=0)
    cpu = torch.device("cpu")
    for a, b in zip(batches(iter(packed), 4), batches(iter(floats), 4), strict=True):
        composed, made = (
            device_inputs(a.tensors, cpu, make_input),
            device_inputs(b.tensors, cpu, make_input),
        )
        assert a.keys == b.keys and composed.keys() == made.keys()
        assert all(torch.equal(composed[name], made[name]) for name in made)
    with pytest.raises(ValueError, match="ship must be uint8 or float"):
        MattingStream(shards, cfg, ship="half")


def test_batches_stack_into_pinned_memory_when_asked(shard_set):
    shards = resolve_shards(str(shard_set))
    stream = MattingStream(shards, _train_cfg(batch_size=2))
    batch = next(batches(iter(stream), 2))
    assert not batch.tensors["crops"].is_pinned()
    if torch.cuda.is_available():  # pinning needs a CUDA runtime
        assert next(batches(iter(stream), 2, pin=True)).tensors["crops"].is_pinned()


def _fault_once(kind: str):
    """A server fault for the first shard request only."""
    left, lock = [1], threading.Lock()

    def fault(path: str) -> str | None:
        with lock:
            if path.endswith(".tar") and left[0]:
                left[0] -= 1
                return kind
        return None

    return fault


def test_a_connection_that_fails_mid_shard_is_read_again_and_changes_nothing(shard_set, capfd):
    reference = _run(resolve_shards(str(shard_set)), batch=4)
    for kind in ("drop", "error"):
        with serve_directory(shard_set.parent, fault=_fault_once(kind)) as base:
            shards = resolve_shards(base + shard_set.name + "/")
            got = _run(shards, batch=4, workers=2, cfg={"read_backoff_s": 0.01})
        assert got == reference, kind
        err = capfd.readouterr().err
        assert "reading it again from key o_" in err and "(retry 1 of 4)" in err, err


def test_a_server_that_keeps_failing_stops_the_run_naming_the_url_whatever_the_policy(shard_set):
    for kind in ("drop", "error"):

        def fault(path: str, kind: str = kind) -> str | None:
            return kind if path.endswith(".tar") else None

        with serve_directory(shard_set.parent, fault=fault) as base:
            url = base + shard_set.name + "/"
            shards = resolve_shards(url)
            for corrupt in ("stop", "skip"):  # not the data's fault: skip does not swallow it
                with pytest.raises(
                    ShardError,
                    match=rf"{re.escape(url)}train/train-0000\d\d\.tar.*failed 3 time\(s\) in "
                    r"a row.*continue with --resume",
                ):
                    _run(
                        shards,
                        batch=4,
                        corrupt=corrupt,
                        cfg={"read_retries": 2, "read_backoff_s": 0},
                    )


def _garble(root: Path, member: str) -> str:
    """Zero the first bytes of one sample's ``member`` in train-000000.tar (the tar stays
    whole, the image does not decode); returns the sample's key."""
    path = root / "train" / "train-000000.tar"
    with open(path, "rb") as stream:
        entry = [e for e in tar_entries(stream) if e.file.startswith(member + ".")][3]
    data = bytearray(path.read_bytes())
    data[entry.offset + 512 : entry.offset + 512 + 64] = bytes(64)  # after its 512-byte header
    path.write_bytes(bytes(data))
    return entry.key


def test_an_undecodable_member_is_skipped_under_skip_and_named_under_stop(shard_set, tmp_path):
    reference = _run(resolve_shards(str(shard_set)), batch=4)
    root = shutil.copytree(shard_set, tmp_path / "set")
    key = _garble(root, "fg")
    shards = resolve_shards(str(root))
    with pytest.raises(ShardError, match=rf"corrupt sample .*train-000000.tar key {key}: .*fg"):
        _run(shards, batch=4)
    skipped = torch.multiprocessing.get_context("fork").Value("i", 0)
    got = _run(shards, batch=4, corrupt="skip", skipped=skipped)
    assert skipped.value == 1
    flat = lambda steps: [(k, d) for keys, ds in steps for k, d in zip(keys, ds, strict=True)]  # noqa: E731
    changed = [(a, b) for a, b in zip(flat(got), flat(reference), strict=True) if a != b]
    assert len(changed) == 1 and changed[0][1][0] == key  # only that sample was replaced


def test_under_skip_a_bug_in_our_code_still_stops_the_run(shard_set, monkeypatch):
    import training.data.stream as data

    shards = resolve_shards(str(shard_set))

    def broken(*args, **kwargs):
        raise KeyError("a bug, not the data")

    monkeypatch.setattr(data, "crop_sample", broken)
    with pytest.raises(KeyError, match="a bug"):
        _run(shards, batch=4, corrupt="skip")
    monkeypatch.undo()
    monkeypatch.setattr(data, "apply_fit", lambda *args: broken())
    with pytest.raises(KeyError, match="a bug"):
        _run(shards, batch=4, corrupt="skip")
