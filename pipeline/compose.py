"""Write one shard: the function each Dask task runs (paths in, a small record out).

``build_shard(task)`` composites the task's samples in plan order and writes
``OUT/<split>/<split>-NNNNNN.tar`` atomically, then its record ``OUT/.records/<name>.json``
(the shard's size, sha256 and per-sample rows). A shard whose tar and record exist and agree is
returned as is, so re-running a build resumes it. Each foreground is decoded once per shard.

``OUT`` and the inputs may be store URLs (``shards.store``): the worker reads its inputs from
the URLs in its task, writes the tar into a local temporary folder, uploads it (an object
appears whole or not at all) and only then writes the record: a record always means a whole
shard. A local ``OUT`` is written in place, with no extra copy.

Per-sample failures are data, not crashes: a background that cannot be decoded is replaced by
the shard's next unused spare (status ``replaced``); with no spare left, or an undecodable
foreground, the sample is left out and recorded as ``failed`` with its error. A file that cannot
be read at all raises (the task is retried): a transient fault must not change the shard.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from pipeline.inputs import read_input
from pipeline.plan import VALIDATION, PlannedSample, ShardTask
from shards import store
from shards.atomic import atomic_write_bytes
from shards.codec import decode_color, decode_grey, encode_png
from shards.mattes import blend, fit_background, trimap_from_alpha
from shards.schema import hash_columns, member_file, members_of, name_of
from shards.writer import ShardWriter, sha256_file

RECORDS_DIR = ".records"
COMPOSITION_RULE = "merged = alpha*fg + (1-alpha)*fit(bg), alpha = mask/255"
# What makes a sample "replaced" or "failed": only what its files' bytes say (they do not decode,
# or decode to mismatched sizes), so that the same inputs always give the same shard. A file that
# cannot be read (OSError: gone since the plan, a disk, network file system or store failing for
# a moment) is the environment's fault, not the data's: it fails the task, which Dask retries and
# the build reports, instead of silently swapping in a spare that another run would not use.
_DATA_ERRORS = (ValueError,)


@dataclass
class ShardResult:
    """What a task returns and what ``.records/<name>.json`` holds."""

    name: str
    split: str
    samples: int  # samples written (ok + replaced)
    bytes: int
    sha256: str
    rows: list[dict] = field(default_factory=list)  # samples.parquet rows, planned order
    seconds: float = 0.0
    reused: bool = False  # found finished on disk, not rebuilt


@dataclass
class _Foreground:
    ext: str
    data: bytes  # the original's bytes, stored untouched as fg.<ext>
    fg: np.ndarray  # (H, W, 3) uint8 RGB
    alpha: np.ndarray  # (H, W) uint8
    alpha_png: bytes
    trimap_png: bytes
    trimap_source: str


def record_path(out_dir: str | Path, name: str) -> Path | str:
    """Where the record of shard ``name`` (``train/train-000000.tar``) lives (a URL when
    ``out_dir`` is one)."""
    if store.is_remote(out_dir):
        return store.join(out_dir, RECORDS_DIR, Path(name).stem + ".json")
    return Path(out_dir) / RECORDS_DIR / (Path(name).stem + ".json")


def load_finished(task: ShardTask) -> ShardResult | None:
    """The shard's record when its tar exists with the recorded size and sha256, else None.

    Raises:
        shards.store.StoreUnavailable: the store failed (the task fails and is retried).
    """
    if store.is_remote(task.out_dir):
        return _load_finished_remote(task)
    record, tar = record_path(task.out_dir, task.name), Path(task.out_dir) / task.name
    try:
        result = ShardResult(**json.loads(record.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if not tar.is_file() or tar.stat().st_size != result.bytes:
        return None
    if sha256_file(tar)[1] != result.sha256:
        return None
    result.reused = True
    return result


def _load_finished_remote(task: ShardTask) -> ShardResult | None:
    """``load_finished`` on a store: the record, the object's size, then its sha256 (read
    whole, once, only when the size agrees)."""
    tar = store.join(task.out_dir, task.name)
    try:
        result = ShardResult(**json.loads(store.read_bytes(record_path(task.out_dir, task.name),
                                                           task.options)))  # fmt: skip
    except store.NotFound:
        return None
    except (ValueError, TypeError):  # a record that is not ours: rebuild (a StoreError too)
        return None
    if store.size(tar, task.options) != result.bytes:
        return None
    if store.hash_file(tar, task.options) != (result.bytes, result.sha256):
        return None
    result.reused = True
    return result


def _load_foreground(task: ShardTask, fg_id: str) -> _Foreground:
    info = task.foregrounds[fg_id]
    data = read_input(info.original, task.options)
    fg = decode_color(data)
    alpha = decode_grey(read_input(info.mask, task.options))
    if fg.shape[:2] != alpha.shape:
        raise ValueError(f"decoded original {fg.shape[:2]} and mask {alpha.shape} differ")
    level = task.settings.png_level
    trimap_png = b""  # a lean train sample holds none (its json still says how it would be made)
    if task.split == VALIDATION:
        trimap = decode_grey(read_input(info.trimap, task.options))
        trimap_png, source = encode_png(trimap, level), info.trimap_source
    else:
        if "trimap" in {m.name for m in members_of(task.split, task.settings.lean_train)}:
            trimap = trimap_from_alpha(alpha, task.settings.train_trimap_radius)
            trimap_png = encode_png(trimap, level)
        source = "alpha"
    ext = Path(info.original).suffix.lower().lstrip(".")
    return _Foreground(ext, data, fg, alpha, encode_png(alpha, level), trimap_png, source)


def _read_background(
    task: ShardTask, name: str, spares: Iterator[str]
) -> tuple[str | None, bytes, np.ndarray | None, list[str]]:
    """``(name, bytes, pixels, errors)`` of the sample's background, or of the next spare that
    decodes when it does not; ``name`` is None when no spare is left."""
    errors = []
    while name is not None:
        # an OSError is raised: see _DATA_ERRORS
        data = read_input(store.join(task.bg_dir, name), task.options)
        try:
            return name, data, decode_color(data), errors
        except _DATA_ERRORS as exc:
            errors.append(f"background {name}: {exc}")
            name = next(spares, None)
    return None, b"", None, [*errors, "no spare background left"]


def _members(
    task: ShardTask,
    s: PlannedSample,
    fgd: _Foreground,
    bg_name: str,
    bg_bytes: bytes,
    bg: np.ndarray,
) -> dict[str, bytes]:
    """The sample's files, one per member of ``shards.schema.MEMBERS`` for its split."""
    fitted, fit = fit_background(bg, *fgd.alpha.shape)
    members = {
        member_file("alpha"): fgd.alpha_png,
        member_file("fg", fgd.ext): fgd.data,
        member_file("bg", Path(bg_name).suffix.lstrip(".")): bg_bytes,
        member_file("json"): _sample_json(task, s, fgd, bg_name, bg, fit),
    }
    wanted = [m.name for m in members_of(task.split, task.settings.lean_train)]
    if "merged" in wanted:  # a lean train sample skips the composite (most of a sample's time)
        merged = blend(fgd.fg, fitted, fgd.alpha, task.settings.rounding)
        members[member_file("merged")] = encode_png(merged, task.settings.png_level)
    if "trimap" in wanted:
        members[member_file("trimap")] = fgd.trimap_png
    made, wanted = sorted(map(name_of, members)), sorted(wanted)
    assert made == wanted, f"the compositor makes {made}, the schema wants {wanted}"
    return members


