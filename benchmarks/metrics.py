"""Speed of the matting metrics: ours against the plain reference, and 1,000 images scored.

Synthetic AIM-500-sized mattes (1500x1000 and 1000x1500, 1.5 MP; ``pipeline.sample_data``'s
mattes: a soft body touching the border, a hole, hair strands, a semi-transparent veil), the
trimap of docs/reference.md section 3 with an unknown band of ``--radius`` pixels, and a prediction
that errs the way networks do (blurred, noisy, a missed and a spurious blob, clipped, then forced
to 0/255 outside the unknown region as the protocol does). In one run:

- ms per image for each metric, ours (``evaluation.metrics``, OpenCV on one thread) and the
  plain reference (``metrics_reference.py`` beside this file: a literal scipy.ndimage
  transcription of the MATLAB code), best of ``--repeats`` per image, averaged over
  ``--images`` images; their ratio; the largest relative difference between the two;
- ``score_folder`` end to end (list, decode three PNGs per image, all four metrics, csv and
  summary) on ``--score-images`` images with ``--workers`` processes, and on a tenth of them
  with one worker. The folders hold ``--distinct`` different triplets, hard-linked under
  ``--score-images`` names, so the page cache is warm: decoding is timed, the disk is not.

Prints one JSON object. Targets (issue 6): the four metrics together >= 5x faster than the
reference per image; 1,000 images scored in under 2 minutes on 2 cores.

    python benchmarks/metrics.py [--images 6] [--score-images 1000] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import scipy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import cpu_model  # noqa: E402 - sibling module
from metrics_reference import REFERENCE  # noqa: E402 - sibling module

from evaluation.score import score_folder  # noqa: E402
from pipeline.sample_data import synthetic_matte  # noqa: E402
from shards.mattes import trimap_from_alpha  # noqa: E402
from shards.metrics import METRICS, all_metrics, conn, grad, mse, sad  # noqa: E402

OURS = {"sad": sad, "mse": mse, "grad": grad, "conn": conn}
SIZES = ((1000, 1500), (1500, 1000))  # (height, width): AIM-500-like, both orientations


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_triplet(seed: int, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(pred, gt, trimap)``, (H, W) uint8, 1.5 MP, deterministic in ``seed``."""
    rng = np.random.default_rng([seed, 6])
    h, w = SIZES[seed % 2]
    gt = synthetic_matte(rng, h, w)
    trimap = trimap_from_alpha(gt, radius)
    pred = cv2.GaussianBlur(gt.astype(np.float32), (0, 0), rng.uniform(0.8, 2.0))
    pred += rng.normal(0, 6, (h, w)).astype(np.float32)  # noisy alpha in the band
    for value in (0.0, 255.0):  # a missed and a spurious blob on the boundary
        ys, xs = np.nonzero(trimap == 128)
        j = int(rng.integers(ys.size))
        cv2.circle(pred, (int(xs[j]), int(ys[j])), int(rng.integers(8, 25)), value, -1)
    pred = np.clip(np.rint(pred), 0, 255).astype(np.uint8)
    pred[trimap == 0], pred[trimap == 255] = 0, 255  # the protocol's post-processing
    return pred, gt, trimap


def best_ms(fn, args, repeats: int) -> tuple[float, float]:
    """(best time in ms over ``repeats`` calls, the value returned)."""
    best, value = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn(*args)
        best = min(best, time.perf_counter() - start)
    return best * 1e3, value


def per_metric(images: list, repeats: int) -> dict:
    """Mean over images of the best-of-``repeats`` ms, ours and the reference, per metric."""
    ours = {name: [] for name in [*METRICS, "all_metrics"]}
    ref = {name: [] for name in METRICS}
    worst = dict.fromkeys(METRICS, 0.0)
    for i, triplet in enumerate(images):
        log(f"  image {i + 1}/{len(images)}")
        for name in METRICS:
            ms, value = best_ms(OURS[name], triplet, repeats)
            ours[name].append(ms)
            ref_ms, ref_value = best_ms(REFERENCE[name], triplet, min(repeats, 2))
            ref[name].append(ref_ms)
            if ref_value:
                worst[name] = max(worst[name], abs(value - ref_value) / abs(ref_value))
        ours["all_metrics"].append(best_ms(all_metrics, triplet, repeats)[0])
    ours_ms = {name: float(np.mean(times)) for name, times in ours.items()}
    ref_ms = {name: float(np.mean(times)) for name, times in ref.items()}
    ref_ms["four_together"] = sum(ref_ms[m] for m in METRICS)
    ours_ms["four_together"] = ours_ms.pop("all_metrics")
    ratio = {name: ref_ms[name] / ours_ms[name] for name in ref_ms}
    return {"ms_per_image": {"ours": ours_ms, "reference": ref_ms}, "speedup": ratio,
            "max_relative_difference": worst}  # fmt: skip


