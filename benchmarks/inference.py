"""Full-resolution inference with metrics (`indexnet evaluate run`), and very large images.

In one run:

1. ``evaluation.run.evaluate`` on AIM-500-sized validation composites (1500x1000 and
   1000x1500 foregrounds as benchmarks/compose.py makes them, over COCO-sized backgrounds):
   samples/s end to end (decode, predict, write the PNG, metrics in a worker process), and the
   share of that time spent in the model, so one sees whether scoring ever waits on metrics.
2. One 4000x3000 image (a synthetic photo, matte and trimap of that size) through
   ``predict_alpha`` in a fresh process each: tiled (the default: images above 4 MP in 1536
   tiles) and, with ``--untiled``, whole; wall time and the process's peak resident memory.
3. What tiling costs in accuracy, with ``--checkpoint`` (a trained model): a 3000x2000 image
   predicted whole and tiled at a few tile sides; the mean absolute difference between the two
   on the unknown region, in 8-bit levels, and the SAD of each against the truth.

Weights are random unless ``--checkpoint`` is given: speed does not depend on them.

    python benchmarks/inference.py [--device cpu|cuda] [--checkpoint CKPT] [--untiled]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from compose import make_inputs  # noqa: E402 - sibling benchmark script

from configs import load_config  # noqa: E402
from evaluation.run import EvalOptions, evaluate  # noqa: E402
from pipeline.build import build  # noqa: E402
from pipeline.sample_data import synthetic_matte, synthetic_photo  # noqa: E402
from shards.cluster import ClusterOptions  # noqa: E402
from shards.mattes import trimap_from_alpha  # noqa: E402
from shards.metrics import sad  # noqa: E402
from training.checkpoint import load_for_inference, save_checkpoint  # noqa: E402
from training.inference import enable_huge_pages, predict_alpha  # noqa: E402
from training.models.indexnet.network import IndexNet  # noqa: E402


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def large_image(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A composite (RGB), its trimap and its alpha, h x w, from the sample-data generators."""
    rng = np.random.default_rng(seed)
    alpha = synthetic_matte(rng, h, w)
    fg, bg = synthetic_photo(rng, h, w, 0), synthetic_photo(rng, h, w, 2)
    a = alpha[..., None].astype(np.float32) / 255
    merged = np.rint(a * fg + (1 - a) * bg).astype(np.uint8)
    return merged, trimap_from_alpha(alpha, 20), alpha


def one_large(args: argparse.Namespace) -> dict:
    """Child process: predict one large image, report time and peak memory."""
    torch.manual_seed(0)
    model = (load_for_inference(args.checkpoint) if args.checkpoint else IndexNet().eval()).to(
        args.device
    )
    h, w = args.one_large
    rgb, trimap, _ = large_image(h, w)
    start = time.perf_counter()
    predict_alpha(model, rgb, trimap, args.device, max_pixels=args.max_pixels)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": round(seconds, 1), "peak_rss_gib": round(peak_kib / 2**20, 2)}


def in_child(args: argparse.Namespace, max_pixels: int, size: tuple[int, int]) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--device",
        args.device,
        "--one-large",
        str(size[0]),
        str(size[1]),
        "--max-pixels",
        str(max_pixels),
    ]
    if args.checkpoint:
        cmd += ["--checkpoint", str(args.checkpoint)]
    if args.no_huge_pages:
        cmd.append("--no-huge-pages")
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        return {"failed": done.stderr.strip().splitlines()[-1:] or done.returncode}
    return json.loads(done.stdout)


def tiling_cost(args: argparse.Namespace) -> dict:
    """Whole against tiled predictions of one 3000x2000 image with a trained model."""
    model = load_for_inference(args.checkpoint).to(args.device)
    rgb, trimap, alpha = large_image(2000, 3000, seed=1)
    whole = predict_alpha(model, rgb, trimap, args.device, max_pixels=10**9)
    unknown = trimap == 128
    report = {"image": "3000x2000", "sad_whole": round(sad(whole, alpha, trimap), 3)}
    for tile in (1536, 1024, 512):
        tiled = predict_alpha(model, rgb, trimap, args.device, max_pixels=1, tile=tile)
        diff = np.abs(tiled[unknown].astype(np.int16) - whole[unknown])
        report[f"tile_{tile}"] = {
            "mean_abs_diff_levels": round(float(diff.mean()), 3),
            "p99_abs_diff_levels": int(np.percentile(diff, 99)),
            "sad": round(sad(tiled, alpha, trimap), 3),
        }
    return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--checkpoint", type=Path, help="a trained model (default: random)")
    parser.add_argument("--foregrounds", type=int, default=4, help="validation foregrounds")
    parser.add_argument("--bgs-per-val-fg", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="metric processes")
    parser.add_argument("--untiled", action="store_true", help="also predict 4000x3000 whole")
    parser.add_argument(
        "--no-huge-pages", action="store_true", help="leave THP_MEM_ALLOC_ENABLE unset"
    )
    parser.add_argument("--one-large", type=int, nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--max-pixels", type=int, default=4_000_000, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if not args.no_huge_pages:
        enable_huge_pages()  # as the commands do
    if args.one_large:
        return one_large(args)
    report: dict = {
        "machine": {
            "nproc": os.cpu_count(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
        },
        "weights": str(args.checkpoint) if args.checkpoint else "random",
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fgs = args.foregrounds + 1  # one train foreground: a build needs both splits
        data_dir, bg_dir = make_inputs(root / "inputs", fgs, fgs * args.bgs_per_val_fg + 4, 0)
        cfg = load_config(
            overrides=["data.bgs_per_train_fg=1", f"data.bgs_per_val_fg={args.bgs_per_val_fg}"]
        )
        log("building validation shards")
        built = build(
            data_dir,
            bg_dir,
            cfg,
            root / "shards",
            ClusterOptions(workers=2),
            val_count=args.foregrounds,
        )
        assert built.complete
        checkpoint = args.checkpoint
        if checkpoint is None:
            torch.manual_seed(0)
            checkpoint = save_checkpoint(root / "random.pt", IndexNet())
        log("evaluate run")
        result = evaluate(
            EvalOptions(
                checkpoint,
                str(root / "shards" / "validation"),
                root / "eval",
                args.device,
                args.workers,
                contact_samples=0,
            )
        )
        n = result.scores.count
        report["evaluate_run"] = {
            "samples": n,
            "megapixels_per_sample": 1.5,
            "samples_per_s": round(result.samples_per_second, 3),
            "s_per_sample": round(result.scores.seconds / n, 3),
            "model_s_per_sample": round(result.inference_seconds / n, 3),
            "share_in_model": round(result.inference_seconds / result.scores.seconds, 3),
            "metric_workers": args.workers,
        }
    log("4000x3000, tiled")
    report["large_4000x3000_tiled"] = in_child(args, 4_000_000, (3000, 4000))
    if args.untiled:
        log("4000x3000, whole")
        report["large_4000x3000_whole"] = in_child(args, 10**9, (3000, 4000))
    if args.checkpoint:
        log("what tiling costs: 3000x2000 whole and tiled")
        report["tiling_cost"] = tiling_cost(args)
    return report


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
