"""``indexnet train --data-only``: the training data path alone, timed, to size a GPU's loaders.

It runs exactly what training runs up to the forward pass (the same order, augmentation and
loader processes, ``training.data.stream.epoch_batches``; each batch copied to ``--device`` and
composed there, ``training.data.stream.device_inputs``), with no model and no optimiser, for
``--max-steps`` steps (default: one epoch). Rates are measured from the first batch to the
last, so the loader processes' start-up is left out, and on CUDA after a synchronise so that
the copies and the composition are counted.

It writes ``RUN/data_only.json`` (``DataOnlyReport``) and says how many loader processes one
GPU needs to be fed at ``loader.target_step_ms`` per step of ``train.batch_size`` samples, and
the bytes budget: the bytes read per sample, the MB/s per loader process, and the MB/s of shard
reads one GPU and one 8-GPU node need at that step time (a lean set, ``pipeline build
--lean-train``, needs about a quarter of a full set's).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from configs import Config
from shards.atomic import atomic_write_bytes
from shards.cache import ShardCache
from shards.reader import ShardList, ShardSamples, resolve_shards, shard_samples
from training.data.batching import default_workers, device_inputs, epoch_batches
from training.data.stream import check_order
from training.distributed import device_for, join_process_group
from training.models.registry import get_family

REPORT_NAME = "data_only.json"
GPUS_PER_NODE = 8  # the node the report sizes the shard reads of


@dataclass(frozen=True)
class DataOnlyReport:
    """What ``--data-only`` measured (rates are over every rank; ``per_process`` per loader
    process of one rank)."""

    samples: int  # samples timed: those after the first batch, over every rank
    seconds: float  # from the first batch to the last
    samples_per_s: float  # over every rank
    loader_workers: int  # loader processes per rank (0: the training process loads)
    per_process_samples_per_s: float  # one rank's rate / its loader processes
    steps: int  # batches taken per rank, the first included
    batch_size: int  # per rank
    world_size: int
    device: str
    ms_per_step: float  # mean wall time per step after the first
    startup_s: float  # from the start to the first batch (the loaders' start-up)
    cache_hit_rate: float | None  # decoded fg/alpha served from the cache (None: cache off)
    target_step_ms: float  # loader.target_step_ms
    samples_per_s_needed: float  # per GPU: batch_size / target step time
    loader_processes_needed: int  # per GPU, at per_process_samples_per_s
    suggested_loader_workers: int | None  # the least divisor of the batch that many (None: none)
    # the bytes budget: what a sample costs to read, and what feeding the GPUs takes
    lean_train: bool  # the set's train samples hold only what training reads (--lean-train)
    bytes_per_sample: int  # the mean bytes read per train sample (its members and tar headers)
    mb_per_s: float  # read over every rank, at samples_per_s
    per_process_mb_per_s: float  # read by one loader process
    mb_per_s_needed: float  # per GPU at target_step_ms
    node_mb_per_s_needed: float  # per node of GPUS_PER_NODE GPUs at target_step_ms

    def summary(self) -> str:
        """Lines for the console."""
        processes = max(1, self.loader_workers)
        lines = [
            f"{self.samples} samples in {self.seconds:.2f} s: {self.samples_per_s:.1f} samples/s "
            f"on {self.world_size} rank(s) ({self.ms_per_step:.1f} ms per step of "
            f"{self.batch_size}), {self.per_process_samples_per_s:.1f} samples/s per loader "
            f"process ({processes} per rank{', in the training process' if not self.loader_workers else ''})",  # noqa: E501
            f"start-up {self.startup_s:.2f} s; decode cache hit rate "
            + ("off" if self.cache_hit_rate is None else f"{100 * self.cache_hit_rate:.1f}%"),
            f"a GPU stepping every {self.target_step_ms:g} ms at batch {self.batch_size} needs "
            f"{self.samples_per_s_needed:.0f} samples/s, {self.loader_processes_needed} loader "
            "process(es) at this rate: "
            + (
                f"--loader-workers {self.suggested_loader_workers}"
                if self.suggested_loader_workers
                else "more than --batch-size can have (a divisor of it); add ranks or CPU speed"
            ),
            f"bytes read per sample: {self.bytes_per_sample / 1e6:.3f} MB ("
            + ("a lean set" if self.lean_train else "a full set; --lean-train reads less")
            + f"): {self.mb_per_s:.1f} MB/s here, {self.per_process_mb_per_s:.1f} MB/s per "
            f"loader process; at {self.target_step_ms:g} ms per step one GPU needs "
            f"{self.mb_per_s_needed:.1f} MB/s, one {GPUS_PER_NODE}-GPU node "
            f"{self.node_mb_per_s_needed:.1f} MB/s of shard reads",
        ]
        return "\n".join(lines)


def bytes_per_sample(shards: ShardList, layout: tuple[ShardSamples, ...]) -> float:
    """The mean bytes the loader reads per sample of ``shards``: its span in the tar (members
    and their headers) from ``samples.parquet``; the shards' bytes per sample in sets built
    before spans were recorded."""
    lengths = [n for s in layout for n in (s.lengths or ())]
    if lengths and len(lengths) == shards.total:
        return sum(lengths) / len(lengths)
    infos = [shards.info(url) for url in shards.urls]
    return sum(i.bytes for i in infos if i is not None) / max(1, shards.total)


def measure_data(cfg: Config, options) -> DataOnlyReport:
    """Run the data path of ``train(cfg, options)`` alone and time it; writes
    ``options.out/data_only.json`` on rank 0.

    Args:
        cfg: the resolved config (its train, loader, augment and runtime sections).
        options: a ``training.run.trainer.RunOptions`` (shards, out, max_steps, loader_workers,
            device; ``resume`` and ``backbone`` are ignored).

    Raises:
        ValueError: bad options or shard sources (named).
        shards.reader.ShardError: a corrupt shard or sample under the ``stop`` policy.
    """
    start = time.perf_counter()
    batch_size, target_step_ms = cfg.train.batch_size, cfg.loader.target_step_ms
    owns_group = not dist.is_initialized()
    rank, world, local_rank = join_process_group(options.device)
    try:
        device = device_for(options.device, local_rank)
        storage = cfg.storage
        cache = ShardCache.of(storage.cache_dir, storage.cache_limit_gb)
        shards = resolve_shards(options.shards, "train", options.index, storage.options, cache)
        workers = (
            default_workers(batch_size)
            if options.loader_workers is None
            else (options.loader_workers)
        )
        per_epoch = check_order(shards, cfg, world, workers).steps
        layout = shard_samples(shards)
        total = options.max_steps if options.max_steps is not None else per_epoch
        if total < 2:
            raise ValueError(
                f"--data-only times from the first batch to the last, so it needs at least 2 "
                f"steps; got {total} (pass --max-steps 2 or more)"
            )
        make_input = get_family(cfg.model.family).make_input
        counts = torch.multiprocessing.get_context("fork").Array("q", 2)  # cache hits, lookups
        first = last = None
        steps = 0
        while steps < total:
            epoch, in_epoch = divmod(steps, per_epoch)
            loader = epoch_batches(
                shards, cfg, rank, world, epoch, in_epoch, workers, layout,
                pin=device.type == "cuda", cache_counts=counts,
            )  # fmt: skip
            for batch in loader:
                inputs = device_inputs(batch.tensors, device, make_input, cfg.runtime.channels_last)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                del inputs
                steps += 1
                last = time.perf_counter()
                first = first or last
                if steps == total or steps % per_epoch == 0:
                    break
            del loader  # ends this epoch's loader processes
        timed = torch.tensor([float((steps - 1) * batch_size), last - first], dtype=torch.float64)
        if world > 1:
            dist.all_reduce(timed)  # samples summed; seconds summed, then averaged below
        samples, seconds = int(timed[0]), float(timed[1]) / world
        rate = samples / seconds if seconds > 0 else math.nan
        per_process = rate / world / max(1, workers)
        needed = batch_size / (target_step_ms / 1000)
        mb = bytes_per_sample(shards, layout) / 1e6
        processes = math.ceil(needed / per_process) if per_process > 0 else 0
        report = DataOnlyReport(
            samples=samples,
            seconds=round(seconds, 4),
            samples_per_s=round(rate, 2),
            loader_workers=workers,
            per_process_samples_per_s=round(per_process, 2),
            steps=steps,
            batch_size=batch_size,
            world_size=world,
            device=str(device),
            ms_per_step=round(1000 * seconds / max(1, steps - 1), 2),
            startup_s=round(first - start, 3),
            cache_hit_rate=round(counts[0] / counts[1], 4) if counts[1] else None,
            target_step_ms=target_step_ms,
            samples_per_s_needed=round(needed, 2),
            loader_processes_needed=processes,
            suggested_loader_workers=next(
                (w for w in range(max(1, processes), batch_size + 1) if batch_size % w == 0),
                None,
            ),
            lean_train=bool(shards.index.meta.get("lean_train", False)),
            bytes_per_sample=round(mb * 1e6),
            mb_per_s=round(rate * mb, 2),
            per_process_mb_per_s=round(per_process * mb, 2),
            mb_per_s_needed=round(needed * mb, 2),
            node_mb_per_s_needed=round(GPUS_PER_NODE * needed * mb, 2),
        )
        if rank == 0:
            out = Path(options.out)
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(
                out / REPORT_NAME, (json.dumps(asdict(report), indent=1) + "\n").encode()
            )
        return report
    finally:
        if owns_group and dist.is_initialized():
            dist.destroy_process_group()
