"""The training data order: a pure function of the index, the seed, the epoch and the global batch.

``training.data.stream.MattingStream`` reads the shards in this order. The design, which the
tests pin:

- **One concatenation per epoch.** The train shards are permuted with a generator seeded by
  ``(seed, epoch)`` and laid end to end: ``N`` samples, each a ``(shard, position)`` pair.
- **G canonical streams, G the global batch** (ranks x ``--batch-size``). The concatenation is
  cut into ``G`` contiguous runs of ``L = N // G`` samples; the last ``N - G * L`` (< G)
  samples are dropped, a different remainder each epoch. Stream ``j`` is run ``j``: a
  sequential read of a few consecutive shards (the first and last possibly from the middle,
  which per-sample byte offsets make a seek).
- **A bounded shuffle per stream.** Stream ``j``'s samples pass through a shuffle buffer of
  ``window`` samples driven by a generator seeded by ``(seed, epoch, j)``; the result is a
  permutation of its ``L`` samples in which the reader is never more than ``window`` samples
  ahead of training. It is computed on indices, so it can be replayed from any step.
- **Global batch k** is ``[stream_0[k], stream_1[k], ..., stream_{G-1}[k]]``; steps per epoch
  are ``L``. Rank ``r`` of ``R`` takes slots ``r*B .. (r+1)*B - 1`` (``B = G / R``), i.e. it
  reads streams ``r*B .. (r+1)*B - 1`` and no others; its loader worker ``w`` of ``W`` takes
  the slots ``t = w, w + W, ...`` of its slice (``W`` must divide ``B``), so every stream is read
  by exactly one worker, whole and in order, and a ``DataLoader`` that interleaves its workers
  round robin (``batch_size=None``) yields the rank's slice in slot order.

So global batch ``k`` depends on the index, the seed, the epoch and ``G`` only: the same keys on
any number of ranks, nodes and loader workers. Resuming at step ``k`` needs, per stream, only
the read indices still to be emitted (``Stream.remaining``): the reader reads those, grouping
consecutive ones into one request, and no byte of what was consumed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

SampleRef = tuple[int, int]  # (shard index in the index's train split, position in the shard)


@dataclass(frozen=True)
class Stream:
    """One canonical stream of an epoch: a contiguous run of the epoch's concatenation.

    Attributes:
        samples: the run, in read order: ``(shard, position)`` pairs.
        permutation: ``permutation[k]`` is the read index of the sample emitted at step ``k``.
    """

    samples: tuple[SampleRef, ...]
    permutation: tuple[int, ...]

    def at(self, step: int) -> SampleRef:
        """The sample this stream gives to global batch ``step``."""
        return self.samples[self.permutation[step]]

    def remaining(self, step: int) -> list[int]:
        """The read indices still to be emitted from ``step`` on, in read order: all of them at
        step 0; after a resume, the few waiting in the shuffle window, then the rest."""
        return sorted(self.permutation[step:])


@dataclass(frozen=True)
class EpochOrder:
    """The order of one epoch: ``global_batch`` streams of ``steps`` samples each."""

    epoch: int
    global_batch: int
    streams: tuple[Stream, ...]
    dropped: tuple[SampleRef, ...]  # the remainder (< global_batch) left out of this epoch

    @property
    def steps(self) -> int:
        """Optimiser steps in the epoch: ``samples // global_batch``."""
        return len(self.streams[0].permutation) if self.streams else 0

    def batch(self, step: int) -> list[SampleRef]:
        """Global batch ``step`` (0-based within the epoch), in slot (= rank) order."""
        return [stream.at(step) for stream in self.streams]

    def rank_slice(self, step: int, rank: int, world: int) -> list[SampleRef]:
        """Rank ``rank``'s part of global batch ``step``: slots ``rank*B .. (rank+1)*B - 1``."""
        per_rank = _per_rank(self.global_batch, world)
        return [s.at(step) for s in self.streams[rank * per_rank : (rank + 1) * per_rank]]

    @cached_property
    def flat(self) -> list[SampleRef]:
        """Every sample of the epoch in training order (batch after batch)."""
        return [ref for step in range(self.steps) for ref in self.batch(step)]


def _per_rank(global_batch: int, world: int) -> int:
    if world < 1 or global_batch % world:
        raise ValueError(f"a global batch of {global_batch} cannot be split over {world} ranks")
    return global_batch // world


def worker_slots(per_rank: int, worker: int, workers: int) -> range:
    """The slots of a rank's slice that loader worker ``worker`` of ``workers`` produces.

    Raises:
        ValueError: ``workers`` does not divide the per-rank batch (a stream would then pass
            from worker to worker between batches).
    """
    workers = max(1, workers)
    if per_rank % workers:
        fits = ", ".join(str(w) for w in range(1, per_rank + 1) if per_rank % w == 0)
        raise ValueError(
            f"--loader-workers {workers} must divide the per-rank batch (--batch-size "
            f"{per_rank}), so that each loader worker reads whole streams: use one of {fits}"
        )
    return range(worker, per_rank, workers)


def window_permutation(length: int, window: int, rng: np.random.Generator) -> tuple[int, ...]:
    """The output order of a shuffle buffer of ``window`` samples over ``length`` inputs.

    The buffer fills with the first ``window`` inputs; each later input replaces a uniformly
    chosen buffered one, which is emitted; the rest drain in random order at the end. With
    ``window <= 1`` the order is the input order.

    Returns:
        ``p`` with ``p[k]`` the input index emitted ``k``-th. ``p[k] <= k + window - 1``: the
        reader is never more than a window ahead of training. A sample may wait in the buffer
        for long, which is why a resumed reader reads ``Stream.remaining``, not a window back.
    """
    if window <= 1 or length <= 1:
        return tuple(range(length))
    buffer = list(range(min(window, length)))
    out: list[int] = []
    for incoming in range(len(buffer), length):
        slot = int(rng.integers(len(buffer)))
        out.append(buffer[slot])
        buffer[slot] = incoming
    out.extend(buffer[i] for i in rng.permutation(len(buffer)))
    return tuple(out)


def epoch_order(
    shard_samples: Sequence[int], seed: int, epoch: int, global_batch: int, window: int
) -> EpochOrder:
    """The order of ``epoch``: see the module docstring.

    Args:
        shard_samples: samples per train shard, in the index's order (``ShardList.samples``).
        seed: ``train.seed``.
        epoch: 0-based.
        global_batch: ranks x per-rank batch; the number of canonical streams.
        window: the per-stream shuffle buffer, in samples (1 or 0: no shuffle within streams).

    Raises:
        ValueError: a global batch larger than the epoch's samples.
    """
    total = sum(shard_samples)
    if global_batch < 1 or total < global_batch:
        raise ValueError(
            f"{total} train samples cannot fill one global batch of {global_batch}; lower "
            "--batch-size or the number of ranks, or build more samples"
        )
    shards = np.random.default_rng([seed, epoch]).permutation(len(shard_samples))
    concatenated = [(int(s), p) for s in shards for p in range(shard_samples[s])]
    steps = total // global_batch
    streams = []
    for j in range(global_batch):
        run = tuple(concatenated[j * steps : (j + 1) * steps])
        rng = np.random.default_rng([seed, epoch, j])
        streams.append(Stream(run, window_permutation(steps, window, rng)))
    return EpochOrder(
        epoch, global_batch, tuple(streams), tuple(concatenated[global_batch * steps :])
    )
