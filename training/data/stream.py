"""Stream augmented training samples from a shard set in the exact order of ``training.data.order``.

The shards come from ``shards.reader.resolve_shards`` (a folder, a store or HTTP URL, a brace
pattern or a ``pipe:`` command; the ``ShardList`` carries the store's options and the shard
cache to the loader processes); where each sample lies in its shard comes from the set's
``samples.parquet`` (``shards.reader.shard_samples``).

``MattingStream`` is the ``IterableDataset`` of one rank for one epoch, from a given step on.
Each loader worker (or the training process, with no workers) reads the canonical streams of
its slots (``training.data.order.worker_slots``): per stream a forward pass over a few consecutive
shards, each run of samples read in one pass (``open_shard``: a seek on a file, ranged GETs of
just its bytes on a store or HTTP server, a seek in the cached copy, a ``pipe:`` read and
dropped up to the run). Undecoded samples wait in the
stream's shuffle window until the order emits them, so at most ``loader.shuffle_window`` raw
samples per stream are held. A resumed stream reads only what it has still to give: the few
samples that were waiting in its window, each with a small read, then the rest in one pass.

Each emitted sample is decoded (only ``fg``, ``bg``, ``alpha`` and ``json``: ``merged`` and
``trimap`` are recomputed) and augmented with a generator seeded by ``(seed, epoch, key)``
(``sample_rng``), so its network input does not depend on who reads it or when. Items come out
one sample at a time, step by step, in slot order; a ``DataLoader`` with ``batch_size=None``
interleaves its workers round robin, which gives the rank's slice of each global batch in slot
order, and ``training.data.batching.batches`` stacks each run of ``per_rank`` items into a batch.

Under ``loader.corrupt=skip`` a sample that cannot be read or decoded is replaced by the last
good sample this reader gave (or, before any, by an all-zero sample whose empty unknown region
gives it no gradient), so every rank still takes the same number of steps; each is counted and
named on stderr and in the item's ``skipped`` field.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from configs import Config
from shards.mattes import BackgroundFit, apply_fit
from shards.reader import (
    VERIFY_HINT,
    RawSample,
    SampleError,
    ShardError,
    ShardList,
    ShardSamples,
    TransientShardError,
    decode,
    decode_member,
    raw_samples,
    shard_samples,
)
from shards.schema import SHARED_MEMBERS, TRAIN_MEMBERS
from training.data.augment import crop_sample, matte_maps, pack_crops, to_tensors
from training.data.decode_cache import MB, DecodeCache, Use, plan_uses
from training.data.order import EpochOrder, Stream, epoch_order, worker_slots

CORRUPT_POLICIES = ("stop", "skip")
DIGEST_HEX = 16  # hex digits of a sample's digest in batches.jsonl (64 bits)


def decode_sample(
    raw: RawSample, decoder: Callable[[str, bytes], Any] = decode_member
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """fg (H, W, 3) RGB, fitted bg (H, W, 3) RGB and alpha (H, W), uint8, from a raw sample.

    ``decoder(name, data)`` decodes one member (the loader's passes shared members through its
    ``DecodeCache``).

    Raises:
        shards.reader.SampleError: a member is missing or undecodable, its record is
            malformed, or the sizes disagree (named).
    """
    members = decode(raw, TRAIN_MEMBERS, decoder)
    fg, alpha = members["fg"], members["alpha"]
    where = f"{raw.url} key {raw.key}"
    try:
        fit = BackgroundFit.from_json(members["json"]["bg_fit"])
    except (KeyError, TypeError, ValueError) as exc:  # the record is not what the schema writes
        raise SampleError(f"{where}: json: bad bg_fit record ({exc!r}); {VERIFY_HINT}") from None
    try:
        bg = apply_fit(members["bg"], fit)
    except ValueError as exc:  # a background smaller than its recorded fit
        raise SampleError(f"{where}: bg: {exc}; {VERIFY_HINT}") from None
    if fg.shape[:2] != alpha.shape or bg.shape != fg.shape:
        raise SampleError(
            f"{where}: sizes differ: fg {fg.shape}, bg {bg.shape}, alpha {alpha.shape}; "
            f"{VERIFY_HINT}"
        )
    return fg, bg, alpha


def sample_rng(seed: int, epoch: int, key: str) -> np.random.Generator:
    """The generator of one sample's augmentation in one epoch: a function of these alone
    (the key enters through SHA-256, never Python's per-process ``hash()``)."""
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, epoch, digest])


