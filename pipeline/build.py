"""``build``: validate, plan, composite every shard on Dask, then write the index last.

The order of a build, and why:

1. ``prepare``: scan and check every input, split, plan. Any problem stops here, with every
   offender listed and nothing written.
2. Write ``plan.parquet`` (atomic). A re-run recomputes the plan and refuses to resume a
   different one (other inputs, seed or config) unless ``--overwrite``.
3. One Dask task per shard (``pipeline.compose.build_shard``), bounded in flight. A finished
   shard (tar and record agree) is kept, so a killed build resumes where it stopped, and the
   result is byte-identical to an uninterrupted build.
4. ``samples.parquet``, then ``index.json``: the commit marker, written only when every shard
   is on disk.

Inputs and ``out`` may each be a local folder or a store URL (``s3://bucket/set``; see
``shards.store``), so a build needs no shared filesystem: each worker reads its inputs and
uploads its own shards. The store's options (``--storage-option``) travel to the tasks but are
never written into ``plan.parquet``, ``samples.parquet``, ``index.json`` or a message; the index
names the input folders without any credentials in their URLs.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from configs import Config
from pipeline import layouts
from pipeline.compose import COMPOSITION_RULE, RECORDS_DIR, ShardResult, build_shard
from pipeline.inputs import InputError, Inputs, location, read_input, relative, shown
from pipeline.plan import Plan, Split, make_plan, shard_tasks, split_foregrounds
from shards import store
from shards.atomic import TMP_SUFFIX
from shards.cluster import ClusterOptions, dashboard_link, dask_client, map_bounded
from shards.codec import decode_grey
from shards.index import INDEX_NAME, SAMPLES_NAME, ShardInfo, write_index, write_samples
from shards.mattes import TRIMAP_VALUES
from shards.schema import SPLITS, members_of

PLAN_NAME = "plan.parquet"
ROUNDING_NOTES = {  # what index.json says of each data.rounding
    "nearest": "nearest integer of the exact float blend (the reference truncates)",
    "truncate": "the exact float blend truncated (the reference's rule, without its float error)",
    "adobe": "Adobe's composition code to the bit: alpha = mask/255. in float32, "
    "alpha*fg + (1-alpha)*bg in float32, truncated to uint8",
}
PAIRED_NOTE = (
    "the layout's lists: foreground i of a names file gets backgrounds i*n..i*n+n-1 of its "
    "background list, n = len(bg list)/len(fg list); no spares"
)


@dataclass
class BuildSummary:
    """The outcome of a build, for the closing summary and the exit code."""

    out: Path | str  # a local folder or a store URL
    planned: int = 0  # samples in the plan
    written: int = 0  # samples in the shards
    replaced: int = 0  # written with a spare background
    failed: int = 0  # planned but left out (see samples.parquet status/error)
    shards: int = 0
    reused: int = 0  # shards found finished on disk
    bytes: int = 0
    seconds: float = 0.0
    failed_shards: list[tuple[str, str]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every planned sample is in a shard and the index is written."""
        return not self.failed_shards and self.failed == 0

    @property
    def samples_per_second(self) -> float:
        return self.written / self.seconds if self.seconds else 0.0


class BuildProgress:
    """Callbacks a front end overrides to show progress; the defaults do nothing."""

    def start(
        self, out: Path | str, samples: int, shards: int, cluster: str, dashboard: str | None
    ):
        """Before the first shard is submitted."""

    def shard_done(self, result: ShardResult | None, samples: int) -> None:
        """After each shard (``result`` None when it failed); ``samples`` it planned."""


def default_out(data_dir: str | Path) -> Path | str:
    """Shards go to a ``shards`` folder beside the data dir (``Sources.root``) unless ``--out``
    says otherwise."""
    if store.is_remote(data_dir):
        return str(data_dir).rstrip("/").rsplit("/", 1)[0] + "/shards"
    return Path(data_dir).resolve().parent / "shards"


def _validation_trimap_problems(
    inputs: Inputs, split: Split, options: Mapping | None = None
) -> list[str]:
    """Validation is scored on AIM-500's trimaps: they must hold only 0, 128 and 255."""
    problems = []
    by_id = {fg.id: fg for fg in inputs.foregrounds}
    for fid in split.validation:
        path = by_id[fid].trimap
        if path is None:
            continue  # reported by make_plan together with the background count
        try:
            values = np.unique(decode_grey(read_input(path, options)))
        except (OSError, ValueError) as exc:
            problems.append(f"{shown(path)}: {exc}")
            continue
        extra = sorted(set(values.tolist()) - set(TRIMAP_VALUES))
        if extra:
            problems.append(f"{shown(path)}: trimap values must be 0/128/255, found {extra[:8]}")
    return problems


