"""Stream training samples from WebDataset shards: local folders, HTTP, brace patterns, pipes.

``resolve_shards(spec)`` turns what a user passes as ``--shards`` into shard URLs and their
sample counts, always from a shard set's ``index.json``:

- a shard set folder (``/data/shards``) or its URL (``http://host/shards/``): the index there;
  a split's folder (``/data/shards/validation``) or URL: that split, with the set's index;
- a brace pattern (``/data/shards/train/train-{000000..000099}.tar``) or ``http(s)://`` URLs
  of shards: the set's index is found two levels up (``<set>/<split>/<shard>.tar``);
- a ``pipe:`` command (``pipe:aws s3 cp s3://b/train-{000000..000099}.tar -``): pass
  ``index=`` (the set's folder or URL), since a command has no location to look beside.

``MattingStream`` is the ``IterableDataset``: each epoch the shard list is shuffled with a seed
that every rank shares, split by node (``rank::world``) and by loader worker, then streamed
(HTTP through curl, never downloaded whole first), with a sample shuffle buffer, decoding only
``fg``, ``bg``, ``alpha`` and ``json`` (``merged`` and ``trimap`` are recomputed from them). Each
worker repeats its shards without end; the trainer takes exactly ``steps_per_epoch`` batches, the
same on every rank, so shards of uneven size never leave a rank waiting in an all-reduce.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.shardlists import expand_urls

from configs import TrainConfig
from shards.codec import decode_color, decode_grey
from shards.index import INDEX_NAME, SPLITS, Index, parse_index, read_index
from shards.mattes import BackgroundFit, apply_fit
from training.augment import crop_sample, to_tensors

NEEDED_ROLES = ("fg", "bg", "alpha", "json")  # merged and trimap are recomputed
CORRUPT_POLICIES = ("stop", "skip")


class ShardError(RuntimeError):
    """A shard or sample that cannot be read; the message names the shard and key."""


@dataclass(frozen=True)
class ShardList:
    """Shards to stream and their sample counts (from the set's index)."""

    urls: tuple[str, ...]
    samples: tuple[int, ...]
    index: Index

    @property
    def total(self) -> int:
        return sum(self.samples)


def _is_url(spec: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*://", spec))


def load_index(location: str) -> Index:
    """``index.json`` of a shard set given as a folder or an ``http(s)://`` URL."""
    if not _is_url(location):
        return read_index(Path(location))
    url = location.rstrip("/") + "/" + INDEX_NAME
    try:
        with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - user's URL
            return parse_index(response.read(), location)
    except (urllib.error.URLError, OSError) as exc:
        raise ValueError(f"cannot read {url} ({exc}); is the shard set served there?") from None


def _join(root: str, rel: str) -> str:
    return root.rstrip("/") + "/" + rel if _is_url(root) else str(Path(root) / rel)


def shard_urls(index: Index, split: str) -> tuple[str, ...]:
    """URLs (or paths) of one split's shards of a set, joined to where its index was read."""
    return tuple(_join(index.root, s.path) for s in index.split(split))


def resolve_shards(spec: str, split: str = "train", index: str | None = None) -> ShardList:
    """Shard URLs and sample counts for ``--shards`` (see the module docstring).

    Raises:
        ValueError: no index can be found, a named shard is not in it, or the split is empty.
    """
    is_set = not spec.endswith(".tar") and "{" not in spec and not spec.startswith("pipe:")
    parent, _, name = spec.rstrip("/").rpartition("/")
    if is_set and name in SPLITS and (_is_url(spec) or not (Path(spec) / INDEX_NAME).exists()):
        # a split's folder (OUT/validation): the set is its parent
        split, spec = name, parent or "."
    if is_set:
        idx = load_index(index or spec)
        shards = idx.split(split)
        if not shards:
            raise ValueError(f"{spec}: the shard set has no '{split}' shards")
        return ShardList(shard_urls(idx, split), tuple(s.samples for s in shards), idx)
    urls = tuple(expand_urls(spec))
    if index is None:
        if spec.startswith("pipe:"):
            raise ValueError(
                f"{spec}: a pipe: command needs index= (the shard set's folder or URL)"
            )
        first = urls[0]
        index = first.rsplit("/", 2)[0] if _is_url(first) else str(Path(first).parent.parent)
    idx = load_index(index)
    by_name = {s.path.rsplit("/", 1)[-1]: s for s in idx.shards}
    counts = []
    for url in urls:
        name = re.split(r"[/ ]", url.rstrip(" -"))[-1]
        if name not in by_name:
            raise ValueError(f"{url}: shard {name} is not in {index}/{INDEX_NAME}")
        counts.append(by_name[name].samples)
    return ShardList(urls, tuple(counts), idx)


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


def _select(name: str) -> bool:
    """Read only the members training needs (the tar stream skips the others)."""
    parts = name.rsplit("/", 1)[-1].split(".")
    return len(parts) > 1 and parts[1] in NEEDED_ROLES


def decode_sample(raw: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """fg (H, W, 3), fitted bg (H, W, 3) and alpha (H, W), uint8, from a raw sample."""
    members = {k.split(".", 1)[0]: v for k, v in raw.items() if not k.startswith("__")}
    missing = [role for role in NEEDED_ROLES if role not in members]
    if missing:
        raise ValueError(f"missing member(s) {', '.join(missing)}")
    meta = json.loads(members["json"])
    fg = decode_color(members["fg"])
    alpha = decode_grey(members["alpha"])
    bg = apply_fit(decode_color(members["bg"]), BackgroundFit.from_json(meta["bg_fit"]))
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
    ) -> None:
        if corrupt not in CORRUPT_POLICIES:
            raise ValueError(f"corrupt policy must be one of {CORRUPT_POLICIES}, got {corrupt!r}")
        self.shards, self.cfg = shards, cfg
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_step = epoch, start_step
        self.shuffle_buffer, self.corrupt = shuffle_buffer, corrupt
        self.skipped = skipped  # optional multiprocessing.Value counting skipped shards/samples

    def _count_skip(self, message: str) -> None:
        if self.skipped is not None:
            with self.skipped.get_lock():
                self.skipped.value += 1
        print(f"warning: skipped {message}", file=sys.stderr, flush=True)

    def _my_shards(self, epoch: int, worker: int, workers: int) -> list[str]:
        order = np.random.default_rng([self.cfg.seed, epoch]).permutation(len(self.shards.urls))
        mine = [self.shards.urls[i] for i in order[self.rank :: self.world_size]]
        return mine[worker::workers]

    def _raw_samples(self, url: str) -> Iterator[dict[str, Any]]:
        key = None
        try:
            for raw in wds.tarfile_samples([{"url": url}], select_files=_select):
                key = raw["__key__"]
                yield raw
        except Exception as exc:  # noqa: BLE001 - becomes a named ShardError or a skip
            where = f"{url} after key {key}" if key else url
            if self.corrupt == "skip":
                self._count_skip(f"the rest of shard {where}: {exc}")
                return
            raise ShardError(
                f"corrupt shard {where}: {exc}; check it with `indexnet shards verify`, "
                "or train with --set train.corrupt=skip"
            ) from exc

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        seed = [self.cfg.seed, self.epoch, self.start_step, self.rank, worker]
        rng = np.random.default_rng(seed)
        buffer: list[dict[str, Any]] = []
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

    def _augment(self, raw: dict[str, Any], rng: np.random.Generator):
        try:
            fg, bg, alpha = decode_sample(raw)
        except (ValueError, KeyError, TypeError) as exc:
            where = f"{raw.get('__url__')} key {raw.get('__key__')}"
            if self.corrupt == "skip":
                self._count_skip(f"sample {where}: {exc}")
                return None
            raise ShardError(f"corrupt sample {where}: {exc}") from exc
        return to_tensors(crop_sample(fg, bg, alpha, self.cfg, rng))


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
