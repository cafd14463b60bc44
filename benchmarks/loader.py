"""Training-loader throughput: our augmentation pipeline against a plain PIL loader.

Builds a realistic shard set (1500x1000 foregrounds, 640x480 backgrounds, as
benchmarks/compose.py makes them) and measures, in one process each (samples/s per loader
process), on the same raw samples:

- ours: ``training.data.MattingStream``'s per-sample work: read only fg, bg, alpha and json from
  the tar, decode with OpenCV, fit the background, make the trimap, crop as uint8, resize the
  crop, flip, and only then convert the small crop to float tensors;
- plain: the way the reference does it: decode every member (merged, alpha, fg, bg, trimap) with
  PIL, convert each whole image to float32, fit the background, make the trimap, then crop,
  resize, flip and normalise in float.

Prints one JSON object. Target (issue 7): ours at least 3x the plain loader.

    python benchmarks/loader.py [--samples 96]
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
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

import webdataset as wds  # noqa: E402
from compose import make_inputs  # noqa: E402 - sibling benchmark script
from machine import cpu_model  # noqa: E402

from configs import load_config  # noqa: E402
from pipeline.build import build  # noqa: E402
from shards.cluster import ClusterOptions  # noqa: E402
from shards.mattes import BackgroundFit, trimap_from_alpha  # noqa: E402
from shards.reader import raw_samples, resolve_shards  # noqa: E402
from shards.schema import TRAIN_MEMBERS  # noqa: E402
from training.augment import crop_sample, to_tensors  # noqa: E402
from training.data import decode_sample, sample_rng  # noqa: E402
from training.normalise import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def plain_sample(raw: dict, cfg, rng: np.random.Generator) -> dict:
    """Decode everything with PIL, go to float at full resolution, then augment."""

    def pil(name: str, mode: str) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(raw[name])).convert(mode), np.float32) / 255

    merged = pil("merged.png", "RGB")
    fg = pil(next(k for k in raw if k.startswith("fg.")), "RGB")
    bg = pil(next(k for k in raw if k.startswith("bg.")), "RGB")
    alpha = pil("alpha.png", "L")
    _stored_trimap = pil("trimap.png", "L")
    fit = BackgroundFit.from_json(json.loads(raw["json"])["bg_fit"])
    if fit.resize is not None:
        bg = cv2.resize(bg, fit.resize, interpolation=cv2.INTER_CUBIC)
    bg = bg[: fit.height, : fit.width]
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
    out["image"] = np.concatenate(
        [(out["merged"] - IMAGENET_MEAN) / IMAGENET_STD, out["trimap"][..., None]], axis=2
    )
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=96, help="train samples to build")
    parser.add_argument("--foregrounds", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
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
        t = cfg.train

        def ours() -> int:
            n = 0
            for url in shards.urls:
                for raw in raw_samples(url, TRAIN_MEMBERS):  # reads only fg, bg, alpha, json
                    fg, bg, alpha = decode_sample(raw)
                    crops = crop_sample(fg, bg, alpha, t, sample_rng(t.seed, 0, raw.key))
                    sample = to_tensors(crops)
                    assert sample["image"].shape == (4, t.input_size, t.input_size)
                    n += 1
            return n

        def plain() -> int:
            rng = np.random.default_rng(0)
            n = 0
            for raw in wds.WebDataset(list(shards.urls), shardshuffle=False):
                sample = plain_sample(raw, t, rng)
                assert sample["image"].shape == (t.input_size, t.input_size, 4)
                n += 1
            return n

        for shard in shards.urls:  # warm the page cache
            Path(shard).read_bytes()
        rates = {}
        for name, fn in (("ours", ours), ("plain", plain)):
            best = math.inf
            for _ in range(args.repeats):
                start = time.perf_counter()
                n = fn()
                best = min(best, time.perf_counter() - start)
            rates[name] = n / best
            log(f"{name}: {rates[name]:.1f} samples/s")
        h100_step_ms, batch = 50.0, t.batch_size  # the H100 target per training step
        needed = batch / (h100_step_ms / 1000)
        result = {
            "machine": {"cpus": os.cpu_count(), "cpu": cpu_model()},
            "samples": shards.total,
            "mean_megapixels": 1.5,
            "input_size": t.input_size,
            "ours_samples_per_s_per_process": round(rates["ours"], 2),
            "plain_pil_samples_per_s_per_process": round(rates["plain"], 2),
            "speedup": round(rates["ours"] / rates["plain"], 2),
            "target_speedup": 3.0,
            "h100": {
                "assumed_step_ms": h100_step_ms,
                "batch": batch,
                "samples_per_s_needed": needed,
                "loader_processes_needed": math.ceil(needed / rates["ours"]),
                "plain_loader_processes_needed": math.ceil(needed / rates["plain"]),
            },
        }
        print(json.dumps(result, indent=1))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