def prepare(
    data_dir: str | Path | None, bg_dir: str | Path | None, cfg: Config,
    allow_bg_reuse: bool = False, val_count: int | None = None, options: Mapping | None = None,
    sources: layouts.Sources | None = None,
) -> tuple[Inputs, Plan]:  # fmt: skip
    """Scan, check, split and plan; writes nothing. ``options``: the store's, for URLs.

    ``sources`` names the layout and its folders (``pipeline.layouts``); without it the inputs
    are AIM-500's ``data_dir`` and ``bg_dir``.

    Raises:
        InputError: every problem found with the inputs, listed.
        ValueError: ``sources`` lacks a folder its layout needs, or gives one it does not read.
        shards.store.StoreError: a store refuses the inputs (403) or their bucket is missing.
    """
    sources = sources or layouts.Sources(data_dir=data_dir, bg_dir=bg_dir)
    inputs = layouts.scan(sources, options)
    data = cfg.data
    ids = [fg.id for fg in inputs.foregrounds]
    if inputs.split is not None:
        split = Split(*inputs.split)
        if not split.train or not split.validation:
            counts = f"{len(split.train)} train and {len(split.validation)} validation"
            raise InputError("cannot split the foregrounds", [
                f"{shown(sources.root)}: the layout's split has {counts} foregrounds; both "
                "need one or more"])  # fmt: skip
    else:
        if len(ids) < 2:
            raise InputError(
                "cannot split the foregrounds",
                [f"{shown(sources.root)}: 2 or more foregrounds needed, found {len(ids)}"],
            )
        split = split_foregrounds(ids, data.validation_ids, data.seed, data.val_fraction, val_count)
    problems = _validation_trimap_problems(inputs, split, options)
    return inputs, make_plan(inputs, split, data, allow_bg_reuse, problems)


def _clear(out: Path | str, options: Mapping | None = None) -> None:
    """Remove a previous build's outputs (only what a build writes)."""
    store.remove(store.join(out, INDEX_NAME), options)
    for name in (SAMPLES_NAME, PLAN_NAME):
        store.remove(store.join(out, name), options)
    for sub in (*SPLITS, RECORDS_DIR):
        store.remove(store.join(out, sub), options, recursive=True)


def same_plan(out: Path | str, plan: Plan, options: Mapping | None = None) -> bool:
    """Whether ``out/plan.parquet`` is ``plan`` (rows, split, settings and spares).

    Raises:
        shards.store.StoreError, StoreUnavailable: the store refuses or fails (a missing plan
            is just a different plan).
    """
    try:
        data = store.read_bytes(store.join(out, PLAN_NAME), options)
    except store.NotFound:
        return False
    try:
        return pq.read_table(pa.BufferReader(data)).equals(plan.table(), check_metadata=True)
    except Exception:  # noqa: BLE001 - an unreadable plan is a different plan
        return False


def _claim(out: Path | str, plan: Plan, overwrite: bool, options: Mapping | None = None) -> None:
    """Start or resume ``out`` for this plan; refuse to mix two different builds."""
    store.make_dirs(out, options)
    if overwrite:
        _clear(out, options)
    existing = store.join(out, PLAN_NAME)
    if store.exists(existing, options):
        if not same_plan(out, plan, options):
            raise ValueError(
                f"{shown(out)} holds a build with a different plan (other inputs, seed or "
                "config); pass --overwrite to start over, or choose another --out"
            )
    else:
        sink = pa.BufferOutputStream()
        pq.write_table(plan.table(), sink)
        store.write_bytes(existing, sink.getvalue().to_pybytes(), options)
    _remove_temporaries(out, options)


def _remove_temporaries(out: Path | str, options: Mapping | None = None) -> None:
    """Delete what killed writers left: ``*.tmp`` files are never finished shards or records;
    on S3, the unfinished multipart uploads of shards (invisible, but billed)."""
    if store.is_remote(out):
        store.abort_stale_uploads(str(out), options)
        return
    for sub in (".", *SPLITS, RECORDS_DIR):
        for stale in (Path(out) / sub).glob(f"*{TMP_SUFFIX}"):
            stale.unlink(missing_ok=True)


def _conversions(inputs: Inputs, split: Split) -> list[dict[str, str]]:
    """The converted inputs this build reads, as ``index.json`` lists them (``file``, ``how``);
    a train foreground's trimap is never read (training trimaps come from the alpha)."""
    train = set(split.train)
    unread = {relative(inputs.data_dir, fg.trimap) for fg in inputs.foregrounds
              if fg.id in train and fg.trimap}  # fmt: skip
    return [asdict(c) for c in inputs.conversions if c.file not in unread]