def crops_digest(crops: dict[str, np.ndarray]) -> str:
    """A short hash of a sample's uint8 network inputs: the cropped fg, bg, alpha and trimap."""
    h = hashlib.sha256()
    for name in ("fg", "bg", "alpha", "trimap"):
        h.update(np.ascontiguousarray(crops[name]).tobytes())
    return h.hexdigest()[:DIGEST_HEX]


def check_order(shards: ShardList, cfg: Config, world_size: int, loader_workers: int) -> EpochOrder:
    """The first epoch's order, after checking that the run's shape can follow it.

    Raises:
        ValueError: a global batch larger than the epoch, a world size that does not divide
            it, or ``loader_workers`` that do not divide the per-rank batch (each named).
    """
    global_batch = world_size * cfg.train.batch_size
    order = epoch_order(shards.samples, cfg.train.seed, 0, global_batch, cfg.loader.shuffle_window)
    worker_slots(cfg.train.batch_size, 0, loader_workers)
    return order


class _StreamReader:
    """Reads one canonical stream forward and hands out its samples in the order's order.

    It reads only the samples still to be emitted from ``start`` on, in read order, grouping
    consecutive ones of a shard into one request: the whole stream from the start, or after a
    resume the few samples that were waiting in the shuffle window (each its own small read)
    and then the rest, so a resume reads no byte of a sample already given.
    """

    def __init__(self, owner: MattingStream, stream: Stream, start: int) -> None:
        self.owner, self.stream = owner, stream
        self.buffer: dict[int, RawSample | None] = {}  # read, waiting to be emitted
        self.raws = self._read(stream.remaining(start))

    def take(self, step: int) -> RawSample | None:
        """The sample of global batch ``step`` (None: lost to a corrupt shard, skipped)."""
        want = self.stream.permutation[step]
        while want not in self.buffer:
            index, raw = next(self.raws)
            self.buffer[index] = raw
        return self.buffer.pop(want)

    def _read(self, indices: list[int]) -> Iterator[tuple[int, RawSample | None]]:
        samples = self.stream.samples
        runs: list[list[int]] = []
        for index in indices:
            last = runs[-1][-1] if runs else None
            if last is not None and index == last + 1 and samples[index][0] == samples[last][0]:
                runs[-1].append(index)
            else:
                runs.append([index])
        for run in runs:
            shard, first = samples[run[0]]
            for offset, raw in enumerate(self.owner.read_run(shard, first, len(run))):
                yield run[offset], raw


