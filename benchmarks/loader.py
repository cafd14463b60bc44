"""Training-loader throughput: samples/s per loader process, three ways, on the same shards.

Builds a realistic shard set (AIM-500-sized 1500x1000 foregrounds as JPEG, COCO-sized
640x480 backgrounds, as benchmarks/compose.py makes them) and measures, on it:

- plain: a plain full-decode PIL loader, the reference's way: decode the members it uses
  (fg, bg, alpha) with PIL, convert each whole image to float32, fit the background,
  composite and make the trimap at full resolution, then crop, resize, flip and normalise;
- baseline: our loader before issue 13 (``MattingStream(ship="float", cache_bytes=0)``):
  OpenCV decodes of every sample's fg, bg and alpha, the crop taken in uint8, and the float
  tensors made in the loader process;
- ours: ``MattingStream`` as training runs it: fg and alpha decoded once per visit
  (``training.data.decode_cache``, with the matte's distance map made once), uint8 crops shipped
  (8 bytes a pixel), the float work left to the training step on the device.

baseline and ours run in process (``--loader-workers 0``) and through 1 and 2 DataLoader
worker processes, through the public ``make_loader``/``batches``, exactly as training reads
them; per-process rates divide by the worker count. ``compose_ms_per_sample`` is what the
training step adds on the CPU (``device_inputs``; on a GPU it is a few kernels).

It also replays the default layout (43,200 samples of 450 foregrounds, 64 per shard, global
batch 16, 4 workers) through ``plan_uses`` and ``DecodeCache`` with the real order, to give
the hit rate training sees there at the default bound (the shards of an epoch are shuffled, so
a foreground is mostly decoded once per shard it is in, not once per epoch). The bench set is
small, so its hit rate is higher; ours without the cache gives the other end, and the rate at
the default layout's hit rate follows (the time per sample is linear in the hit rate). That
rate gives the loader processes one H100 needs at a 50 ms step of 16.

Prints one JSON object. Target (issue 13): ours at least 7x the plain loader per process.

    python benchmarks/loader.py [--samples 240] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

import webdataset as wds  # noqa: E402
from compose import make_inputs  # noqa: E402 - sibling benchmark script
from machine import cpu_model  # noqa: E402

from configs import load_config  # noqa: E402
from pipeline.build import build  # noqa: E402
from shards.cluster import ClusterOptions  # noqa: E402
from shards.mattes import BackgroundFit, trimap_from_alpha  # noqa: E402
from shards.reader import ShardSamples, raw_samples, resolve_shards  # noqa: E402
from training.data.batching import batches, device_inputs, make_loader  # noqa: E402
from training.data.decode_cache import MB, DecodeCache, plan_uses  # noqa: E402
from training.data.order import epoch_order, worker_slots  # noqa: E402
from training.data.stream import MattingStream  # noqa: E402
from training.models.imagenet import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from training.models.registry import get_family  # noqa: E402

make_input = get_family("indexnet").make_input  # the network input the benchmark composes

H100_STEP_MS, H100_BATCH = 50.0, 16  # the target training step on one H100


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _member(files: dict, name: str) -> bytes:
    """A member's bytes from a sample's ``{file: bytes}`` (a WebDataset dict, say)."""
    return next(data for file, data in files.items() if file.split(".")[0] == name)


def plain_sample(files: dict, cfg, rng: np.random.Generator) -> np.ndarray:
    """Decode fg, bg and alpha with PIL, go to float at full resolution, then augment."""

    def pil(name: str, mode: str) -> np.ndarray:
        data = _member(files, name)
        return np.asarray(Image.open(io.BytesIO(data)).convert(mode), np.float32) / 255

    fg, bg, alpha = pil("fg", "RGB"), pil("bg", "RGB"), pil("alpha", "L")
    fit = BackgroundFit.from_json(json.loads(_member(files, "json"))["bg_fit"])
    if fit.resize is not None:
        bg = cv2.resize(bg, fit.resize, interpolation=cv2.INTER_CUBIC)
    bg = bg[: fit.height, : fit.width]
    merged = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
    lo, hi = cfg.trimap_radius
    trimap = trimap_from_alpha(np.rint(alpha * 255).astype(np.uint8), int(rng.integers(lo, hi + 1)))
    trimap = trimap.astype(np.float32) / 255
    h, w = alpha.shape
    side = int(rng.choice([s for s in cfg.crop_sizes if s <= min(h, w)] or [min(h, w)]))
    ys, xs = np.nonzero(trimap == 128 / 255)
    i = int(rng.integers(len(ys))) if len(ys) else 0
    cy, cx = (int(ys[i]), int(xs[i])) if len(ys) else (h // 2, w // 2)
    y0, x0 = min(max(cy - side // 2, 0), h - side), min(max(cx - side // 2, 0), w - side)
    out = {}
    size = (cfg.input_size, cfg.input_size)
    for name, arr in (("merged", merged), ("fg", fg), ("bg", bg), ("alpha", alpha)):
        out[name] = cv2.resize(
            arr[y0 : y0 + side, x0 : x0 + side], size, interpolation=cv2.INTER_CUBIC
        )
    out["trimap"] = cv2.resize(
        trimap[y0 : y0 + side, x0 : x0 + side], size, interpolation=cv2.INTER_NEAREST
    )
    if rng.random() < cfg.flip_prob:
        out = {k: v[:, ::-1] for k, v in out.items()}
    image = np.concatenate(
        [(out["merged"] - IMAGENET_MEAN) / IMAGENET_STD, out["trimap"][..., None]], axis=2
    )
    return np.ascontiguousarray(image)


def _best_rate(run, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        n = run()
        best = min(best, time.perf_counter() - start)
    return n / best


def _loader_rate(shards, cfg, workers: int, repeats: int, counts=None, **stream) -> float:
    """Samples/s of one epoch through make_loader + batches, timed from the first batch."""

    def run() -> tuple[int, float]:  # samples after the first batch, and their seconds
        s = MattingStream(shards, cfg, cache_counts=counts, **stream)
        got = batches(iter(make_loader(s, workers)), cfg.train.batch_size)
        next(got)  # start-up (worker processes, first reads) is not timed
        start = time.perf_counter()
        n = sum(cfg.train.batch_size for _ in got)
        return n, time.perf_counter() - start

    best = math.inf
    for _ in range(repeats):
        n, seconds = run()
        best = min(best, seconds / n)
    return 1 / best


def default_layout_hit_rate(cfg, workers: int, decoded_bytes: int) -> dict:
    """Replay the default layout's order through the cache (``np.empty`` arrays stand in for
    the decoded pixels: the order, the recorded hashes and the bound are the real ones)."""
    data = load_config().data
    fgs, per_fg, per_shard = 450, data.bgs_per_train_fg, data.samples_per_shard
    block = max(1, per_shard // 8)  # pipeline.plan: foregrounds interleaved in blocks of 8
    order = np.random.default_rng(0).permutation(fgs)
    sequence = [
        f"fg{fg}" for start in range(0, fgs, block)
        for _ in range(per_fg) for fg in order[start : start + block]
    ]  # fmt: skip
    counts = [per_shard] * (len(sequence) // per_shard)
    layout = tuple(
        ShardSamples(
            tuple(f"s{i}" for i in range(per_shard)),
            None,
            None,
            {
                name: tuple(sequence[j * per_shard : (j + 1) * per_shard])
                for name in ("fg", "alpha")
            },
        )
        for j in range(len(counts))
    )
    t, loader = cfg.train, cfg.loader
    epoch = epoch_order(tuple(counts), t.seed, 0, t.batch_size, loader.shuffle_window)
    hits = lookups = 0
    per_member = {"fg": decoded_bytes * 3 // 4, "alpha": decoded_bytes // 4}
    for worker in range(workers):
        streams = [epoch.streams[slot] for slot in worker_slots(t.batch_size, worker, workers)]
        refs = [stream.at(step) for step in range(epoch.steps) for stream in streams]
        cache = DecodeCache(
            loader.decode_cache_mb * MB, lambda name, _: np.empty(per_member[name], np.uint8)
        )
        for use in plan_uses(refs, layout):
            for name in ("fg", "alpha"):
                cache.decode(name, use[name].sha256.encode(), use[name])
        hits, lookups = hits + cache.hits, lookups + cache.lookups
    return {
        "samples": len(sequence),
        "foregrounds": fgs,
        "samples_per_shard": per_shard,
        "global_batch": t.batch_size,
        "loader_workers": workers,
        "decode_cache_mb": loader.decode_cache_mb,
        "decoded_mb_per_foreground": round(decoded_bytes / MB, 2),
        "hit_rate": round(hits / lookups, 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=240, help="train samples to build")
    parser.add_argument("--foregrounds", type=int, default=6, help="of which one validation")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)  # one core per loader process, as in a DataLoader worker
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="bench-loader-"))
    try:
        per_fg = max(1, math.ceil(args.samples / (args.foregrounds - 1)))
        data_dir, bg_dir = make_inputs(
            root / "inputs", args.foregrounds, per_fg * args.foregrounds + 8, 0
        )
        cfg = load_config(overrides=[f"data.bgs_per_train_fg={per_fg}", "data.bgs_per_val_fg=2",
                                     "data.samples_per_shard=16"])  # fmt: skip
        out = root / "shards"
        log(f"building {per_fg * (args.foregrounds - 1)} train samples in {out}")
        assert build(data_dir, bg_dir, cfg, out, ClusterOptions(workers=2)).complete
        shards = resolve_shards(str(out))
        t, aug = cfg.train, cfg.augment
        records = [
            json.loads(raw.files["json"])
            for url in shards.urls
            for raw in raw_samples(url, ("json",))
        ]
        megapixels = float(np.mean([r["height"] * r["width"] for r in records])) / 1e6

        def plain() -> int:  # the loader one writes with WebDataset and PIL
            rng = np.random.default_rng(0)
            n = 0
            for files in wds.WebDataset(list(shards.urls), shardshuffle=False):
                assert plain_sample(files, aug, rng).shape == (aug.input_size, aug.input_size, 4)
                n += 1
            return n

        rates: dict[str, float] = {"plain": _best_rate(plain, args.repeats)}
        log(f"plain: {rates['plain']:.1f} samples/s")
        hit_rates = {}
        for workers in (0, 1, 2):
            for name, stream in (
                ("baseline", {"ship": "float", "cache_bytes": 0, "make_input": make_input}),
                ("ours", {}),
            ):
                counts = torch.multiprocessing.get_context("fork").Array("q", 2)
                got = _loader_rate(shards, cfg, workers, args.repeats, counts, **stream)
                rates[f"{name}_{workers}"] = got
                if name == "ours":
                    hit_rates[f"{workers}_workers"] = round(counts[0] / counts[1], 4)
                log(f"{name} with {workers} loader worker(s): {got:.1f} samples/s")
        uncached = _loader_rate(shards, cfg, 1, args.repeats, cache_bytes=0)
        log(f"ours without the decode cache, 1 loader worker: {uncached:.1f} samples/s")
        sample = next(batches(iter(MattingStream(shards, cfg)), t.batch_size))
        start = time.perf_counter()
        for _ in range(5):
            device_inputs(sample.tensors, torch.device("cpu"), make_input)
        compose_ms = (time.perf_counter() - start) / 5 / t.batch_size * 1000

        def per_process(name: str, workers: int) -> float:
            return round(rates[f"{name}_{workers}"] / max(1, workers), 2)

        needed = H100_BATCH / (H100_STEP_MS / 1000)
        decoded = int(megapixels * 1e6 * 4)  # RGB + alpha bytes of a decoded foreground
        default = default_layout_hit_rate(cfg, 4, decoded)
        # the time per sample is linear in the hit rate: from the two measured points (the
        # bench set's rate, and no cache) to the default layout's rate
        measured = hit_rates["1_workers"]
        t_hit, t_none = 1 / rates["ours_1"], 1 / uncached
        at_default = 1 / (t_none + (t_hit - t_none) * default["hit_rate"] / measured)
        ours = round(at_default, 2)  # what sizes a GPU's loaders on the default layout
        result = {
            "machine": {"cpus": os.cpu_count(), "cpu": cpu_model()},
            "samples": shards.total,
            "mean_megapixels": round(megapixels, 3),
            "input_size": aug.input_size,
            "batch_size": t.batch_size,
            "plain_pil_samples_per_s": round(rates["plain"], 2),
            "per_process_samples_per_s": {
                name: {f"{w}_workers": per_process(name, w) for w in (0, 1, 2)}
                for name in ("baseline", "ours")
            },
            "ours_cache_hit_rate": hit_rates,
            "ours_without_cache_1_worker": round(uncached, 2),
            "ours_at_default_layout_hit_rate_1_worker": ours,
            "compose_ms_per_sample_cpu": round(compose_ms, 3),
            "speedup_vs_plain": {
                "baseline": round(per_process("baseline", 1) / rates["plain"], 2),
                "ours": round(per_process("ours", 1) / rates["plain"], 2),
                "ours_at_default_layout_hit_rate": round(ours / rates["plain"], 2),
                "ours_without_cache": round(uncached / rates["plain"], 2),
            },
            "target_speedup": 7.0,
            "default_layout": default,
            "h100": {
                "assumed_step_ms": H100_STEP_MS,
                "batch": H100_BATCH,
                "samples_per_s_needed": needed,
                "loader_processes_needed": math.ceil(needed / ours),
                "baseline_loader_processes_needed": math.ceil(needed / per_process("baseline", 1)),
                "plain_loader_processes_needed": math.ceil(needed / rates["plain"]),
            },
        }
        print(json.dumps(result, indent=1))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