def _index_meta(cfg: Config, inputs: Inputs, plan: Plan, summary: BuildSummary, cluster: str):
    split = plan.split
    return {
        "config": cfg.to_dict(),
        "split": {
            "rule": split.rule,
            "train": list(split.train),
            "validation": list(split.validation),
            "listed_missing": list(split.listed_missing),
        },
        "composition": {
            "rule": COMPOSITION_RULE,
            "rounding": cfg.data.rounding,
            "rounding_note": ROUNDING_NOTES.get(cfg.data.rounding, ""),
            "bg_fit": "ratio=max(w/bw,h/bh); if >1 bicubic resize to ceil(b*ratio); crop top-left",
            "bg_member": "the source background's bytes untouched; fit parameters in json",
            "bg_reuse": plan.bg_reuse,
            **({"pairing": PAIRED_NOTE} if inputs.paired else {}),
        },
        # what the samples of each split hold; lean: train samples hold only what training reads
        "lean_train": cfg.data.lean_train,
        "members": {s: [m.name for m in members_of(s, cfg.data.lean_train)] for s in SPLITS},
        "counts": {
            "planned": summary.planned,
            "written": summary.written,
            "replaced": summary.replaced,
            "failed": summary.failed,
            **{s: sum(1 for p in plan.samples if p.split == s) for s in SPLITS},
        },
        "inputs": {
            "layout": inputs.layout,
            **dict(inputs.sources),
            "foregrounds": len(inputs.foregrounds),
            "backgrounds": len(inputs.backgrounds),
            "conversions": _conversions(inputs, split),
        },  # fmt: skip
        "build": {
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(summary.seconds, 3),
            "cluster": cluster,
            "opencv": cv2.__version__,
        },
    }


def build(
    data_dir: str | Path,
    bg_dir: str | Path,
    cfg: Config,
    out: str | Path | None = None,
    cluster: ClusterOptions | None = None,
    *,
    allow_bg_reuse: bool = False,
    val_count: int | None = None,
    overwrite: bool = False,
    progress: BuildProgress | None = None,
    options: Mapping | None = None,
    sources: layouts.Sources | None = None,
) -> BuildSummary:
    """Build (or resume) a shard set from a layout's inputs and a folder of backgrounds.

    Args:
        data_dir: ``original/``, ``mask/``, ``trimap/`` folder (a local path or a store URL).
        bg_dir: background photos (a local path or a store URL).
        cfg: resolved config (``cfg.data`` drives the build).
        out: destination, a local folder or a store URL; default ``default_out(data_dir)``.
        cluster: local workers or an existing scheduler.
        allow_bg_reuse: reuse backgrounds deterministically when there are too few.
        val_count: size of the seeded validation split (when no listed id is present).
        overwrite: delete a previous build in ``out`` first.
        progress: callbacks for a progress display.
        options: the store's options (``--storage-option``) for every URL; never recorded.
        sources: another layout's folders (``pipeline.layouts``); ``data_dir`` and ``bg_dir``
            are then ignored.

    Returns:
        A ``BuildSummary``; ``complete`` says whether the set is whole.

    Raises:
        InputError: bad inputs (nothing written).
        ValueError: ``out`` holds a different build; a store refuses ``out`` or the inputs
            (403), or their bucket is missing (``shards.store.StoreError``, before any work).
        shards.store.StoreUnavailable: a store failed in transit before the shards started.
    """
    start = time.perf_counter()
    progress = progress or BuildProgress()
    cluster = cluster or ClusterOptions(workers=1)
    sources = sources or layouts.Sources(data_dir=data_dir, bg_dir=bg_dir)
    out = location(out) if out else default_out(sources.root)
    if store.is_remote(out):  # a missing bucket or a refused one, before scanning the inputs
        store.make_dirs(out, options)
    inputs, plan = prepare(None, None, cfg, allow_bg_reuse, val_count, options, sources)
    _claim(out, plan, overwrite, options)
    tasks = shard_tasks(plan, inputs, out, options)
    summary = BuildSummary(out=out, planned=len(plan.samples), shards=len(tasks))
    results: dict[str, ShardResult] = {}
    with dask_client(cluster) as client:
        progress.start(
            out, len(plan.samples), len(tasks), cluster.describe(), dashboard_link(client)
        )
        for task, result, error in map_bounded(client, build_shard, tasks, name="shard"):
            if error is not None:
                summary.failed_shards.append((task.name, f"{type(error).__name__}: {error}"))
                progress.shard_done(None, len(task.samples))
                continue
            results[task.name] = result
            summary.reused += result.reused
            progress.shard_done(result, len(task.samples))
    rows = [row for task in tasks if task.name in results for row in results[task.name].rows]
    summary.written = sum(r.samples for r in results.values())
    summary.bytes = sum(r.bytes for r in results.values())
    summary.replaced = sum(row["status"] == "replaced" for row in rows)
    summary.failed = sum(row["status"] == "failed" for row in rows)
    summary.seconds = time.perf_counter() - start
    if summary.failed_shards:
        return summary  # no index: the set is unfinished; a re-run resumes it
    _remove_temporaries(out, options)  # e.g. from a worker killed mid-shard (it ran again)
    write_samples(out, rows, options)
    shards = [ShardInfo(t.name, t.split, results[t.name].samples, results[t.name].bytes,
                        results[t.name].sha256) for t in tasks]  # fmt: skip
    write_index(out, shards, _index_meta(cfg, inputs, plan, summary, cluster.describe()), options)
    summary.seconds = time.perf_counter() - start
    return summary
