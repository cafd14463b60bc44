"""pipeline.plan: the split and the pairing are pure functions of sorted inputs and the seed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from configs import load_config
from pipeline.inputs import Foreground, InputError, Inputs
from pipeline.plan import TRAIN, VALIDATION, make_plan, shard_tasks, split_foregrounds


def _inputs(n_fg: int, n_bg: int, trimaps: bool = True) -> Inputs:
    fgs = tuple(
        Foreground(
            f"{i:08x}",
            f"/d/original/o_{i:08x}.jpg",
            f"/d/mask/o_{i:08x}.png",
            f"/d/trimap/o_{i:08x}.png" if trimaps else None,
            40,
            60,
        )  # fmt: skip
        for i in range(n_fg)
    )
    bgs = tuple(f"bg_{j:05d}.jpg" for j in range(n_bg))
    return Inputs(Path("/d"), Path("/b"), fgs, bgs, ())


def _cfg(**data):
    return load_config(overrides=[f"data.{k}={v}" for k, v in data.items()]).data


def _plan(n_fg=20, n_bg=400, reuse=False, **data):
    inputs = _inputs(n_fg, n_bg)
    cfg = _cfg(**{"bgs_per_train_fg": 8, "bgs_per_val_fg": 4, "samples_per_shard": 16, **data})
    split = split_foregrounds([f.id for f in inputs.foregrounds], (), cfg.seed, 0.1, None)
    return inputs, cfg, make_plan(inputs, split, cfg, reuse)


def test_reference_list_wins_when_present():
    split = split_foregrounds(["a", "b", "c", "d"], ["c", "zz"], seed=0, val_fraction=0.5,
                              val_count=None)  # fmt: skip
    assert split.rule == "reference-list" and split.validation == ("c",)
    assert split.train == ("a", "b", "d") and split.listed_missing == ("zz",)


def test_seeded_split_is_deterministic_and_order_free():
    ids = [f"{i:02d}" for i in range(30)]
    a = split_foregrounds(ids, [], 3, 0.1, None)
    b = split_foregrounds(list(reversed(ids)), [], 3, 0.1, None)
    assert a == b and a.rule == "seeded" and len(a.validation) == 3
    assert split_foregrounds(ids, [], 4, 0.1, None).validation != a.validation
    assert len(split_foregrounds(ids, [], 3, 0.1, 7).validation) == 7
    with pytest.raises(InputError, match="--val-count 30 must be in 1..29"):
        split_foregrounds(ids, [], 3, 0.1, 30)


def test_every_background_used_once_and_splits_disjoint():
    inputs, cfg, plan = _plan()
    used = Counter(s.background for s in plan.samples)
    assert max(used.values()) == 1
    by_split = {
        s: {p.background for p in plan.samples if p.split == s} for s in (TRAIN, VALIDATION)
    }
    assert not by_split[TRAIN] & by_split[VALIDATION]
    assert len(plan.samples) == 18 * 8 + 2 * 4
    spares = [b for names in plan.spares.values() for b in names]
    assert len(spares) == len(set(spares)) and not set(spares) & set(used)


def test_keys_shards_and_positions():
    _, cfg, plan = _plan()
    keys = [s.key for s in plan.samples]
    assert len(keys) == len(set(keys)) and all("." not in k for k in keys)
    assert plan.shards[0] == "train/train-000000.tar" and plan.shards[-1].startswith("validation/")
    for shard in plan.shards:
        rows = [s for s in plan.samples if s.shard == shard]
        assert [r.position for r in rows] == list(range(len(rows)))
        assert len(rows) <= cfg.samples_per_shard


def test_shards_mix_foregrounds_but_repeat_each():
    _, _, plan = _plan(samples_per_shard=16)
    first = [s for s in plan.samples if s.shard == "train/train-000000.tar"]
    fgs = Counter(s.fg_id for s in first)
    assert len(fgs) == 2 and set(fgs.values()) == {8}  # block of 16 // 8 = 2 foregrounds
    assert first[0].fg_id != first[1].fg_id  # k-major: neighbours differ


def test_plan_is_pure():
    a = _plan()[2]
    b = _plan()[2]
    assert a.table().equals(b.table(), check_metadata=True)
    c = _plan(seed=1)[2]
    assert [s.background for s in c.samples] != [s.background for s in a.samples]


def test_too_few_backgrounds_and_reuse():
    with pytest.raises(InputError, match=r"152 unique backgrounds needed .* 100 found"):
        _plan(n_bg=100)
    inputs, cfg, plan = _plan(n_bg=100, reuse=True)
    assert plan.bg_reuse and not any(plan.spares.values())
    by_split = {
        s: {p.background for p in plan.samples if p.split == s} for s in (TRAIN, VALIDATION)
    }
    assert not by_split[TRAIN] & by_split[VALIDATION]
    assert len(by_split[TRAIN] | by_split[VALIDATION]) == 100
    with pytest.raises(InputError, match="at least 2"):
        _plan(n_bg=1, reuse=True)


def test_validation_without_trimap_is_an_error():
    inputs = _inputs(10, 400, trimaps=False)
    cfg = _cfg(bgs_per_train_fg=2, bgs_per_val_fg=2)
    split = split_foregrounds([f.id for f in inputs.foregrounds], (), 0, 0.1, None)
    with pytest.raises(InputError, match=r"trimap/o_[0-9a-f]+\.png: missing"):
        make_plan(inputs, split, cfg)


def test_tasks_carry_only_their_foregrounds(tmp_path):
    inputs, cfg, plan = _plan()
    tasks = shard_tasks(plan, inputs, tmp_path)
    assert [t.name for t in tasks] == list(plan.shards)
    for task in tasks:
        assert set(task.foregrounds) == {s.fg_id for s in task.samples}
        assert task.out_dir == str(tmp_path)
