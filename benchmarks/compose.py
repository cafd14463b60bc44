"""Compositing throughput: our shard build against the reference recipe, per core and on workers.

Writes AIM-500-sized synthetic inputs (JPEG originals 1500x1000 in both orientations, 8-bit
masks, 0/128/255 trimaps) and COCO-sized background JPEGs to a temporary folder, then measures:

* ours, in process: ``pipeline.compose.build_shard`` over every shard task of the plan, in this
  one process (samples/s of one core);
* ours, the real build: ``pipeline.build.build`` on a local Dask cluster of 1 and of 2 worker
  processes (samples/s from the first shard submitted to the last one finished, and with the
  cluster's start-up included) and their ratio; beside it, the machine's own ceiling (the same
  shards in two plain processes, no Dask) and, as a diagnosis, the same builds with the
  ``MALLOC_TRIM_THRESHOLD_=65536`` that Dask's nanny sets by default (``shards.cluster`` unsets
  it); and whether every run wrote identical shards;
* the reference recipe on samples of the same plan, in this process with ``cv2.setNumThreads(1)``:
  ``cv2.imread`` fg, mask and bg, the Adobe fit, a float32 blend truncated by ``astype(uint8)``,
  ``cv2.imwrite`` PNG at compression 9; and, sample by sample, the same recipe writing with
  libpng at compression 1 and with our encoder (``shards.codec.encode_png``), so that the
  per-core speed-up splits into its sources (``speedup_split``): dropping PNG level 9, our
  encoder against libpng level 1, and the rest of our build; the encoders alone on the same
  merged images (``png_encoder``) give the first two without the rest of the recipe;
* bytes per sample of both, and the ``bg`` member we did not choose: the fitted background stored
  losslessly as PNG instead of the source bytes plus fit parameters (encode cost, bytes, loader
  cost).

Our measurements run ``--runs`` times, interleaved; the fastest is reported and all are listed.
Prints one JSON object to stdout; progress goes to stderr. ``--quick`` runs a small version;
``--encoders-only`` only the speed-up and its split (no Dask builds, no plain processes, no
bg-member alternative).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import cv2
import dask
import numpy as np
from machine import cpu_model

from configs import load_config
from pipeline.build import BuildProgress, build, prepare
from pipeline.compose import build_shard
from pipeline.plan import shard_tasks
from pipeline.sample_data import synthetic_matte, synthetic_photo
from shards.cluster import ClusterOptions
from shards.codec import decode_color, encode_png
from shards.index import read_index
from shards.mattes import apply_fit, fit_background, trimap_from_alpha

FG_SIZES = ((1000, 1500), (1500, 1000))  # (height, width), cycled: AIM-500-like, both orientations
BG_SIZES = ((480, 640), (640, 480))  # COCO-sized backgrounds, both orientations
FG_JPEG_QUALITY = 95
BG_JPEG_QUALITY = 90  # a common camera quality (COCO's own photos vary)
TRIMAP_RADIUS = 10
SPEEDUP_TARGET = 15.0  # ours per core / reference per core
SCALING_TARGET = 1.8  # 2 workers / 1 worker
_T0 = time.perf_counter()
_PRE_SPAWN = "distributed.nanny.pre-spawn-environ."
# the diagnosis: workers with Dask's default MALLOC_TRIM_THRESHOLD_ (inherited from this process)
DASK_DEFAULT_MALLOC = {"MALLOC_TRIM_THRESHOLD_": "65536"}


def log(message: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


def _imwrite(path: Path, arr: np.ndarray, params: list[int]) -> None:
    if not cv2.imwrite(str(path), arr, params):
        raise OSError(f"cannot write {path}")


def make_inputs(root: Path, foregrounds: int, backgrounds: int, seed: int) -> tuple[Path, Path]:
    """AIM-500-style ``root/AIM-500`` and a COCO-sized ``root/backgrounds``, deterministic."""
    data_dir, bg_dir = root / "AIM-500", root / "backgrounds"
    for sub in ("original", "mask", "trimap"):
        (data_dir / sub).mkdir(parents=True, exist_ok=True)
    bg_dir.mkdir(parents=True, exist_ok=True)
    for i in range(foregrounds):
        rng = np.random.default_rng([seed, 1, i])
        h, w = FG_SIZES[i % len(FG_SIZES)]
        fid = f"bench{i:03d}"
        alpha = synthetic_matte(rng, h, w)
        photo = synthetic_photo(rng, h, w, i % 4)
        _imwrite(
            data_dir / "original" / f"o_{fid}.jpg",
            photo,
            [cv2.IMWRITE_JPEG_QUALITY, FG_JPEG_QUALITY],
        )
        _imwrite(data_dir / "mask" / f"o_{fid}.png", alpha, [])
        _imwrite(data_dir / "trimap" / f"o_{fid}.png", trimap_from_alpha(alpha, TRIMAP_RADIUS), [])
    for j in range(backgrounds):
        rng = np.random.default_rng([seed, 2, j])
        h, w = BG_SIZES[j % len(BG_SIZES)]
        photo = synthetic_photo(rng, h, w, j % 4)
        _imwrite(bg_dir / f"bg_{j:06d}.jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, BG_JPEG_QUALITY])
    return data_dir, bg_dir


def spread(items: list, count: int) -> list:
    """``count`` items evenly spaced over ``items`` (all of them when there are fewer)."""
    if count >= len(items):
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


class Timing(BuildProgress):
    """Records when the first shard is submitted and when the last one finishes."""

    def __init__(self) -> None:
        self.start_at: float | None = None
        self.last_at: float | None = None
        self.task_seconds = 0.0  # time spent inside build_shard, summed over shards

    def start(self, out, samples, shards, cluster, dashboard):
        self.start_at = time.perf_counter()

    def shard_done(self, result, samples) -> None:
        self.last_at = time.perf_counter()
        if result is not None:
            self.task_seconds += result.seconds


def measure_ours_in_process(tasks) -> dict:
    """Every shard task in this process, one after another: one core's rate."""
    start = time.perf_counter()
    results = [build_shard(task, force=True) for task in tasks]
    seconds = time.perf_counter() - start
    written = sum(r.samples for r in results)
    rows = [row for r in results for row in r.rows]
    return {
        "samples": written,
        "replaced": sum(row["status"] == "replaced" for row in rows),
        "seconds": seconds,
        "seconds_inside_build_shard_summed": sum(r.seconds for r in results),
        "samples_per_s": written / seconds,
        "tar_bytes": sum(r.bytes for r in results),
        "rows": rows,
        "sha256": {r.name: r.sha256 for r in results},
    }


