"""Batches of one rank: the loader over a ``MattingStream``, stacking, and the device step inputs.

``epoch_batches`` is what training and ``train --data-only`` both iterate: a ``DataLoader``
(``make_loader``) over the rank's ``MattingStream`` whose items ``batches`` stacks into one
``Batch`` per step, in pinned memory for an asynchronous copy; ``device_inputs`` composes a
batch's packed uint8 crops on the device into the tensors of a training step.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from configs import Config
from shards.reader import ShardList, ShardSamples
from training.data.augment import compose_batch
from training.data.stream import MattingStream


@dataclass
class Batch:
    """One rank's slice of a global batch: stacked tensors and, per sample, what it is."""

    tensors: dict[str, torch.Tensor]  # ``crops`` (B, S, S, 8) uint8 (or the float baseline's)
    keys: list[str]
    digests: list[str]
    skipped: list[str]  # why each skipped sample was replaced ("" for the others)


def batches(items: Iterator[dict], per_rank: int, pin: bool = False) -> Iterator[Batch]:
    """Stack each run of ``per_rank`` consecutive items (one step's slots) into a batch, in
    pinned memory when ``pin`` (so that the copy to a CUDA device can be asynchronous)."""
    while True:
        group = list(itertools.islice(items, per_rank))
        if not group:
            return
        if len(group) < per_rank:
            raise RuntimeError(f"the loader ended inside a batch ({len(group)} of {per_rank})")
        tensors = {}
        for name, value in group[0].items():
            if isinstance(value, torch.Tensor):
                out = torch.empty((per_rank, *value.shape), dtype=value.dtype, pin_memory=pin)
                tensors[name] = torch.stack([item[name] for item in group], out=out)
        yield Batch(
            tensors,
            [item["key"] for item in group],
            [item["digest"] for item in group],
            [item["skipped"] for item in group],
        )


def device_inputs(
    tensors: dict[str, torch.Tensor],
    device: torch.device,
    make_input: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    channels_last: bool = False,
) -> dict[str, torch.Tensor]:
    """A batch's tensors on ``device``, as the training step uses them: the packed uint8 crops
    copied (asynchronously from pinned memory) and composed there (``compose_batch``: image,
    alpha, fg, bg, merged, unknown); the image in channels-last memory when asked."""
    if "crops" in tensors:
        out = compose_batch(tensors["crops"].to(device, non_blocking=True), make_input)
    else:  # the float baseline, composed in the loader
        out = {name: value.to(device, non_blocking=True) for name, value in tensors.items()}
    if channels_last:
        out["image"] = out["image"].contiguous(memory_format=torch.channels_last)
    return out


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask (what a container, ``taskset`` or a
    scheduler's cgroup allows), or ``os.cpu_count()`` where the platform has no such mask."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_workers(
    per_rank: int, most: int = 4, cpus: int | None = None, local_ranks: int | None = None
) -> int:
    """The default loader processes of a rank: the most that divide the per-rank batch, up to
    ``most`` and up to this rank's share of the CPUs (``usable_cpus()`` over the ranks on this
    node, torchrun's ``LOCAL_WORLD_SIZE``), and at least one. More processes than CPUs only
    contend for them (and PyTorch warns at every epoch).
    """
    if local_ranks is None:
        local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    share = (usable_cpus() if cpus is None else cpus) // max(1, local_ranks)
    limit = max(1, min(most, share))
    return max(w for w in range(1, limit + 1) if per_rank % w == 0)


def make_loader(stream: MattingStream, workers: int) -> DataLoader:
    """The stream's items from ``workers`` processes (0: in this process), one at a time in
    slot order (the workers' outputs interleaved round robin); ``batches()`` stacks them."""
    per_worker = stream.per_rank // max(1, workers)
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        pin_memory=False,  # batches() stacks into pinned memory
        persistent_workers=False,
        prefetch_factor=2 * per_worker if workers else None,  # two steps ahead
        in_order=True,
        # its own generator: making an iterator draws a seed, and from the global generator
        # that draw would shift the model's dropout masks after a resume (the stream's
        # randomness is its own, seeded per sample)
        generator=torch.Generator().manual_seed(0),
    )


def epoch_batches(
    shards: ShardList,
    cfg: Config,
    rank: int,
    world_size: int,
    epoch: int,
    start_step: int,
    workers: int,
    layout: tuple[ShardSamples, ...],
    pin: bool = False,
    skipped=None,
    cache_counts=None,
) -> Iterator[Batch]:
    """One rank's batches of ``epoch`` from ``start_step`` on, read by ``workers`` loader
    processes: what training and ``train --data-only`` both iterate."""
    stream = MattingStream(
        shards,
        cfg,
        rank,
        world_size,
        epoch,
        start_step,
        cfg.loader.corrupt,
        skipped,
        digests=cfg.runtime.log_batches,
        layout=layout,
        cache_counts=cache_counts,
    )
    return batches(iter(make_loader(stream, workers)), cfg.train.batch_size, pin)
