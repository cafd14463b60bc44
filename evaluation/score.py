"""Score a folder of predicted alphas against ground truth: per-image metrics and their means.

Files are matched by name without extension across the three folders (``o_1a2b.png`` in
``--pred-dir`` pairs with ``o_1a2b.png`` in ``--gt-dir`` and ``o_1a2b.png`` or ``.jpg`` in
``--trimap-dir``). The ground-truth folder defines the image set; a file missing from, or
extra in, either other folder is an error that lists every such file, and so is any image that
does not decode or does not fit (sizes, trimap values): all are reported at once and nothing
is written. Images are decoded by OpenCV as 8-bit grey, EXIF orientation ignored.

Work is spread over a pool of worker processes (paths in, one small record out per image);
results come back in name order whatever the worker count, so the outputs are identical for
any ``workers``. ``OUT/per_image.csv`` holds one row per image and ``OUT/summary.json`` the
mean of each metric over images (as the benchmark reports them), both written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
import multiprocessing
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from shards.atomic import atomic_write_bytes
from shards.codec import decode_grey
from shards.mattes import TRIMAP_UNKNOWN
from shards.metrics import METRICS, all_metrics

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
PER_IMAGE_CSV = "per_image.csv"
SUMMARY_JSON = "summary.json"
CSV_COLUMNS = ("name", *METRICS, "unknown_pixels")
_LIST_LIMIT = 20  # names shown per problem before "... and N more"


class ScoreError(ValueError):
    """The folders or images cannot be scored; the message lists every offender."""


@dataclass(frozen=True)
class ImageScore:
    """One image's metrics (in the units of docs/reference.md section 4) and the size of its
    unknown region."""

    name: str
    sad: float
    mse: float
    grad: float
    conn: float
    unknown_pixels: int

    def row(self) -> list:
        return [self.name, *(repr(getattr(self, m)) for m in METRICS), self.unknown_pixels]


@dataclass(frozen=True)
class ScoreResult:
    """Per-image scores in name order, their means, and where they were written.

    Attributes:
        images: one ``ImageScore`` per ground-truth image, sorted by name.
        means: ``{"sad", "mse", "grad", "conn"}`` -> mean over images.
        without_unknown: names of images whose trimap has no unknown pixel (they score 0.0).
        out: the folder holding per_image.csv and summary.json, or None if not written.
        seconds: wall time of the scoring.
    """

    images: list[ImageScore]
    means: dict[str, float]
    without_unknown: list[str]
    out: Path | None
    seconds: float

    @property
    def count(self) -> int:
        return len(self.images)


def shorten(names: list[str]) -> str:
    shown = ", ".join(names[:_LIST_LIMIT])
    return shown + (
        f", ... and {len(names) - _LIST_LIMIT} more" if len(names) > _LIST_LIMIT else ""
    )


def list_images(folder: Path, option: str) -> dict[str, Path]:
    """The images of ``folder`` by name without extension (hidden and other files ignored).

    Raises:
        ScoreError: the folder does not exist, holds no image, or holds two images of one name.
    """
    if not folder.is_dir():
        raise ScoreError(f"{option} {folder} is not a folder")
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.is_file():
            found.setdefault(path.stem, []).append(path)
    if not found:
        raise ScoreError(f"{option} {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    doubles = [" and ".join(p.name for p in paths) for paths in found.values() if len(paths) > 1]
    if doubles:
        raise ScoreError(
            f"{option} {folder} has {len(doubles)} name(s) with more than one image, which "
            f"cannot be matched: {shorten(doubles)}"
        )
    return {stem: paths[0] for stem, paths in found.items()}


def unmatched(where: str, files: dict[str, Path], reference: dict[str, Path]) -> list[str]:
    """What ``files`` lacks and has beyond ``reference`` (both keyed by name without
    extension), one line each, or nothing when they match; ``where`` names the folder."""
    missing = sorted(set(reference) - set(files))
    extra = sorted(files[name].name for name in set(files) - set(reference))
    problems = []
    if missing:
        problems.append(f"{where}: {len(missing)} missing: {shorten(missing)}")
    if extra:
        problems.append(f"{where}: {len(extra)} extra: {shorten(extra)}")
    return problems


def match_folders(
    pred_dir: Path, gt_dir: Path, trimap_dir: Path
) -> list[tuple[str, Path, Path, Path]]:
    """``(name, pred, gt, trimap)`` for every ground-truth image, sorted by name.

    Raises:
        ScoreError: a folder is missing or empty, or the folders do not hold the same names;
            the message lists every missing and extra file per folder.
    """
    gt = list_images(gt_dir, "--gt-dir")
    pred = list_images(pred_dir, "--pred-dir")
    trimap = list_images(trimap_dir, "--trimap-dir")
    problems = [
        *unmatched(f"--pred-dir {pred_dir}", pred, gt),
        *unmatched(f"--trimap-dir {trimap_dir}", trimap, gt),
    ]
    if problems:
        raise ScoreError(
            f"the folders do not hold the same images (matched by file name without extension; "
            f"--gt-dir {gt_dir} has {len(gt)}):\n  " + "\n  ".join(problems)
        )
    return [(name, pred[name], gt[name], trimap[name]) for name in sorted(gt)]


def _read(path: Path) -> np.ndarray:
    try:
        return decode_grey(path.read_bytes())
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def score_image(task: tuple[str, Path, Path, Path]) -> ImageScore:
    """Read one ``(name, pred, gt, trimap)`` triple of paths and compute its four metrics.

    Raises:
        ValueError: a file that does not decode, or images that do not fit (naming the files).
    """
    name, pred_path, gt_path, trimap_path = task
    pred, gt, trimap = _read(pred_path), _read(gt_path), _read(trimap_path)
    try:
        metrics = all_metrics(pred, gt, trimap)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} ({pred_path}, {gt_path}, {trimap_path}): {exc}") from None
    return ImageScore(
        name, **metrics, unknown_pixels=int(np.count_nonzero(trimap == TRIMAP_UNKNOWN))
    )


def _score_or_error(task: tuple[str, Path, Path, Path]) -> ImageScore | str:
    """``score_image``, with a bad image returned as its message (so all can be listed)."""
    try:
        return score_image(task)
    except ValueError as exc:
        return str(exc)


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core: OpenCV's own threads would oversubscribe


def _run(tasks: list, workers: int) -> Iterator[ImageScore | str]:
    if workers == 1 or len(tasks) == 1:
        yield from map(_score_or_error, tasks)
        return
    # spawn: workers start clean (no inherited OpenCV thread pool or locks), on every platform
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(tasks)), context, _init_worker) as pool:
        chunk = max(1, min(8, len(tasks) // (4 * workers)))
        yield from pool.map(_score_or_error, tasks, chunksize=chunk)


def write_results(
    result: ScoreResult, out: Path, sources: dict, summary_name: str = SUMMARY_JSON
) -> None:
    """Write ``out/per_image.csv`` and ``out/<summary_name>`` (each atomically).

    ``sources`` (where the inputs came from, settings, timings) is added to the summary.
    """
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(image.row() for image in result.images)
    atomic_write_bytes(out / PER_IMAGE_CSV, buffer.getvalue().encode())
    summary = {
        "count": result.count,
        **result.means,
        "images_without_unknown": len(result.without_unknown),
        "metrics": "docs/reference.md section 4: SAD, Grad, Conn / 1000; MSE not",
        **sources,
    }
    atomic_write_bytes(out / summary_name, (json.dumps(summary, indent=2) + "\n").encode())


def score_folder(
    pred_dir: Path,
    gt_dir: Path,
    trimap_dir: Path,
    out: Path | None = None,
    workers: int = 1,
    on_image: Callable[[int, int], None] | None = None,
) -> ScoreResult:
    """Score every predicted alpha in ``pred_dir`` against ``gt_dir`` on ``trimap_dir``'s U.

    Args:
        pred_dir: predicted alphas (8-bit grey images), named as the ground truth.
        gt_dir: ground-truth alphas; defines the image set.
        trimap_dir: trimaps with values 0/128/255, named as the ground truth.
        out: folder for per_image.csv and summary.json (created); None writes nothing.
        workers: processes scoring images in parallel (1: in this process).
        on_image: called as ``on_image(done, total)`` after each image.

    Returns:
        The per-image scores in name order and their means.

    Raises:
        ScoreError: missing or extra files, unreadable images, images that do not fit; every
            offender is listed, and nothing is written.
        ValueError: ``workers`` < 1.
    """
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    start = time.perf_counter()
    tasks = match_folders(Path(pred_dir), Path(gt_dir), Path(trimap_dir))
    images, errors = [], []
    for done, outcome in enumerate(_run(tasks, workers), 1):
        (errors if isinstance(outcome, str) else images).append(outcome)
        if on_image is not None:
            on_image(done, len(tasks))
    if errors:
        raise ScoreError(
            f"{len(errors)} of {len(tasks)} image(s) cannot be scored:\n  "
            + "\n  ".join(errors[:_LIST_LIMIT])
            + (f"\n  ... and {len(errors) - _LIST_LIMIT} more" if len(errors) > _LIST_LIMIT else "")
        )
    means = {m: math.fsum(getattr(image, m) for image in images) / len(images) for m in METRICS}
    result = ScoreResult(
        images=images,
        means=means,
        without_unknown=[image.name for image in images if image.unknown_pixels == 0],
        out=Path(out) if out is not None else None,
        seconds=time.perf_counter() - start,
    )
    if out is not None:
        sources = {"pred_dir": str(pred_dir), "gt_dir": str(gt_dir), "trimap_dir": str(trimap_dir)}
        write_results(result, Path(out), sources)
    return result


def default_out(pred_dir: Path) -> Path:
    """The folder ``indexnet evaluate score`` writes to without ``--out``: ``<pred-dir>-scores``."""
    pred_dir = Path(pred_dir).resolve()
    return pred_dir.with_name(f"{pred_dir.name}-scores")