@contextmanager
def restored_environ() -> Iterator[None]:
    """Undo what a Dask nanny writes into ``os.environ`` (its pre-spawn variables), so that
    one measurement never leaks ``MALLOC_TRIM_THRESHOLD_`` and the like into the next."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def measure_ours_build(
    data_dir: Path, bg_dir: Path, cfg, out: Path, workers: int, env: dict | None = None
) -> dict:
    """``pipeline.build.build`` on a local cluster of ``workers`` processes; ``env`` is set in
    this process first, so the spawned workers inherit it."""
    timing = Timing()
    with restored_environ():
        os.environ.update(env or {})
        cpu_self, cpu_children = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        summary = build(
            data_dir,
            bg_dir,
            cfg,
            out=out,
            cluster=ClusterOptions(workers=workers),
            val_count=1,
            overwrite=True,
            progress=timing,
        )
        wall = time.perf_counter() - start
        cpu_self = _cpu(resource.RUSAGE_SELF) - cpu_self
        cpu_children = _cpu(resource.RUSAGE_CHILDREN) - cpu_children
    if not summary.complete:
        raise RuntimeError(f"build with {workers} worker(s) is incomplete: {summary}")
    from_start = timing.last_at - timing.start_at
    return {
        "samples": summary.written,
        "replaced": summary.replaced,  # samples given a spare background: 0 on these inputs
        "shards": summary.shards,
        "seconds_first_submit_to_last_shard": from_start,
        "samples_per_s": summary.written / from_start,
        "seconds_wall_incl_cluster_startup": wall,
        "samples_per_s_incl_cluster_startup": summary.written / wall,
        "seconds_inside_build_shard_summed": timing.task_seconds,
        "cpu_s_this_process": cpu_self,  # client, scheduler and nannies
        "cpu_s_worker_processes": cpu_children,  # incl. their start-up
        "sha256": {s.path: s.sha256 for s in read_index(out).shards},
    }


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _started(_: int) -> int:
    time.sleep(1.0)  # long enough that each of the two processes takes one
    return os.getpid()


def _run_tasks(tasks) -> tuple[int, float]:
    """In a plain (non-Dask) process: build ``tasks``; return (samples, seconds)."""
    start = time.perf_counter()
    written = sum(build_shard(task, force=True).samples for task in tasks)
    return written, time.perf_counter() - start


def measure_two_plain_processes(tasks, out: Path) -> dict:
    """The machine's own ceiling: two plain processes, no Dask, each half the shards."""
    tasks = [replace(task, out_dir=str(out)) for task in tasks]
    halves = [tasks[0::2], tasks[1::2]]
    with restored_environ(), mp.get_context("spawn").Pool(2) as pool:
        while len(set(pool.map(_started, [0, 1], chunksize=1))) < 2:  # both up and imported
            pass
        start = time.perf_counter()
        done = pool.map(_run_tasks, halves, chunksize=1)
        seconds = time.perf_counter() - start
    written = sum(n for n, _ in done)
    return {
        "samples": written,
        "seconds": seconds,
        "samples_per_s": written / seconds,
        "seconds_per_process": [t for _, t in done],
    }


