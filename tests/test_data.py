"""training.data (and shards.reader's sources): folder, HTTP, braces, pipe:, lockstep, splits."""

from __future__ import annotations

import shutil
from collections import Counter

import pytest
import torch

from configs import load_config
from shards.reader import ShardError, resolve_shards
from tests.conftest import serve_directory
from training.data import MattingStream, check_shard_count, make_loader, steps_per_epoch


def _train_cfg(**train):
    base = {"input_size": 32, "crop_sizes": [32], "small_image_min_side": 64}
    return load_config(overrides=[f"train.{k}={v}" for k, v in {**base, **train}.items()]).train


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


def test_http_source_streams_a_batch(shard_set):
    with serve_directory(shard_set.parent) as base:
        shards = resolve_shards(base + shard_set.name + "/")
        assert shards.urls[0].startswith("http://127.0.0.1:") and shards.total == 30
        stream = MattingStream(shards, _train_cfg(), shuffle_buffer=2)
        batch = next(iter(make_loader(stream, 3, 0)))
        assert batch["image"].shape == (3, 4, 32, 32)
        pattern = base + shard_set.name + "/train/train-{000000..000001}.tar"
        assert resolve_shards(pattern).samples == (8, 8)


def test_lockstep_and_shard_count_errors():
    assert steps_per_epoch(30, world_size=2, batch_size=4) == 3
    with pytest.raises(ValueError, match="cannot fill one step of 4 rank"):
        steps_per_epoch(10, world_size=4, batch_size=4)
    check_shard_count(4, world_size=2, loader_workers=2)
    with pytest.raises(ValueError, match=r"4 shard\(s\) cannot feed 2 rank\(s\) x 3 loader"):
        check_shard_count(4, world_size=2, loader_workers=3)


def _keys(stream: MattingStream, n: int) -> list[str]:
    """Raw sample keys a stream's worker would read first (shuffle off)."""
    keys = []
    for url in stream._my_shards(stream.epoch, 0, 1):
        keys += [raw.key for raw in stream._raw_samples(url)]
    return keys[:n]


def test_ranks_split_shards_and_epochs_reshuffle(shard_set):
    shards = resolve_shards(str(shard_set))
    cfg = _train_cfg()
    r0 = MattingStream(shards, cfg, rank=0, world_size=2)
    r1 = MattingStream(shards, cfg, rank=1, world_size=2)
    mine0, mine1 = r0._my_shards(0, 0, 1), r1._my_shards(0, 0, 1)
    assert sorted(mine0 + mine1) == sorted(shards.urls) and not set(mine0) & set(mine1)
    orders = {tuple(r0._my_shards(e, 0, 1) + r1._my_shards(e, 0, 1)) for e in range(6)}
    assert len(orders) > 1, "the shard order changes with the epoch"
    assert r0._my_shards(3, 0, 1) == MattingStream(shards, cfg, rank=0, world_size=2)._my_shards(
        3, 0, 1
    ), "the order is a function of the seed and the epoch"
    assert set(_keys(r0, 100)).isdisjoint(_keys(r1, 100))


def test_stream_never_runs_dry(shard_set):
    """More batches than the rank's shards hold: the stream repeats (lockstep never hangs)."""
    shards = resolve_shards(str(shard_set))
    stream = MattingStream(shards, _train_cfg(), rank=1, world_size=2, shuffle_buffer=4)
    loader = iter(make_loader(stream, 4, 0))
    batches = [next(loader) for _ in range(8)]  # 32 samples from a rank holding ~14
    assert all(torch.isfinite(b["image"]).all() for b in batches)


def test_two_loader_workers(shard_set):
    shards = resolve_shards(str(shard_set))
    stream = MattingStream(shards, _train_cfg(), shuffle_buffer=2)
    loader = iter(make_loader(stream, 2, 2))
    shapes = Counter(tuple(next(loader)["alpha"].shape) for _ in range(4))
    assert shapes == {(2, 1, 32, 32): 4}


def _corrupt(shard_set, tmp_path):
    root = shutil.copytree(shard_set, tmp_path / "set")
    path = root / "train" / "train-000000.tar"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated mid-member
    return root


def test_corrupt_shard_stops_with_its_name(shard_set, tmp_path):
    shards = resolve_shards(str(_corrupt(shard_set, tmp_path)))
    stream = MattingStream(shards, _train_cfg(), shuffle_buffer=1)
    with pytest.raises(ShardError, match=r"corrupt shard .*train-000000.tar after key o_\w+-\d+"):
        for url in [u for u in shards.urls if u.endswith("train-000000.tar")]:
            list(stream._raw_samples(url))


def test_corrupt_shard_skip_policy_counts(shard_set, tmp_path):
    shards = resolve_shards(str(_corrupt(shard_set, tmp_path)))
    skipped = torch.multiprocessing.get_context("fork").Value("i", 0)
    stream = MattingStream(shards, _train_cfg(), shuffle_buffer=1, corrupt="skip", skipped=skipped)
    url = next(u for u in shards.urls if u.endswith("train-000000.tar"))
    got = list(stream._raw_samples(url))
    assert 0 < len(got) < 8 and skipped.value == 1
    with pytest.raises(ValueError, match="corrupt policy must be one of"):
        MattingStream(shards, _train_cfg(), corrupt="ignore")