def write_folders(root: Path, distinct: int, count: int, radius: int) -> tuple[Path, Path, Path]:
    """pred/, gt/, trimap/ holding ``count`` names hard-linked to ``distinct`` PNG triplets."""
    dirs = [root / name for name in ("pred", "gt", "trimap")]
    sources = root / "sources"
    for folder in [*dirs, sources]:
        folder.mkdir(parents=True)
    for j in range(distinct):
        for folder, arr in zip(
            ("pred", "gt", "trimap"), make_triplet(1000 + j, radius), strict=True
        ):
            cv2.imwrite(str(sources / f"{folder}_{j}.png"), arr)
    for i in range(count):
        for folder in dirs:
            os.link(sources / f"{folder.name}_{i % distinct}.png", folder / f"o_{i:05d}.png")
    return dirs[0], dirs[1], dirs[2]


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the pool's workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed_score(dirs: tuple[Path, Path, Path], out: Path, workers: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``score_folder``, worker start-up included."""
    start, cpu = time.perf_counter(), _cpu_seconds()
    result = score_folder(*dirs, out=out, workers=workers)
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    log(f"  {result.count} images, {workers} worker(s): {seconds:.1f} s, CPU {cpu:.1f} s")
    return seconds, cpu


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--images", type=int, default=6, help="images timed metric by metric")
    parser.add_argument("--repeats", type=int, default=3, help="runs of ours per image (best)")
    parser.add_argument("--radius", type=int, default=15, help="trimap unknown band radius, px")
    parser.add_argument("--score-images", type=int, default=1000, help="images scored")
    parser.add_argument("--distinct", type=int, default=20, help="different triplets among them")
    parser.add_argument("--workers", type=int, default=2, help="processes scoring images")
    parser.add_argument("--keep", type=Path, help="keep the scored folders here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cv2.setNumThreads(1)  # per core, as the reference: the scorer parallelises over images
    log(f"timing metrics on {args.images} images of 1.5 MP")
    images = [make_triplet(seed, args.radius) for seed in range(args.images)]
    unknown = float(np.mean([np.mean(t == 128) for _, _, t in images]))
    report = {
        "machine": {
            "cpu": cpu_model(),
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "opencv": cv2.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "images": {
            "sizes_wxh": [f"{w}x{h}" for h, w in SIZES],
            "timed": args.images,
            "trimap_radius": args.radius,
            "unknown_fraction": round(unknown, 4),
        },
        **per_metric(images, args.repeats),
    }
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-metrics-"))
    try:
        log(f"writing {args.score_images} images ({args.distinct} distinct) to {root}")
        dirs = write_folders(root, args.distinct, args.score_images, args.radius)
        log("scoring")
        many, many_cpu = timed_score(dirs, root / "scores", args.workers)
        sub = max(1, args.score_images // 10)
        sub_dirs = write_folders(root / "sub", args.distinct, sub, args.radius)
        one, _ = timed_score(sub_dirs, root / "sub" / "scores", 1)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    per_image_one = one / sub
    report["score_folder"] = {
        "images": args.score_images,
        "distinct": args.distinct,
        "workers": args.workers,
        "seconds": round(many, 2),
        "cpu_seconds": round(many_cpu, 2),
        "images_per_second": round(args.score_images / many, 2),
        "one_worker": {
            "images": sub,
            "seconds": round(one, 2),
            "ms_per_image": round(per_image_one * 1e3, 1),
        },  # fmt: skip
        "speedup_vs_one_worker": round(per_image_one * args.score_images / many, 2),
    }
    speedup = report["speedup"]["four_together"]
    seconds_1000 = many / args.score_images * 1000
    report["targets"] = {
        "four_together_speedup": {"min": 5, "measured": round(speedup, 2), "met": speedup >= 5},
        "seconds_for_1000_images": {
            "max": 120,
            "measured": round(seconds_1000, 1),
            "met": seconds_1000 < 120,
        },  # fmt: skip
    }
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
