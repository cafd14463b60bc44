"""Stream augmented training samples from a shard set, in lockstep over ranks.

The shards come from ``shards.reader.resolve_shards`` (a folder, an HTTP URL, a brace pattern
or a ``pipe:`` command) and are read by ``shards.reader`` (HTTP through curl, never downloaded
whole first), keeping only the members the schema marks for training (``fg``, ``bg``,
``alpha``, ``json``: ``merged`` and ``trimap`` are recomputed from them).

``MattingStream`` is the ``IterableDataset``: each epoch the shard list is shuffled with a seed
that every rank shares, split by node (``rank::world``) and by loader worker, then streamed
with a sample shuffle buffer. Each worker repeats its shards without end; the trainer takes
exactly ``steps_per_epoch`` batches, the same on every rank, so shards of uneven size never
leave a rank waiting in an all-reduce.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from configs import TrainConfig
from shards.mattes import BackgroundFit, apply_fit
from shards.reader import RawSample, ShardError, ShardList, decode, raw_samples
from shards.schema import TRAIN_MEMBERS
from training.augment import crop_sample, to_tensors

CORRUPT_POLICIES = ("stop", "skip")


def steps_per_epoch(total_samples: int, world_size: int, batch_size: int) -> int:
    """Optimiser steps per epoch, the same on every rank: one pass over the set in total."""
    steps = total_samples // (world_size * batch_size)
    if steps < 1:
        raise ValueError(
            f"{total_samples} samples cannot fill one step of {world_size} rank(s) x batch "
            f"{batch_size}; lower --batch-size or build more samples"
        )
    return steps


def check_shard_count(shards: int, world_size: int, loader_workers: int) -> None:
    """Every loader worker of every rank needs at least one shard of its own."""
    consumers = world_size * max(1, loader_workers)
    if shards < consumers:
        raise ValueError(
            f"{shards} shard(s) cannot feed {world_size} rank(s) x {max(1, loader_workers)} "
            f"loader worker(s) = {consumers} readers: use --loader-workers "
            f"{max(1, shards // world_size)} or fewer, fewer ranks, or rebuild the set with a "
            f"smaller --samples-per-shard"
        )


def decode_sample(raw: RawSample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """fg (H, W, 3) RGB, fitted bg (H, W, 3) RGB and alpha (H, W), uint8, from a raw sample.

    Raises:
        ValueError: a member is missing or undecodable, or the sizes disagree (named).
    """
    members = decode(raw, TRAIN_MEMBERS)
    fg, alpha = members["fg"], members["alpha"]
    bg = apply_fit(members["bg"], BackgroundFit.from_json(members["json"]["bg_fit"]))
    if fg.shape[:2] != alpha.shape or bg.shape != fg.shape:
        raise ValueError(f"sizes differ: fg {fg.shape}, bg {bg.shape}, alpha {alpha.shape}")
    return fg, bg, alpha


class MattingStream(IterableDataset):
    """Endless, epoch-seeded, node- and worker-split stream of augmented training samples."""

    def __init__(
        self,
        shards: ShardList,
        cfg: TrainConfig,
        rank: int = 0,
        world_size: int = 1,
        epoch: int = 0,
        start_step: int = 0,
        shuffle_buffer: int = 64,
        corrupt: str = "stop",
        skipped=None,
        make_input: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if corrupt not in CORRUPT_POLICIES:
            raise ValueError(f"corrupt policy must be one of {CORRUPT_POLICIES}, got {corrupt!r}")
        self.shards, self.cfg = shards, cfg
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_step = epoch, start_step
        self.shuffle_buffer, self.corrupt = shuffle_buffer, corrupt
        self.skipped = skipped  # optional multiprocessing.Value counting skipped shards/samples
        # the model family's network input (ModelFamily.make_input); None: to_tensors' default
        self.make_input = make_input

    def _count_skip(self, message: str) -> None:
        if self.skipped is not None:
            with self.skipped.get_lock():
                self.skipped.value += 1
        print(f"warning: skipped {message}", file=sys.stderr, flush=True)

    def _my_shards(self, epoch: int, worker: int, workers: int) -> list[str]:
        # Not webdataset's split_by_node/split_by_worker: those read the rank from the process
        # group or the environment, and this stream is given its rank (tests run ranks in one
        # process; the exact training order of issue 12 assigns streams to ranks x workers
        # itself). The split is these two slices either way.
        order = np.random.default_rng([self.cfg.seed, epoch]).permutation(len(self.shards.urls))
        mine = [self.shards.urls[i] for i in order[self.rank :: self.world_size]]
        return mine[worker::workers]

    def _raw_samples(self, url: str) -> Iterator[RawSample]:
        try:
            yield from raw_samples(url, TRAIN_MEMBERS)  # skips merged and trimap in the stream
        except ShardError as exc:
            if self.corrupt == "skip":
                self._count_skip(f"the rest of shard: {exc}")
                return
            raise ShardError(f"{exc}, or train with --set train.corrupt=skip") from exc

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        seed = [self.cfg.seed, self.epoch, self.start_step, self.rank, worker]
        rng = np.random.default_rng(seed)
        buffer: list[RawSample] = []
        for epoch in itertools.count(self.epoch):
            shards = self._my_shards(epoch, worker, workers)
            if not shards:
                raise ValueError(f"rank {self.rank} worker {worker} has no shard")
            for url in shards:
                for raw in self._raw_samples(url):
                    if len(buffer) < self.shuffle_buffer:
                        buffer.append(raw)
                        continue
                    if buffer:  # emit a random buffered sample, keep the new one
                        slot = int(rng.integers(len(buffer)))
                        raw, buffer[slot] = buffer[slot], raw
                    sample = self._augment(raw, rng)
                    if sample is not None:
                        yield sample

    def _augment(self, raw: RawSample, rng: np.random.Generator):
        try:
            fg, bg, alpha = decode_sample(raw)
        except (ValueError, KeyError, TypeError) as exc:
            if self.corrupt == "skip":
                self._count_skip(f"sample {raw.url} key {raw.key}: {exc}")
                return None
            raise ShardError(f"corrupt sample {raw.url} key {raw.key}: {exc}") from exc
        return to_tensors(crop_sample(fg, bg, alpha, self.cfg, rng), self.make_input)


def make_loader(stream: MattingStream, batch_size: int, workers: int) -> DataLoader:
    """Batches of ``batch_size`` from ``workers`` processes (0: in this process)."""
    return DataLoader(
        stream,
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )
