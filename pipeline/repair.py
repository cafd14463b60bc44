"""Rebuild exactly the shards that ``verify`` rejects or that are missing, then verify again.

Shards are deterministic, so a rebuilt shard must reproduce what was recorded: each is built in
``OUT/.repair/`` and moved into place only when its sha256 equals ``index.json``'s, or, where
that entry itself was altered, when every member's sha256 equals ``samples.parquet``'s (then the
entry is corrected from the rebuilt shard). Unlisted
tar files are moved to ``OUT/.quarantine/`` (never deleted). The plan is recomputed from the
inputs and the config recorded in the index, and must equal ``plan.parquet``: inputs that
changed since the build cannot reproduce its shards, and repair says so instead of writing
different bytes.

The set and its inputs may be store URLs (``shards.store``): staging and quarantine are then
prefixes of the set, and a shard moves into place as a server-side copy (whole or absent).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from configs import config_from_dict
from pipeline import layouts
from pipeline.build import PLAN_NAME, prepare, same_plan
from pipeline.compose import build_shard, record_path
from pipeline.inputs import child, location, shown
from pipeline.plan import shard_tasks
from shards import store
from shards.index import Index, ShardInfo, read_index, read_samples, write_index
from shards.schema import hash_columns
from shards.verify import VerifyReport

STAGING = ".repair"
QUARANTINE = ".quarantine"


@dataclass
class RepairSummary:
    """What ``repair`` did."""

    before: VerifyReport
    after: VerifyReport | None = None
    rebuilt: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    unrepairable: list[tuple[str, str]] = field(default_factory=list)  # (shard or file, why)
    index_corrected: list[str] = field(default_factory=list)  # entries rewritten from rebuilds

    @property
    def ok(self) -> bool:
        return self.after is not None and self.after.ok


def recorded_sources(index: Index, given: Mapping[str, str | Path | None]) -> layouts.Sources:
    """The layout and input folders ``index.json`` records (sets built before layouts: AIM-500's
    ``data_dir`` and ``bg_dir``), each replaced by the one ``given`` (by ``Sources`` field name;
    None: the recorded one)."""
    recorded = index.meta.get("inputs", {})
    layout = layouts.get(recorded.get("layout", layouts.DEFAULT))
    reads = (*layout.required, *layout.optional)
    folders = {name: recorded.get(name) for name in reads}
    folders.update({name: v for name, v in given.items() if v is not None and name in reads})
    return layouts.Sources(layout.name, **{k: v for k, v in folders.items() if v is not None})


def repair(
    root: str | Path,
    data_dir: str | Path | None,
    bg_dir: str | Path | None,
    run_verify: Callable[[], VerifyReport],
    run_tasks: Callable[[Callable, list], object],
    options: Mapping | None = None,
    folders: Mapping[str, str | Path | None] | None = None,
) -> RepairSummary:
    """Verify, rebuild what failed from the inputs, move it into place, verify again.

    The inputs are read with the layout the set was built with, from the folders its
    ``index.json`` records unless given here.

    Args:
        root: the shard set (a folder or a store URL).
        data_dir: the data set's folder (or URL) the set was built from; None: as recorded.
        bg_dir: its backgrounds folder (or URL); None: as recorded.
        run_verify: runs ``shards.verify.verify`` on ``root`` (the CLI passes a Dask one, with
            the store's options).
        run_tasks: maps a function over tasks, yielding ``(task, result, error)``.
        options: the store's options (``--storage-option``) for every URL.
        folders: the layout's other folders (``pipeline.layouts.Sources`` field -> folder,
            e.g. ``val_bg_dir``, ``fg_dir``); missing or None: as recorded.

    Raises:
        ValueError: the index is unusable, or the inputs no longer give the recorded plan.
    """
    root = location(root)
    summary = RepairSummary(before=run_verify())
    if summary.before.ok:
        summary.after = summary.before
        return summary
    if summary.before.checks.get("index") or summary.before.checks.get("samples"):
        raise ValueError(
            f"{shown(root)}: the index itself is unusable ({summary.before.problems[0].detail}); "
            "re-run `indexnet pipeline build` with the same options to finish or rebuild the set"
        )
    index = read_index(root, options)
    listed = {s.path: s for s in index.shards}
    for rel in [p.shard for p in summary.before.problems if p.check == "listing"]:
        store.move(store.join(root, rel), store.join(root, QUARANTINE, rel), options)
        summary.quarantined.append(rel)
    bad = [s for s in summary.before.bad_shards if s in listed]
    if bad:
        cfg = config_from_dict(index.meta["config"])
        split = index.meta.get("split", {})
        val_count = len(split.get("validation", [])) if split.get("rule") == "seeded" else None
        reuse = bool(index.meta.get("composition", {}).get("bg_reuse"))
        sources = recorded_sources(
            index, {"data_dir": data_dir, "bg_dir": bg_dir, **(folders or {})}
        )
        if layouts.get(sources.layout).splits:
            val_count = None  # the layout's own split
        inputs, plan = prepare(None, None, cfg, allow_bg_reuse=reuse, val_count=val_count,
                               options=options, sources=sources)  # fmt: skip
        if not same_plan(root, plan, options):
            named = ", ".join(f"{layouts.OPTION_NAMES[k]} {shown(v)}"
                              for k, v in sources.given().items())  # fmt: skip
            raise ValueError(
                f"the inputs ({named}; --layout {sources.layout}) do not give the plan this set "
                f"was built from ({shown(child(root, PLAN_NAME))}); repair needs the original "
                "inputs"
            )
        staging = child(root, STAGING)
        store.remove(staging, options, recursive=True)
        tasks = [
            dataclasses.replace(t, out_dir=str(staging))
            for t in shard_tasks(plan, inputs, root, options)
            if t.name in bad
        ]
        recorded_members = _member_hashes(read_samples(root, options).to_pylist())
        corrected = dict(listed)
        for task, result, error in run_tasks(_rebuild, tasks):
            if error is not None:
                summary.unrepairable.append((task.name, f"rebuild failed: {error}"))
                continue
            same_tar = result.sha256 == listed[task.name].sha256
            same_members = _member_hashes(result.rows) == {
                k: v for k, v in recorded_members.items() if k[0] == task.name
            }
            if not (same_tar or same_members):
                summary.unrepairable.append(
                    (task.name, "the rebuilt shard differs from what the index records: the "
                                "inputs' content or the library versions changed since the "
                                "build; left as it was")
                )  # fmt: skip
                continue
            # the shard first, its record after: a record always means a whole shard
            store.move(store.join(staging, task.name), store.join(root, task.name), options)
            store.move(record_path(staging, task.name), record_path(root, task.name), options)
            summary.rebuilt.append(task.name)
            if not same_tar:
                corrected[task.name] = ShardInfo(task.name, task.split, result.samples,
                                                 result.bytes, result.sha256)  # fmt: skip
                summary.index_corrected.append(task.name)
        store.remove(staging, options, recursive=True)
        if summary.index_corrected:
            meta = dict(index.meta)
            write_index(root, [corrected[s.path] for s in index.shards], meta, options)
    summary.after = run_verify()
    return summary


_SHA_COLUMNS = tuple(c for c in hash_columns() if c.endswith("_sha256"))


def _member_hashes(rows: list[dict]) -> dict[tuple[str, str], tuple]:
    """(shard, key) -> (status, member sha256s) of every sample row."""
    return {
        (row["shard"], row["key"]): (row["status"], *(row[c] for c in _SHA_COLUMNS)) for row in rows
    }


def _rebuild(task):
    return build_shard(task, force=True)