class MattingStream(IterableDataset):
    """One rank's augmented samples of one epoch, from ``start_step`` on, in the exact order.

    Each item holds ``crops``, the sample's packed uint8 crops
    (``training.data.augment.pack_crops``,
    (S, S, 8)), which the trainer turns into float tensors on its device
    (``device_inputs``), and its ``key``, ``digest`` and ``skipped`` reason. ``ship="float"``
    gives instead the float tensors of ``to_tensors`` made in the loader process (the path
    before issue 13, kept as the benchmarks' baseline).
    """

    def __init__(
        self,
        shards: ShardList,
        cfg: Config,
        rank: int = 0,
        world_size: int = 1,
        epoch: int = 0,
        start_step: int = 0,
        corrupt: str = "stop",
        skipped=None,
        make_input: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        digests: bool = False,
        layout: tuple[ShardSamples, ...] | None = None,
        ship: Literal["uint8", "float"] = "uint8",
        cache_bytes: int | None = None,
        cache_counts=None,
    ) -> None:
        if corrupt not in CORRUPT_POLICIES:
            raise ValueError(f"corrupt policy must be one of {CORRUPT_POLICIES}, got {corrupt!r}")
        if ship not in ("uint8", "float"):
            raise ValueError(f"ship must be uint8 or float, got {ship!r}")
        if ship == "float" and make_input is None:
            raise ValueError("ship='float' composes in the loader: pass the family's make_input")
        self.shards, self.cfg = shards, cfg
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_step = epoch, start_step
        self.corrupt = corrupt
        self.skipped = skipped  # optional multiprocessing.Value counting skipped samples
        # with ship="float": the model family's network input (ModelFamily.make_input)
        self.make_input = make_input
        self.digests = digests  # add each sample's crops_digest (for batches.jsonl)
        self.layout = layout if layout is not None else shard_samples(shards)
        self.order = epoch_order(
            shards.samples,
            cfg.train.seed,
            epoch,
            world_size * cfg.train.batch_size,
            cfg.loader.shuffle_window,
        )
        self.per_rank = cfg.train.batch_size
        self.ship = ship
        # bytes of decoded shared members each loader process keeps (training.data.decode_cache)
        self.cache_bytes = cfg.loader.decode_cache_mb * MB if cache_bytes is None else cache_bytes
        # optional multiprocessing.Array("q", 2): cache hits and lookups over the processes
        self.cache_counts = cache_counts

    @property
    def steps(self) -> int:
        """Steps in the epoch (``samples // global batch``)."""
        return self.order.steps

    def _count_skip(self, message: str) -> None:
        if self.skipped is not None:
            with self.skipped.get_lock():
                self.skipped.value += 1
        print(f"warning: skipped {message}", file=sys.stderr, flush=True)

    def read_run(self, shard: int, first: int, count: int) -> Iterator[RawSample | None]:
        """Samples ``first .. first + count - 1`` of a shard, raw, read in one request; under
        the skip policy a shard that fails yields None for each sample it did not give.

        A failure in transit (``TransientShardError``: a dropped connection, a timeout, a
        server error) is retried ``loader.read_retries`` times, waiting ``read_backoff_s``
        doubled each time, from the first sample not yet given; then the run stops, whatever
        the policy (the data may be fine: ``--resume`` once the server is back).
        """
        url, recorded = self.shards.urls[shard], self.layout[shard]
        got = failures = 0
        try:
            while True:
                try:
                    for raw in self._read_from(url, recorded, first + got, count - got):
                        yield raw
                        got += 1
                    return
                except TransientShardError as exc:
                    failures += 1
                    if failures > self.cfg.loader.read_retries:
                        raise ShardError(
                            f"{exc}; it failed {failures} time(s) in a row, so the run stops "
                            "(the shard may be fine: check the server and the network, then "
                            "continue with --resume)"
                        ) from exc
                    wait = self.cfg.loader.read_backoff_s * 2 ** (failures - 1)
                    print(
                        f"warning: {exc}; reading it again from key "
                        f"{recorded.keys[first + got]} in {wait:g} s (retry {failures} of "
                        f"{self.cfg.loader.read_retries})",
                        file=sys.stderr,
                        flush=True,
                    )
                    time.sleep(wait)
        except ShardError as exc:
            if failures > self.cfg.loader.read_retries:  # given up in transit: not the data's fault
                raise
            if self.corrupt != "skip":
                raise ShardError(
                    f"{exc} (reading {count} sample(s) from key {recorded.keys[first]}), or "
                    "train with --set loader.corrupt=skip"
                ) from exc
            for position in range(first + got, first + count):
                self._count_skip(f"{recorded.keys[position]}: {exc}")
                yield None

    def _read_from(
        self, url: str, recorded: ShardSamples, first: int, count: int
    ) -> Iterator[RawSample]:
        """Samples ``first .. first + count - 1`` of a shard in one request, keys checked."""
        offset, length = recorded.span(first, count)
        skip = 0 if recorded.offsets is not None else first  # no offsets: read from the start
        got = 0
        for raw in raw_samples(url, TRAIN_MEMBERS, offset, length, self.shards):
            if skip:
                skip -= 1
                continue
            expected = recorded.keys[first + got]
            if raw.key != expected:
                raise ShardError(
                    f"{url} holds key {raw.key} at position {first + got}, where "
                    f"samples.parquet records {expected}; {VERIFY_HINT}"
                )
            yield raw
            got += 1
            if got == count:
                return
        raise ShardError(
            f"{url} ended after {first + got} of its samples, {first + count} expected; "
            f"{VERIFY_HINT}"
        )

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 0)
        base = self.rank * self.per_rank
        streams = [
            self.order.streams[base + slot] for slot in worker_slots(self.per_rank, worker, workers)
        ]
        steps = range(self.start_step, self.order.steps)
        # what this process decodes, in order, and when each shared member is needed again
        uses = plan_uses([stream.at(step) for step in steps for stream in streams], self.layout)
        cache = DecodeCache(self.cache_bytes, decode_member) if self.cache_bytes else None
        readers = [_StreamReader(self, stream, self.start_step) for stream in streams]
        accesses = iter(uses)
        last_good = None
        for step in steps:
            for reader in readers:
                ref, use = reader.stream.at(step), next(accesses)
                item = self._item(reader.take(step), ref, cache, use)
                if item["skipped"]:
                    item = _substitute(
                        last_good, item, self.cfg.augment.input_size, self.ship, self.make_input
                    )
                else:
                    last_good = item
                yield item

    def _item(
        self,
        raw: RawSample | None,
        ref: tuple[int, int],
        cache: DecodeCache | None,
        uses: dict[str, Use],
    ) -> dict:
        if raw is None:
            key = self.layout[ref[0]].keys[ref[1]]
            return {"key": key, "skipped": f"{key}: its shard could not be read"}
        decoder = decode_member
        if cache is not None:

            def decoder(name: str, data: bytes) -> Any:
                if name in SHARED_MEMBERS:
                    return cache.decode(name, data, uses.get(name))
                return decode_member(name, data)

        before = (cache.hits, cache.lookups) if cache is not None else (0, 0)
        try:
            fg, bg, alpha = decode_sample(raw, decoder)
        except SampleError as exc:  # bad data; anything else is a bug, and stops the run
            if self.corrupt != "skip":
                raise ShardError(
                    f"corrupt sample {raw.url} key {raw.key}: {exc}, or train with "
                    "--set loader.corrupt=skip"
                ) from exc
            self._count_skip(f"sample {raw.url} key {raw.key}: {exc}")
            return {"key": raw.key, "skipped": f"{raw.key}: {exc}"}
        finally:
            if cache is not None and self.cache_counts is not None:
                with self.cache_counts.get_lock():
                    self.cache_counts[0] += cache.hits - before[0]
                    self.cache_counts[1] += cache.lookups - before[1]
        # a reused matte's maps are made once per visit (the same crops, faster)
        maps = cache.derived(alpha, matte_maps) if cache is not None else None
        rng = sample_rng(self.cfg.train.seed, self.epoch, raw.key)
        crops = crop_sample(fg, bg, alpha, self.cfg.augment, rng, maps)
        item = _ship(crops, self.ship, self.make_input)
        item.update(key=raw.key, digest=crops_digest(crops) if self.digests else "", skipped="")
        return item


def _ship(crops: dict[str, np.ndarray], ship: str, make_input) -> dict:
    """What a loader process sends of a sample: its packed uint8 crops, or (the baseline) its
    float tensors."""
    return {"crops": pack_crops(crops)} if ship == "uint8" else to_tensors(crops, make_input)


def _substitute(last_good: dict | None, bad: dict, side: int, ship: str, make_input) -> dict:
    """What stands in for a skipped sample: the last good one, or a sample with no gradient
    (``side`` x ``side``, the network input's)."""
    if last_good is None:
        zeros = {
            "fg": np.zeros((side, side, 3), np.uint8),
            "bg": np.zeros((side, side, 3), np.uint8),
            "alpha": np.zeros((side, side), np.uint8),
            "trimap": np.zeros((side, side), np.uint8),  # no unknown pixel: a zero gradient
        }
        last_good = {**_ship(zeros, ship, make_input), "key": "", "digest": crops_digest(zeros)}
    return {**last_good, "skipped": bad["skipped"]}