def _write_libpng(level: int):
    """The reference's writer at another zlib level: ``cv2.imwrite`` of the BGR composite."""
    return lambda path, merged: _imwrite(path, merged, [cv2.IMWRITE_PNG_COMPRESSION, level])


def _write_ours(level: int):
    """Our writer in the reference recipe: BGR -> RGB (counted), ``encode_png``, write."""

    def write(path: Path, merged: np.ndarray) -> None:
        path.write_bytes(encode_png(cv2.cvtColor(merged, cv2.COLOR_BGR2RGB), level))

    return write


# The reference recipe with each PNG writer, on the same samples: what the speed-up splits into.
REFERENCE_WRITERS = {
    "libpng_level_9": _write_libpng(9),  # the reference itself
    "libpng_level_1": _write_libpng(1),  # dropping level 9
    "ours_isal_level_1": _write_ours(1),  # and our encoder instead of libpng
}


def reference_sample(fg_path: str, mask_path: str, bg_path: str, out_path: Path, write=None):
    """The reference recipe for one sample; returns (merged, seconds, seconds in the write).

    ``write(path, merged)`` replaces its ``cv2.imwrite`` at PNG compression 9 (the recipe).
    """
    write = write or REFERENCE_WRITERS["libpng_level_9"]
    start = time.perf_counter()
    fg = cv2.imread(fg_path)
    a = cv2.imread(mask_path, 0)
    bg = cv2.imread(bg_path)
    h, w = fg.shape[:2]
    bh, bw = bg.shape[:2]
    ratio = max(w / bw, h / bh)
    if ratio > 1:
        size = (math.ceil(bw * ratio), math.ceil(bh * ratio))
        bg = cv2.resize(bg, size, interpolation=cv2.INTER_CUBIC)
    bg = bg[:h, :w]
    alpha = (a.astype(np.float32) / 255.0)[..., None]
    comp = alpha * fg.astype(np.float32) + (1.0 - alpha) * bg.astype(np.float32)
    merged = comp.astype(np.uint8)
    before_write = time.perf_counter()
    write(out_path, merged)
    end = time.perf_counter()
    return merged, end - start, end - before_write


