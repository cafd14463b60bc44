"""Evaluate a checkpoint on a shard set's validation samples, the way the benchmark does.

``evaluate(options)`` runs the model on every sample at full resolution (docs/reference.md section
4: reflect-pad to a multiple of 32 and crop back, clip to [0, 1], force trimap 0 to 0 and 255
to 1, round to 8 bits; ``training.inference.predict_alpha``, which tiles images above a pixel
limit), and writes to ``--out``:

- ``predictions/<key>.png``: each prediction, 8-bit grey;
- ``per_image.csv``: SAD, MSE, Grad, Conn and unknown pixels per sample;
- ``metrics.json``: the mean of each metric over samples (as the benchmark reports them), with
  the checkpoint, shards, device and timings;
- ``eval.log``: the run's settings, a line per sample, the means;
- ``contact_sheet.png``: a few samples (composite, trimap, prediction, truth, error map).

With ``baseline`` on, every sample is also scored for a trivial prediction (``trivial_alpha``,
defined in ``shards.mattes`` and re-exported here: alpha 0.5 in the unknown region, the
trimap's 0 and 1 elsewhere), and its means go beside the model's in ``metrics.json`` and the
printed table: a scale for small or untrained models; training's validation logs the same.

Inference runs in this process, on the device; every prediction goes, with its ground truth
and trimap, to a pool of worker processes that compute the metrics (``evaluation.metrics``), a
bounded number at a time, so scoring never stalls the model and memory stays flat.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import multiprocessing
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from configs import ModelConfig
from configs.schema import StorageConfig
from evaluation.contact_sheet import SheetRow, write_contact_sheet
from evaluation.score import ImageScore, ScoreResult, write_results
from shards.atomic import atomic_write_bytes
from shards.cache import ShardCache
from shards.codec import encode_png
from shards.mattes import TRIMAP_UNKNOWN, trivial_alpha  # trivial_alpha: re-exported
from shards.metrics import METRICS, all_metrics
from shards.reader import ShardList, require, resolve_shards, scored_samples
from shards.schema import SCORED_MEMBERS
from training.checkpoint import load_for_inference
from training.inference import predict_alpha
from training.models.build import describe

PREDICTIONS = "predictions"
METRICS_JSON = "metrics.json"
EVAL_LOG = "eval.log"
CONTACT_SHEET = "contact_sheet.png"


@dataclass(frozen=True)
class EvalOptions:
    """What to evaluate, where, and how."""

    checkpoint: Path  # ours, or the official indexnet_matting.pth.tar
    shards: str  # the validation split's folder (OUT/validation), the set, a URL or a pattern
    out: Path  # results folder (created)
    device: str = "cpu"  # cpu or cuda
    workers: int = 1  # metric processes (0: score in this process, after each prediction)
    max_pixels: int = 4_000_000  # larger images are predicted in tiles
    tile: int = 1536  # tile side (a multiple of 32)
    contact_samples: int = 6  # rows of the contact sheet (0: none)
    model_cfg: ModelConfig | None = None  # the variant of an official checkpoint
    limit: int = 0  # evaluate only the first N samples (0: all)
    baseline: bool = False  # also score trivial_alpha, for scale
    # the store's options (never shown: repr=False) and the shard cache, for --shards on a store
    storage: StorageConfig = field(default_factory=StorageConfig, repr=False)


@dataclass(frozen=True)
class EvalResult:
    """Per-sample scores in shard order, their means, and what was written."""

    scores: ScoreResult
    samples_per_second: float
    inference_seconds: float  # time spent in the model, all samples
    contact_sheet: Path | None
    out: Path
    baseline_means: dict[str, float] | None = None  # trivial_alpha's means, if asked for


class EvalProgress:
    """Callbacks a front end overrides to show progress; defaults do nothing."""

    def start(self, total: int) -> None:
        """``total`` samples are about to be evaluated."""

    def scored(self, done: int) -> None:
        """``done`` samples have been predicted and scored."""

    def stop(self) -> None:
        """Evaluation ended or failed."""


def _score(
    key: str, pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray, baseline: bool = False
) -> tuple[ImageScore, dict[str, float] | None]:
    """The sample's scores, and ``trivial_alpha``'s metrics when ``baseline``."""
    try:
        metrics = all_metrics(pred, gt, trimap)
        trivial = all_metrics(trivial_alpha(trimap), gt, trimap) if baseline else None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"sample {key}: {exc}") from None
    unknown = int(np.count_nonzero(trimap == TRIMAP_UNKNOWN))
    return ImageScore(key, **metrics, unknown_pixels=unknown), trivial


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core
    torch.set_num_threads(1)


def _sheet_indices(total: int, count: int) -> set[int]:
    """``count`` sample positions spread evenly over ``total`` (first and last included)."""
    if count <= 0 or total <= 0:
        return set()
    if count >= total:
        return set(range(total))
    return {round(i * (total - 1) / (count - 1)) for i in range(count)} if count > 1 else {0}


def evaluate(options: EvalOptions, progress: EvalProgress | None = None) -> EvalResult:
    """Predict and score every sample; see the module docstring for what is written.

    Raises:
        ValueError: a bad checkpoint, shard source or option, or a sample that cannot be
            scored (named).
    """
    start = time.perf_counter()
    progress = progress or EvalProgress()
    if options.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {options.workers}")
    if options.device not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda, got {options.device!r}")
    if options.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available; use --device cpu")
    storage = options.storage
    cache = ShardCache.of(storage.cache_dir, storage.cache_limit_gb)
    shards = resolve_shards(options.shards, "validation", None, storage.options, cache)
    require(shards, SCORED_MEMBERS)  # e.g. a lean set's train split: said before any work
    total = min(options.limit, shards.total) if options.limit else shards.total
    model = load_for_inference(options.checkpoint, options.model_cfg).to(options.device)
    out = Path(options.out)
    (out / PREDICTIONS).mkdir(parents=True, exist_ok=True)
    with open(out / EVAL_LOG, "w") as log_file:

        def log(line: str) -> None:  # line by line: a failed run leaves what it did
            log_file.write(line + "\n")
            log_file.flush()

        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        log(f"indexnet evaluate run, {now}")
        log(f"checkpoint {options.checkpoint} ({describe(model)})")
        log(f"shards {options.shards}: {len(shards.urls)} shard(s), {total} sample(s)")
        log(
            f"device {options.device}, metric workers {options.workers}, tiles above "
            f"{options.max_pixels} pixels (side {options.tile})"
        )
        log("key " + " ".join(METRICS) + " ms")
        scores, trivial, sheet, model_seconds = _predict_and_score(
            model, shards, total, options, out, log, progress
        )
        seconds = time.perf_counter() - start
        means = {m: math.fsum(getattr(s, m) for s in scores) / len(scores) for m in METRICS}
        baseline = (
            {m: math.fsum(t[m] for t in trivial) / len(trivial) for m in METRICS}
            if options.baseline
            else None
        )
        if baseline is not None:
            log("baseline " + " ".join(f"{m} {baseline[m]:.6g}" for m in METRICS))
        log("mean " + " ".join(f"{m} {means[m]:.6g}" for m in METRICS) + f" over {len(scores)}")
        log(
            f"{seconds:.1f} s, {len(scores) / seconds:.2f} samples/s ({model_seconds:.1f} s in "
            "the model)"
        )
    result = ScoreResult(
        images=scores,
        means=means,
        without_unknown=[s.name for s in scores if s.unknown_pixels == 0],
        out=out,
        seconds=seconds,
    )
    meta = {
        "checkpoint": str(options.checkpoint),
        "model": describe(model),
        "shards": options.shards,
        "device": options.device,
        "max_pixels": options.max_pixels,
        "seconds": round(seconds, 3),
        "inference_seconds": round(model_seconds, 3),
        "samples_per_second": round(len(scores) / seconds, 3),
        "protocol": "full resolution, reflect-padded to a multiple of 32; clipped, the trimap's "
        "known regions forced, rounded to 8 bits",
    }
    if baseline is not None:
        meta["baseline"] = {
            "prediction": "alpha 0.5 in the unknown region, the trimap's 0 and 1 elsewhere",
            **baseline,
        }
    write_results(result, out, meta, summary_name=METRICS_JSON)
    sheet_path = write_contact_sheet(sheet, out / CONTACT_SHEET) if sheet else None
    return EvalResult(result, len(scores) / seconds, model_seconds, sheet_path, out, baseline)


def _predict_and_score(
    model: torch.nn.Module,
    shards: ShardList,
    total: int,
    options: EvalOptions,
    out: Path,
    log: Callable[[str], None],
    progress: EvalProgress,
) -> tuple[list[ImageScore], list[dict[str, float]], list[SheetRow], float]:
    """The loop: predict on the device, write, hand scoring to the pool, collect in order.

    Returns the scores, ``trivial_alpha``'s metrics per sample (empty unless asked for), the
    contact sheet's rows and the seconds spent in the model.
    """
    sheet_at = _sheet_indices(total, options.contact_samples)
    sheet: dict[str, SheetRow] = {}
    pending: deque[tuple[str, float, Future | tuple]] = deque()
    scores: list[ImageScore] = []
    trivial: list[dict[str, float]] = []
    model_seconds = 0.0

    def collect(block: bool) -> None:
        while pending and (block or not isinstance(pending[0][2], Future) or pending[0][2].done()):
            key, ms, item = pending.popleft()
            score, baseline = item.result() if isinstance(item, Future) else item
            scores.append(score)
            if baseline is not None:
                trivial.append(baseline)
            if key in sheet:
                sheet[key] = dataclasses.replace(sheet[key], sad=score.sad)
            log(f"{key} " + " ".join(f"{getattr(score, m):.6g}" for m in METRICS) + f" {ms:.0f}")
            progress.scored(len(scores))

    pool = None
    if options.workers > 0:
        context = multiprocessing.get_context("spawn")  # clean workers, no inherited threads
        pool = ProcessPoolExecutor(options.workers, context, _init_worker)
    progress.start(total)
    try:
        for i, (key, rgb, trimap, alpha) in enumerate(scored_samples(shards, total)):
            tick = time.perf_counter()
            try:
                pred = predict_alpha(
                    model, rgb, trimap, options.device, options.max_pixels, options.tile
                )
            except ValueError as exc:
                raise ValueError(f"sample {key}: {exc}") from None
            seconds = time.perf_counter() - tick
            model_seconds += seconds
            atomic_write_bytes(out / PREDICTIONS / f"{key}.png", encode_png(pred))
            if i in sheet_at:
                sheet[key] = SheetRow(key, rgb, trimap, pred, alpha, math.nan)
            job = (key, pred, alpha, trimap, options.baseline)
            item = _score(*job) if pool is None else pool.submit(_score, *job)
            pending.append((key, seconds * 1000, item))
            collect(block=len(pending) > 2 * max(1, options.workers))
        collect(block=True)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        progress.stop()
    if not scores:
        raise ValueError(f"{options.shards}: no samples to evaluate")
    return scores, trivial, list(sheet.values()), model_seconds


def read_metrics(out: Path) -> dict:
    """``metrics.json`` of an evaluation folder."""
    return json.loads((Path(out) / METRICS_JSON).read_text())