def _sample_json(task: ShardTask, s: PlannedSample, fgd: _Foreground, bg_name: str, bg, fit):
    settings = task.settings
    meta = {
        "key": s.key,
        "split": s.split,
        "foreground": Path(task.foregrounds[s.fg_id].original).name,
        "k": s.k,
        "background": bg_name,
        "height": int(fgd.alpha.shape[0]),
        "width": int(fgd.alpha.shape[1]),
        "seed": settings.seed,
        "composition": {"rule": COMPOSITION_RULE, "rounding": settings.rounding},
        "bg_size": [int(bg.shape[1]), int(bg.shape[0])],
        "bg_fit": fit.to_json(),
        "trimap": {
            "source": fgd.trimap_source,
            "radius": settings.train_trimap_radius if fgd.trimap_source == "alpha" else None,
        },
    }
    if bg_name != s.background:
        meta["planned_background"] = s.background
    return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()


def _row(task: ShardTask, s: PlannedSample, status: str, error: str, **extra) -> dict:
    info = task.foregrounds[s.fg_id]
    row = {
        "key": s.key,
        "split": s.split,
        "shard": task.name,
        "position": s.position,
        "foreground": Path(info.original).name,
        "k": s.k,
        "background": s.background,
        "planned_background": s.background,
        "height": info.height,
        "width": info.width,
        "status": status,
        "error": error,
        "members": [],
        "offset": None,
        "length": None,
        **dict.fromkeys(hash_columns()),
    }
    row.update(extra)
    return row