def our_merged(out: Path, shard: str, key: str) -> np.ndarray:
    with tarfile.open(out / shard) as tar:
        data = tar.extractfile(f"{key}.merged.png").read()
    return decode_color(data)


def measure_reference(samples, tasks, bg_dir: Path, out: Path, ours_out: Path) -> dict:
    """The reference recipe, one process, one thread, on ``samples`` of our plan; and the same
    recipe with each other writer of ``REFERENCE_WRITERS``, sample by sample (interleaved, so
    that a slow spell of the machine hits all alike)."""
    cv2.setNumThreads(1)
    fgs = {fid: info for task in tasks for fid, info in task.foregrounds.items()}
    ref_dir = out / "reference"
    ref_dir.mkdir(parents=True, exist_ok=True)
    seconds = dict.fromkeys(REFERENCE_WRITERS, 0.0)
    write_seconds = dict.fromkeys(REFERENCE_WRITERS, 0.0)
    sizes = {name: [] for name in REFERENCE_WRITERS}
    diffs, pixels = [], []
    for s in samples:
        info = fgs[s.fg_id]
        for name, write in REFERENCE_WRITERS.items():
            path = ref_dir / f"{s.key}.{name}.png"
            merged, took, took_write = reference_sample(
                info.original, info.mask, str(bg_dir / s.background), path, write
            )
            seconds[name] += took
            write_seconds[name] += took_write
            sizes[name].append(path.stat().st_size)
            if not np.array_equal(cv2.imread(str(path)), merged):
                raise AssertionError(f"{path} does not decode to the composite")
        pixels.append(merged.shape[0] * merged.shape[1])
        ours = our_merged(ours_out, s.shard, s.key).astype(np.int16)[..., ::-1]  # RGB -> BGR
        diffs.append(int(np.abs(ours - merged.astype(np.int16)).max()))
        took = ", ".join(f"{name} {seconds[name]:.1f} s" for name in REFERENCE_WRITERS)
        log(f"reference {s.key}: so far {took}")
    n = len(samples)
    reference = "libpng_level_9"
    return {
        "samples": n,
        "seconds": seconds[reference],
        "samples_per_s": n / seconds[reference],
        "seconds_per_sample": seconds[reference] / n,
        "png9_write_share": write_seconds[reference] / seconds[reference],
        "png_bytes_per_sample": sum(sizes[reference]) / n,
        "mean_megapixels": sum(pixels) / n / 1e6,
        "max_abs_diff_vs_ours_merged": max(diffs),
        "with_writer": {
            name: {
                "seconds_per_sample": seconds[name] / n,
                "write_seconds_per_sample": write_seconds[name] / n,
                "png_bytes_per_sample": sum(sizes[name]) / n,
            }
            for name in REFERENCE_WRITERS
        },
    }


def speedup_split(reference: dict, ours_samples_per_s: float) -> dict:
    """The per-core speed-up as a product of its sources, each measured on the same samples:
    dropping PNG level 9 (the reference recipe with libpng at level 1), our encoder against
    libpng at level 1 (the recipe with ``encode_png``), and the rest of our build (decode,
    integer blend, every member, tar, hashes) against the rest of the recipe."""
    per = {name: w["seconds_per_sample"] for name, w in reference["with_writer"].items()}
    ours = 1.0 / ours_samples_per_s
    return {
        "reference_seconds_per_sample": per["libpng_level_9"],
        "reference_with_libpng_level_1_seconds_per_sample": per["libpng_level_1"],
        "reference_with_our_encoder_seconds_per_sample": per["ours_isal_level_1"],
        "ours_seconds_per_sample": ours,
        "dropping_png_level_9": per["libpng_level_9"] / per["libpng_level_1"],
        "our_encoder_vs_libpng_level_1": per["libpng_level_1"] / per["ours_isal_level_1"],
        "rest_of_our_build": per["ours_isal_level_1"] / ours,
        "product": per["libpng_level_9"] / ours,
    }


