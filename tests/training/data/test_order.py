"""training.data.order: exact epochs, the same global batches on any cluster shape, bounded
shuffles."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from training.data.order import epoch_order, window_permutation, worker_slots

SHARDS = (8, 8, 8, 6, 3, 8)  # uneven, as real sets end: 41 samples


def _all_refs(shard_samples) -> set[tuple[int, int]]:
    return {(s, p) for s, n in enumerate(shard_samples) for p in range(n)}


@pytest.mark.parametrize("global_batch, window", [(4, 1), (4, 5), (8, 16), (41, 3)])
def test_an_epoch_covers_every_sample_once_but_a_remainder_below_the_global_batch(
    global_batch, window
):
    order = epoch_order(SHARDS, seed=3, epoch=0, global_batch=global_batch, window=window)
    assert order.steps == sum(SHARDS) // global_batch
    seen = Counter(order.flat)
    assert set(seen.values()) == {1} and len(order.dropped) < global_batch
    assert set(seen) | set(order.dropped) == _all_refs(SHARDS)
    assert not set(seen) & set(order.dropped)


def test_epochs_differ_and_the_same_inputs_give_the_same_order():
    a, b = (epoch_order(SHARDS, 3, e, 4, 5) for e in (0, 1))
    assert a.flat != b.flat
    assert epoch_order(SHARDS, 3, 0, 4, 5).flat == a.flat
    assert epoch_order(SHARDS, 4, 0, 4, 5).flat != a.flat
    remainders = {epoch_order(SHARDS, 3, e, 4, 5).dropped for e in range(6)}
    assert len(remainders) > 1  # the dropped remainder moves from epoch to epoch


@pytest.mark.parametrize("world, workers", [(1, 0), (1, 2), (2, 1), (2, 2), (4, 1), (8, 1)])
def test_ranks_and_workers_split_the_same_global_batches(world, workers):
    order = epoch_order(SHARDS, seed=0, epoch=2, global_batch=8, window=4)
    per_rank = 8 // world
    owner = {}
    for rank in range(world):
        for worker in range(max(1, workers)):
            for slot in worker_slots(per_rank, worker, workers):
                stream = rank * per_rank + slot
                assert stream not in owner  # every stream is read by one worker only
                owner[stream] = (rank, worker)
    assert sorted(owner) == list(range(8))
    for step in range(order.steps):
        pieces = [order.rank_slice(step, rank, world) for rank in range(world)]
        assert sum(pieces, []) == order.batch(step)  # rank 0 first, concatenated


def test_a_stream_reads_consecutive_samples_of_consecutive_shards():
    order = epoch_order(SHARDS, seed=1, epoch=0, global_batch=4, window=6)
    shard_order = list(dict.fromkeys(ref[0] for s in order.streams for ref in s.samples))
    rank = {shard: i for i, shard in enumerate(shard_order)}
    for stream in order.streams:
        keys = [(rank[s], p) for s, p in stream.samples]
        assert keys == sorted(keys)  # one forward pass over the shards, never back
        for (s0, p0), (s1, p1) in zip(stream.samples, stream.samples[1:], strict=False):
            assert (s1 == s0 and p1 == p0 + 1) or (s1 != s0 and p1 == 0)


@pytest.mark.parametrize("length, window", [(1, 4), (10, 1), (10, 4), (50, 7), (5, 50)])
def test_the_window_shuffle_is_a_bounded_permutation(length, window):
    p = window_permutation(length, window, np.random.default_rng(0))
    assert sorted(p) == list(range(length))
    assert all(p[k] <= k + max(window, 1) - 1 for k in range(length))
    if window <= 1:
        assert p == tuple(range(length))


def test_a_resume_reads_only_what_was_not_consumed():
    order = epoch_order(SHARDS, seed=5, epoch=1, global_batch=4, window=5)
    for stream in order.streams:
        for step in range(order.steps + 1):
            todo = stream.remaining(step)
            assert todo == sorted(todo) and set(todo) == set(stream.permutation[step:])
            assert not set(todo) & set(stream.permutation[:step])


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="41 train samples cannot fill one global batch of 64"):
        epoch_order(SHARDS, 0, 0, 64, 4)
    order = epoch_order(SHARDS, 0, 0, 8, 4)
    with pytest.raises(ValueError, match="a global batch of 8 cannot be split over 3 ranks"):
        order.rank_slice(0, 0, 3)
    with pytest.raises(
        ValueError, match=r"--loader-workers 3 must divide .*--batch-size 4.*1, 2, 4"
    ):
        worker_slots(4, 0, 3)