def build_shard(task: ShardTask, force: bool = False, threads: int = 1) -> ShardResult:
    """Composite and write one shard (or return it as found when already finished).

    Args:
        task: the shard's plan slice, paths and settings.
        force: rebuild even when a finished shard is on disk.
        threads: OpenCV threads (``cv2.setNumThreads``); 1 on Dask workers, one core each.
            The bytes do not depend on it (``--check-determinism`` rebuilds with more).

    Returns:
        The shard's ``ShardResult`` (also written to its record file).
    """
    if not force and (done := load_finished(task)) is not None:
        return done
    if store.is_remote(task.out_dir):
        with tempfile.TemporaryDirectory(prefix="indexnet-shard-") as tmp:
            result = _write_shard(task, Path(tmp) / Path(task.name).name, threads)
            # the object first, the record strictly after it: a record means a whole shard
            store.upload(Path(tmp) / Path(task.name).name, store.join(task.out_dir, task.name),
                         task.options)  # fmt: skip
        store.write_bytes(record_path(task.out_dir, task.name),
                          json.dumps(asdict(result)).encode(), task.options)  # fmt: skip
        return result
    result = _write_shard(task, Path(task.out_dir) / task.name, threads)
    record = record_path(task.out_dir, task.name)
    record.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(record, json.dumps(asdict(result)).encode())
    return result


def _write_shard(task: ShardTask, path: Path, threads: int) -> ShardResult:
    """Composite the task's samples into the tar at ``path`` (a local file)."""
    cv2.setNumThreads(threads)  # 1: one core per Dask worker process, no oversubscription
    start = time.perf_counter()
    last_use = {s.fg_id: i for i, s in enumerate(task.samples)}
    cache: dict[str, _Foreground | str] = {}
    spares = iter(task.spares)
    rows = []
    with ShardWriter(path) as writer:
        for i, s in enumerate(task.samples):
            if s.fg_id not in cache:
                try:
                    cache[s.fg_id] = _load_foreground(task, s.fg_id)
                except _DATA_ERRORS as exc:
                    cache[s.fg_id] = f"foreground {task.foregrounds[s.fg_id].stem}: {exc}"
            fgd = cache[s.fg_id]
            if i == last_use[s.fg_id]:
                del cache[s.fg_id]
            if isinstance(fgd, str):
                rows.append(_row(task, s, "failed", fgd))
                continue
            bg_name, bg_bytes, bg, errors = _read_background(task, s.background, spares)
            if bg_name is None:
                rows.append(_row(task, s, "failed", "; ".join(errors)))
                continue
            members = _members(task, s, fgd, bg_name, bg_bytes, bg)
            offset, length = writer.write(s.key, members)
            hashes = {}
            for file, data in members.items():
                hashes[f"{name_of(file)}_size"] = len(data)
                hashes[f"{name_of(file)}_sha256"] = hashlib.sha256(data).hexdigest()
            status = "replaced" if errors else "ok"
            rows.append(_row(task, s, status, "; ".join(errors), background=bg_name,
                             members=sorted(members), offset=offset, length=length,
                             **hashes))  # fmt: skip
        size, digest = writer.close()
    return ShardResult(
        name=task.name,
        split=task.split,
        samples=writer.samples,
        bytes=size,
        sha256=digest,
        rows=rows,
        seconds=time.perf_counter() - start,
    )