def _best_ms(fn, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def measure_bg_alternative(samples, tasks, bg_dir: Path, level: int, repeats: int) -> dict:
    """The ``bg`` member as chosen (source bytes + fit json) against the fitted PNG."""
    cv2.setNumThreads(1)
    fgs = {fid: info for task in tasks for fid, info in task.foregrounds.items()}
    src_bytes, png_bytes, encode_ms, load_src_ms, load_png_ms = [], [], [], [], []
    for s in samples:
        info = fgs[s.fg_id]
        data = (bg_dir / s.background).read_bytes()
        fitted, fit = fit_background(decode_color(data), info.height, info.width)
        png = encode_png(fitted, level)
        encode_ms.append(_best_ms(lambda f=fitted: encode_png(f, level), repeats))
        load_src_ms.append(_best_ms(lambda d=data, f=fit: apply_fit(decode_color(d), f), repeats))
        load_png_ms.append(_best_ms(lambda p=png: decode_color(p), repeats))
        if not np.array_equal(decode_color(png), fitted):
            raise AssertionError("the fitted PNG does not round-trip")
        src_bytes.append(len(data))
        png_bytes.append(len(png))
    n = len(samples)
    return {
        "samples": n,
        "chosen": "source bytes untouched + fit parameters in json",
        "source_bytes_per_sample": sum(src_bytes) / n,
        "source_extra_encode_ms_per_sample": 0.0,
        "source_loader_ms_per_sample": sum(load_src_ms) / n,
        "fitted_png_bytes_per_sample": sum(png_bytes) / n,
        "fitted_png_extra_encode_ms_per_sample": sum(encode_ms) / n,
        "fitted_png_loader_ms_per_sample": sum(load_png_ms) / n,
        "fitted_png_bytes_over_source": sum(png_bytes) / sum(src_bytes),
        "loader": "source: decode_color + apply_fit; png: decode_color (best of repeats)",
    }


def measure_png_encoders(samples, out: Path, level: int, repeats: int) -> dict:
    """Encoding the merged image: our writer (Up filter + ISA-L) against libpng via OpenCV."""
    cv2.setNumThreads(1)
    encoders = {
        f"ours_isal_level_{level}": lambda img: encode_png(img, level),
        "opencv_libpng_level_1": lambda img: cv2.imencode(
            ".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1]
        )[1],
        "opencv_libpng_level_9": lambda img: cv2.imencode(
            ".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 9]
        )[1],
    }
    ms = {name: [] for name in encoders}
    size = {name: [] for name in encoders}
    for s in samples:
        img = our_merged(out, s.shard, s.key)
        for name, encode in encoders.items():
            ms[name].append(_best_ms(lambda e=encode, i=img: e(i), repeats))
            size[name].append(len(encode(img)))
    n = len(samples)
    mean_ms = {name: sum(v) / n for name, v in ms.items()}
    return {
        "samples": n,
        **{f"{name}_ms": mean_ms[name] for name in encoders},
        **{f"{name}_bytes": sum(v) / n for name, v in size.items()},
        # the two sources of the encoder's speed-up over the reference's, on the same images
        "libpng_level_9_vs_level_1": mean_ms["opencv_libpng_level_9"]
        / mean_ms["opencv_libpng_level_1"],
        "libpng_level_1_vs_ours": mean_ms["opencv_libpng_level_1"]
        / mean_ms[f"ours_isal_level_{level}"],
        "libpng_level_9_vs_ours": mean_ms["opencv_libpng_level_9"]
        / mean_ms[f"ours_isal_level_{level}"],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--foregrounds", type=int, default=6, help="foregrounds (>= 2)")
    parser.add_argument(
        "--bgs-per-fg",
        type=int,
        default=32,
        help="backgrounds per train and per validation foreground",
    )
    parser.add_argument(
        "--samples-per-shard",
        type=int,
        default=16,
        help="16 keeps 8 samples per foreground per shard, as the default 64 does",
    )
    parser.add_argument(
        "--reference-samples",
        type=int,
        default=16,
        help="samples the reference recipe composites (about 2 s each)",
    )
    parser.add_argument(
        "--bg-samples", type=int, default=32, help="samples for the bg-member alternative"
    )
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each bg-member timing")
    parser.add_argument(
        "--runs",
        type=int,
        default=2,
        help="runs of each of our measurements; the fastest is reported, all are listed",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep inputs and outputs here (default: a temporary folder)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small run: 8 bgs per foreground, 8 per shard, 3 reference samples, 1 run",
    )
    parser.add_argument(
        "--encoders-only",
        action="store_true",
        help="only the speed-up and its split: our in-process build, the reference recipe with "
        "each PNG writer, the encoders alone (no Dask builds, no bg-member alternative)",
    )
    parser.add_argument(
        "--no-diagnosis",
        action="store_true",
        help="skip the builds with Dask's default MALLOC_TRIM_THRESHOLD_ in the workers",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.bgs_per_fg, args.samples_per_shard = 8, 8
        args.reference_samples, args.bg_samples, args.repeats, args.runs = 3, 8, 1, 1
    if args.foregrounds < 2:
        parser.error("--foregrounds must be >= 2")
    return args


def run(args: argparse.Namespace, root: Path) -> dict:
    val_fgs = 1
    samples_needed = args.foregrounds * args.bgs_per_fg
    log(f"writing {args.foregrounds} foregrounds and {samples_needed} backgrounds to {root}")
    data_dir, bg_dir = make_inputs(root, args.foregrounds, samples_needed, args.seed)
    cfg = load_config(
        overrides=[
            f"data.seed={args.seed}",
            f"data.bgs_per_train_fg={args.bgs_per_fg}",
            f"data.bgs_per_val_fg={args.bgs_per_fg}",
            f"data.samples_per_shard={args.samples_per_shard}",
        ]
    )
    inputs, plan = prepare(data_dir, bg_dir, cfg, val_count=val_fgs)
    out_inproc = root / "out-in-process"
    tasks = shard_tasks(plan, inputs, out_inproc)
    log(f"plan: {len(plan.samples)} samples in {len(tasks)} shards")

    runs = max(1, args.runs)
    inproc_runs = []
    for i in range(runs):
        inproc_runs.append(measure_ours_in_process(tasks))
        log(f"ours, in process, run {i + 1}: {inproc_runs[-1]['samples_per_s']:.2f} samples/s")

    ref_samples = spread(list(plan.samples), args.reference_samples)
    log(f"reference recipe on {len(ref_samples)} samples")
    reference = measure_reference(ref_samples, tasks, bg_dir, root, out_inproc)
    log(f"reference: {reference['samples_per_s']:.3f} samples/s")

    png_samples = spread(list(plan.samples), min(8, args.bg_samples))
    log(f"PNG encoders on {len(png_samples)} merged images")
    png = measure_png_encoders(png_samples, out_inproc, cfg.data.png_compression, args.repeats)

    inproc = best(inproc_runs)
    split = speedup_split(reference, inproc["samples_per_s"])
    if args.encoders_only:
        return {
            "benchmark": "compose --encoders-only",
            "machine": _machine(),
            "inputs": _inputs(args, inputs, plan, tasks, cfg, samples_needed),
            "ours_in_process_samples_per_s": inproc["samples_per_s"],
            "ours_in_process_runs_samples_per_s": inproc["runs_samples_per_s"],
            "reference": reference,
            "speedup_per_core": split["product"],
            "speedup_split": split,
            "png_encoder": png,
        }

    bg_samples = spread(list(plan.samples), args.bg_samples)
    log(f"bg member alternatives on {len(bg_samples)} samples")
    bg_alt = measure_bg_alternative(
        bg_samples, tasks, bg_dir, cfg.data.png_compression, args.repeats
    )

    variants = {"dask_default": None}
    if not args.no_diagnosis:
        variants["dask_default_malloc"] = DASK_DEFAULT_MALLOC
    plain2_runs: list[dict] = []
    build_runs: dict[str, dict[int, list[dict]]] = {v: {1: [], 2: []} for v in variants}
    for i in range(runs):  # interleaved, so that a slow spell of the machine hits all alike
        plain2_runs.append(measure_two_plain_processes(tasks, root / "out-2-plain"))
        rate = plain2_runs[-1]["samples_per_s"]
        log(f"ours, two plain processes (no Dask), run {i + 1}: {rate:.2f} samples/s")
        for variant, env in variants.items():
            for workers in (1, 2):
                out = root / f"out-{variant}-{workers}w"
                one_run = measure_ours_build(data_dir, bg_dir, cfg, out, workers, env)
                build_runs[variant][workers].append(one_run)
                rate = one_run["samples_per_s"]
                log(f"ours, build, {workers} worker(s), {variant}, run {i + 1}: {rate:.2f}/s")

    digests = {f"in_process_run_{i + 1}": r.pop("sha256") for i, r in enumerate(inproc_runs)}
    for variant, per in build_runs.items():
        for workers, rs in per.items():
            for i, r in enumerate(rs):
                digests[f"{variant}_{workers}w_run_{i + 1}"] = r.pop("sha256")
    first = digests["in_process_run_1"]
    differing = [  # (run, shard) whose sha256 is not the first in-process run's: none expected
        f"{run}: {shard}"
        for run, d in digests.items()
        for shard in sorted(set(d) | set(first))
        if d.get(shard) != first.get(shard)
    ]
    identical = not differing
    plain2 = best(plain2_runs)
    builds = {v: {w: best(rs) for w, rs in per.items()} for v, per in build_runs.items()}
    rows = inproc.pop("rows")
    n = len(rows)
    members = {
        role: sum(r[f"{role}_size"] for r in rows) / n
        for role in ("merged", "alpha", "trimap", "fg", "bg", "json")
    }
    tar_per_sample = inproc["tar_bytes"] / inproc["samples"]
    one, two = builds["dask_default"][1], builds["dask_default"][2]
    speedup = inproc["samples_per_s"] / reference["samples_per_s"]
    scaling = two["samples_per_s"] / one["samples_per_s"]
    diagnosis = {}
    if "dask_default_malloc" in builds:
        d1, d2 = builds["dask_default_malloc"][1], builds["dask_default_malloc"][2]
        diagnosis = {
            "what": "the same builds with Dask's default MALLOC_TRIM_THRESHOLD_=65536",
            "workers_1": d1,
            "workers_2": d2,
            "workers_1_samples_per_s": d1["samples_per_s"],
            "workers_2_samples_per_s": d2["samples_per_s"],
            "scaling_2_vs_1_workers": d2["samples_per_s"] / d1["samples_per_s"],
            "scaling_2_vs_1_workers_per_run": _ratios(d2, d1),
            "workers_2_vs_in_process": d2["samples_per_s"] / inproc["samples_per_s"],
        }
    return {
        "benchmark": "compose",
        "machine": _machine(),
        "inputs": _inputs(args, inputs, plan, tasks, cfg, samples_needed),
        "ours": {
            "in_process_samples_per_s": inproc["samples_per_s"],
            "in_process_seconds": inproc["seconds"],
            "in_process_runs_samples_per_s": inproc["runs_samples_per_s"],
            "workers_1_samples_per_s": one["samples_per_s"],
            "workers_2_samples_per_s": two["samples_per_s"],
            "scaling_2_vs_1_workers": scaling,
            "scaling_2_vs_1_workers_per_run": _ratios(two, one),
            "scaling_2_vs_1_workers_incl_cluster_startup": two["samples_per_s_incl_cluster_startup"]
            / one["samples_per_s_incl_cluster_startup"],
            "workers_1_vs_in_process": one["samples_per_s"] / inproc["samples_per_s"],
            "workers_1": one,
            "workers_2": two,
            "two_plain_processes_samples_per_s": plain2["samples_per_s"],
            "two_plain_processes_vs_in_process": plain2["samples_per_s"] / inproc["samples_per_s"],
            "two_plain_processes": plain2,
            "shards_identical_across_all_runs": identical,
            "shards_differing_from_the_first_run": differing,
        },
        "reference": reference,
        "speedup_per_core": speedup,
        "speedup_split": split,
        "speedup_per_core_dask_1_worker": one["samples_per_s"] / reference["samples_per_s"],
        "bytes_per_sample": {
            "ours_tar": tar_per_sample,
            "ours_merged_png": members["merged"],
            "ours_members": members,
            "reference_merged_png": reference["png_bytes_per_sample"],
        },
        "bg_member": {
            **bg_alt,
            "ours_tar_bytes_per_sample_if_fitted_png": tar_per_sample
            - members["bg"]
            + bg_alt["fitted_png_bytes_per_sample"],
        },
        "png_encoder": png,
        "diagnosis_malloc": diagnosis,
        "targets": {
            "speedup_per_core": SPEEDUP_TARGET,
            "speedup_per_core_met": speedup >= SPEEDUP_TARGET,
            "scaling_2_vs_1_workers": SCALING_TARGET,
            "scaling_2_vs_1_workers_met": scaling >= SCALING_TARGET,
        },
    }


def _machine() -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model(),
        "gpu": None,
        "python": platform.python_version(),
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "dask_nanny_pre_spawn_environ": dask.config.get(_PRE_SPAWN.rstrip(".")),
    }


def _inputs(args, inputs, plan, tasks, cfg, backgrounds: int) -> dict:
    area = {fg.id: fg.height * fg.width for fg in inputs.foregrounds}
    sample_pixels = [area[s.fg_id] for s in plan.samples]
    return {
        "foregrounds": args.foregrounds,
        "foreground_sizes_wxh": [f"{w}x{h}" for h, w in FG_SIZES],
        "foreground_jpeg_quality": FG_JPEG_QUALITY,
        "foreground_mean_megapixels": sum(area.values()) / len(area) / 1e6,
        "background_sizes_wxh": [f"{w}x{h}" for h, w in BG_SIZES],
        "background_jpeg_quality": BG_JPEG_QUALITY,
        "backgrounds": backgrounds,
        "samples": len(plan.samples),
        "samples_mean_megapixels": sum(sample_pixels) / len(sample_pixels) / 1e6,
        "shards": len(tasks),
        "samples_per_shard": args.samples_per_shard,
        "png_compression": cfg.data.png_compression,
        "rounding": cfg.data.rounding,
        "quick": args.quick,
    }


def best(runs: list[dict]) -> dict:
    """The fastest of repeated runs (least disturbed by the machine), with every run's rate."""
    top = dict(max(runs, key=lambda r: r["samples_per_s"]))
    top["runs_samples_per_s"] = [r["samples_per_s"] for r in runs]
    return top


def _ratios(top: dict, bottom: dict) -> list[float]:
    """Run-by-run ratios of two measurements taken in the same interleaved runs."""
    pairs = zip(top["runs_samples_per_s"], bottom["runs_samples_per_s"], strict=True)
    return [a / b for a, b in pairs]


def _rounded(obj):
    """Floats to 4 decimals (bytes and times need no more), recursively."""
    if isinstance(obj, float):
        return round(obj, 4)
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rounded(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        result = run(args, args.workdir.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="bench-compose-") as tmp:
            result = run(args, Path(tmp))
    log(f"done in {time.perf_counter() - _T0:.1f} s")
    print(json.dumps(_rounded(result), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
