"""The split and the plan: which background each composite gets, and which shard holds it.

Everything here is a pure function of the sorted inputs, the config and the seed (never of
directory order or of how many workers run), so a plan can be recomputed to resume a build.

Order inside a split: foregrounds are shuffled (seeded) and taken in blocks of
``samples_per_shard // 8``; inside a block samples run k-major (``fg1-k0, fg2-k0, ..., fg1-k1``),
and the split's sample list is cut into shards. A shard thus mixes several foregrounds (good for
training's shuffle) while holding each of them several times (its task decodes each once).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from configs import DataConfig
from pipeline.inputs import Foreground, InputError, Inputs, child, shown

TRAIN, VALIDATION = "train", "validation"
SPARES_PER_SHARD = 16  # unused backgrounds a shard may draw on to replace corrupt ones
_SPLIT_STREAM, _BG_STREAM, _ORDER_STREAM = 1, 2, 3  # independent seeded RNG streams


@dataclass(frozen=True)
class Split:
    """Which foreground ids are train and which validation, and by what rule."""

    train: tuple[str, ...]
    validation: tuple[str, ...]
    # "reference-list" (the configured ids found in the data), "seeded", or the layout's own
    # ("dataset": Adobe's Training_set/Test_set; "folders": --val-fg-dir)
    rule: str
    listed_missing: tuple[str, ...] = ()  # configured validation ids absent from the data


@dataclass(frozen=True)
class PlannedSample:
    """One composite to make."""

    key: str  # <stem>-<k> (AIM-500: o_<id>-<k>), unique in the set
    split: str
    shard: str  # path relative to the set, e.g. train/train-000000.tar
    position: int  # index within the shard
    fg_id: str
    k: int  # composite number of this foreground, 0..B-1
    background: str  # file name in the bg dir


@dataclass(frozen=True)
class Settings:
    """What a shard task needs beyond its samples (all recorded in every sample's json)."""

    seed: int
    rounding: str
    png_level: int
    train_trimap_radius: int
    lean_train: bool = False  # train samples hold only shards.schema.lean_members("train")


@dataclass(frozen=True)
class ShardTask:
    """Everything one worker needs to write one shard: paths and plan rows, never pixels."""

    name: str  # e.g. train/train-000000.tar
    split: str
    out_dir: str  # a local folder or a store URL
    bg_dir: str
    samples: tuple[PlannedSample, ...]
    foregrounds: dict[str, Foreground]  # the foregrounds this shard uses
    spares: tuple[str, ...]  # unused backgrounds to replace unreadable ones, in order
    settings: Settings
    # the store's --storage-option values, for the worker's own reads and uploads; they may
    # hold secrets, so a task's repr (in a log, a Dask error) leaves them out
    options: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Plan:
    """The whole build: split, samples in shard order, spares per shard, pixel settings."""

    split: Split
    samples: tuple[PlannedSample, ...]
    settings: Settings
    spares: dict[str, tuple[str, ...]] = field(default_factory=dict)
    bg_reuse: bool = False  # backgrounds are reused (--allow-bg-reuse with too few)

    @property
    def shards(self) -> tuple[str, ...]:
        """Shard paths in order, train first."""
        return tuple(dict.fromkeys(s.shard for s in self.samples))

    def table(self) -> pa.Table:
        """The plan as a table (``plan.parquet``); spares and the split in its metadata."""
        rows = [asdict(s) for s in self.samples]
        meta = {  # a resumed build must match all of it, settings included
            "split": asdict(self.split),
            "settings": _settings_meta(self.settings),
            "spares": {k: list(v) for k, v in self.spares.items()},
            "bg_reuse": self.bg_reuse,
        }
        schema = pa.schema(
            [
                ("key", pa.string()),
                ("split", pa.string()),
                ("shard", pa.string()),
                ("position", pa.int32()),
                ("fg_id", pa.string()),
                ("k", pa.int32()),
                ("background", pa.string()),
            ],
            metadata={"plan": json.dumps(meta, sort_keys=True)},
        )
        return pa.Table.from_pylist(rows, schema=schema)


def _settings(cfg: DataConfig) -> Settings:
    return Settings(cfg.seed, cfg.rounding, cfg.png_compression, cfg.train_trimap_radius,
                    cfg.lean_train)  # fmt: skip


def _settings_meta(settings: Settings) -> dict[str, Any]:
    """The settings as ``plan.parquet`` records them: ``lean_train`` only when set, so that a
    full build's plan is the one it always was (and older builds still resume)."""
    meta = asdict(settings)
    if not settings.lean_train:
        del meta["lean_train"]
    return meta


def split_foregrounds(
    ids: Sequence[str], listed: Sequence[str], seed: int, val_fraction: float, val_count: int | None
) -> Split:
    """The reference's validation ids when any is in the data, else a seeded split.

    Args:
        ids: every foreground id in the data.
        listed: the configured validation ids (configs/aim500_validation.txt).
        seed: seeds the fallback split.
        val_fraction: fallback share held out when ``val_count`` is None.
        val_count: fallback number held out.

    Raises:
        InputError: too few foregrounds to have both splits.
    """
    ids = sorted(ids)
    present = sorted(set(listed) & set(ids))
    if present:
        validation = present
        rule = "reference-list"
    else:
        count = val_count if val_count is not None else max(1, round(val_fraction * len(ids)))
        if not 1 <= count < len(ids):
            raise InputError(
                "cannot split the foregrounds",
                [f"--val-count {count} must be in 1..{len(ids) - 1} for {len(ids)} foregrounds"],
            )
        perm = np.random.default_rng([seed, _SPLIT_STREAM]).permutation(len(ids))
        validation = sorted(ids[i] for i in perm[:count])
        rule = "seeded"
    train = [i for i in ids if i not in set(validation)]
    if not train:
        raise InputError("cannot split the foregrounds", ["every foreground is a validation id"])
    missing = tuple(sorted(set(listed) - set(ids))) if present else ()
    return Split(tuple(train), tuple(validation), rule, missing)


def _order(fg_ids: Sequence[str], per_fg: int, block: int, rng: np.random.Generator):
    """(fg_id, k) pairs: shuffled foregrounds in blocks, k-major inside each block."""
    shuffled = [fg_ids[i] for i in rng.permutation(len(fg_ids))]
    for start in range(0, len(shuffled), block):
        group = shuffled[start : start + block]
        for k in range(per_fg):
            for fg in group:
                yield fg, k


def make_plan(
    inputs: Inputs,
    split: Split,
    cfg: DataConfig,
    allow_bg_reuse: bool = False,
    earlier_problems: Sequence[str] = (),
) -> Plan:
    """Pair every (split, foreground, k) with a background and place it in a shard.

    Backgrounds are the sorted file list permuted by the seed: validation takes the first
    ones, train the next, the rest are spares; train and validation never share one.

    Args:
        inputs: the scanned inputs.
        split: which foregrounds are train and validation.
        cfg: the data config (counts, shard size, seed, pixel settings).
        allow_bg_reuse: reuse backgrounds when there are too few for unique pairing.
        earlier_problems: problems found by earlier checks, reported together with these.

    Raises:
        InputError: validation foregrounds without a trimap, too few backgrounds, or any
            ``earlier_problems``: all listed in one error.
    """
    problems = list(earlier_problems)
    by_id = {fg.id: fg for fg in inputs.foregrounds}
    for fid in split.validation:
        if by_id[fid].trimap is None:
            problems.append(_no_trimap(inputs, by_id[fid]))
    if inputs.paired:
        if problems:
            raise InputError(
                f"{len(problems)} problem(s) with the inputs; nothing was written", problems
            )
        return _paired_plan(inputs, split, cfg)
    per_split = {TRAIN: cfg.bgs_per_train_fg, VALIDATION: cfg.bgs_per_val_fg}
    ids = {TRAIN: split.train, VALIDATION: split.validation}
    need = {s: len(ids[s]) * per_split[s] for s in ids}
    total, found = sum(need.values()), len(inputs.backgrounds)
    reuse = total > found
    if reuse and (not allow_bg_reuse or found < 2):
        problems.append(
            f"{shown(inputs.bg_dir)}: {total:,} unique backgrounds needed ({len(split.train)} "
            f"train x {cfg.bgs_per_train_fg} + {len(split.validation)} validation x "
            f"{cfg.bgs_per_val_fg}), "
            f"{found:,} found; add backgrounds, lower --bgs-per-train-fg/--bgs-per-val-fg, or "
            + (
                "pass --allow-bg-reuse"
                if found >= 2
                else "provide at least 2 with --allow-bg-reuse"
            )
        )
    if problems:
        raise InputError(
            f"{len(problems)} problem(s) with the inputs; nothing was written", problems
        )

    bg_perm = [
        inputs.backgrounds[i]
        for i in np.random.default_rng([cfg.seed, _BG_STREAM]).permutation(found)
    ]
    if reuse:  # disjoint pools in proportion to need, each cycled
        n_val = min(found - 1, max(1, round(found * need[VALIDATION] / total)))
        pools = {VALIDATION: bg_perm[:n_val], TRAIN: bg_perm[n_val:]}
        leftover: list[str] = []
    else:
        pools = {VALIDATION: bg_perm[: need[VALIDATION]], TRAIN: bg_perm[need[VALIDATION] : total]}
        leftover = bg_perm[total:]

    samples: list[PlannedSample] = []
    block = max(1, cfg.samples_per_shard // 8)
    for split_name in (TRAIN, VALIDATION):
        rng = np.random.default_rng([cfg.seed, _ORDER_STREAM, split_name == TRAIN])
        pool = pools[split_name]
        pairs = _order(sorted(ids[split_name]), per_split[split_name], block, rng)
        samples += _place(split_name, pairs, by_id, cfg.samples_per_shard,
                          lambda j, fid, k, pool=pool: pool[j % len(pool)])  # fmt: skip
    shards = list(dict.fromkeys(s.shard for s in samples))
    spares = {
        name: tuple(leftover[i :: len(shards)][:SPARES_PER_SHARD]) for i, name in enumerate(shards)
    }
    settings = _settings(cfg)
    return Plan(split, tuple(samples), settings, spares, reuse)


def _place(
    split_name: str,
    pairs: Sequence[tuple[str, int]],
    by_id: Mapping[str, Foreground],
    per_shard: int,
    background: Callable[[int, str, int], str],
) -> list[PlannedSample]:
    """The split's ``(foreground, k)`` pairs in order, ``per_shard`` to a shard; the ``j``-th
    pair's background is ``background(j, fg_id, k)``."""
    placed = []
    for j, (fid, k) in enumerate(pairs):
        shard_no, position = divmod(j, per_shard)
        placed.append(
            PlannedSample(
                key=f"{by_id[fid].stem}-{k:03d}",
                split=split_name,
                shard=f"{split_name}/{split_name}-{shard_no:06d}.tar",
                position=position,
                fg_id=fid,
                k=k,
                background=background(j, fid, k),
            )
        )
    return placed


def _no_trimap(inputs: Inputs, fg: Foreground) -> str:
    """The problem of a validation foreground without a trimap, naming where it was looked for."""
    why = "(validation foregrounds are scored on their own trimap)"
    if inputs.layout == "aim500":
        return f"{shown(child(inputs.data_dir, 'trimap', f'o_{fg.id}.png'))}: missing {why}"
    return (
        f"{shown(fg.original)}: no trimap {why}; give it one (same file stem) in the trimap folder"
    )


def _paired_plan(inputs: Inputs, split: Split, cfg: DataConfig) -> Plan:
    """The plan of a layout that pairs backgrounds itself: foreground ``f``'s ``k``-th sample gets
    ``f.backgrounds[k]``; no spares (a substitute would change the data set), no reuse."""
    by_id = {fg.id: fg for fg in inputs.foregrounds}
    samples: list[PlannedSample] = []
    block = max(1, cfg.samples_per_shard // 8)
    for split_name, ids in ((TRAIN, split.train), (VALIDATION, split.validation)):
        rng = np.random.default_rng([cfg.seed, _ORDER_STREAM, split_name == TRAIN])
        per_fg = {len(by_id[fid].backgrounds) for fid in ids}
        if len(per_fg) > 1:
            raise ValueError(f"{split_name}: foregrounds with different background counts")
        pairs = _order(sorted(ids), per_fg.pop() if per_fg else 0, block, rng)
        samples += _place(split_name, pairs, by_id, cfg.samples_per_shard,
                          lambda j, fid, k: by_id[fid].backgrounds[k])  # fmt: skip
    settings = _settings(cfg)
    return Plan(split, tuple(samples), settings)


def shard_tasks(
    plan: Plan, inputs: Inputs, out_dir: str | Path, options: dict[str, Any] | None = None
) -> list[ShardTask]:
    """One ``ShardTask`` per shard, in plan order; ``options`` are the store's (for URLs)."""
    by_id = {fg.id: fg for fg in inputs.foregrounds}
    grouped: dict[str, list[PlannedSample]] = {}
    for sample in plan.samples:
        grouped.setdefault(sample.shard, []).append(sample)
    return [
        ShardTask(
            name=name,
            split=rows[0].split,
            out_dir=str(out_dir),
            bg_dir=str(inputs.bg_dir_of(rows[0].split)),
            samples=tuple(rows),
            foregrounds={fid: by_id[fid] for fid in dict.fromkeys(r.fg_id for r in rows)},
            spares=plan.spares.get(name, ()),
            settings=plan.settings,
            options=dict(options or {}),
        )
        for name, rows in grouped.items()
    ]
