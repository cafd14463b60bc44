"""pipeline.sample_data: layout, value ranges, hard cases present, determinism."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.sample_data import make_sample_data


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_layout_and_values(sample_data):
    data = sample_data.data_dir
    ids = sample_data.foreground_ids
    assert len(ids) == 6 and len(set(ids)) == 6
    for fid in ids:
        original = cv2.imread(str(data / "original" / f"o_{fid}.jpg"))
        mask = cv2.imread(str(data / "mask" / f"o_{fid}.png"), cv2.IMREAD_UNCHANGED)
        trimap = cv2.imread(str(data / "trimap" / f"o_{fid}.png"), cv2.IMREAD_UNCHANGED)
        assert original.ndim == 3 and mask.ndim == 2 and trimap.ndim == 2
        assert original.shape[:2] == mask.shape == trimap.shape
        assert mask.dtype == np.uint8 and set(np.unique(trimap)) <= {0, 128, 255}
        soft = (mask > 0) & (mask < 255)
        assert soft.any() and (mask == 255).any() and (mask == 0).any()
        assert (trimap[soft] == 128).all(), "every soft pixel lies in the unknown band"
        assert (mask[-1] == 255).any(), "the body touches the bottom border"
        # semi-transparent plateau (the veil) and thin strands: many mid-range pixels
        assert ((mask > 50) & (mask < 170)).sum() > 200
    assert len(list(sample_data.bg_dir.glob("*.jpg"))) == 48


def test_sizes_cover_orientations_and_the_fit_rule(sample_data):
    shapes = set(sample_data.foreground_sizes)
    assert any(h > w for h, w in shapes) and any(w > h for h, w in shapes)
    fg_min = min(min(s) for s in shapes)
    fg_max = max(max(s) for s in shapes)
    bg_shapes = {cv2.imread(str(p)).shape[:2] for p in sample_data.bg_dir.glob("*.jpg")}
    assert any(max(s) < fg_min for s in bg_shapes), "some backgrounds need upscaling"
    assert any(min(s) > fg_max for s in bg_shapes), "some backgrounds are only cropped"


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = make_sample_data(tmp_path / "a", foregrounds=3, backgrounds=4, seed=5)
    b = make_sample_data(tmp_path / "b", foregrounds=3, backgrounds=4, seed=5)
    c = make_sample_data(tmp_path / "c", foregrounds=3, backgrounds=4, seed=6)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert a.foreground_ids == b.foreground_ids != c.foreground_ids
    assert set(_digests(tmp_path / "a").values()).isdisjoint(_digests(tmp_path / "c").values())


def test_refuses_to_overwrite_unless_asked(tmp_path):
    make_sample_data(tmp_path, foregrounds=2, backgrounds=1)
    with pytest.raises(ValueError, match="already exists and is not empty; pass --overwrite"):
        make_sample_data(tmp_path, foregrounds=2, backgrounds=1)
    summary = make_sample_data(tmp_path, foregrounds=3, backgrounds=2, overwrite=True)
    assert len(list((summary.data_dir / "original").iterdir())) == 3


@pytest.mark.parametrize(
    ("fgs", "bgs", "message"), [(1, 4, "--foregrounds"), (2, 0, "--backgrounds")]
)
def test_bad_counts(tmp_path, fgs, bgs, message):
    with pytest.raises(ValueError, match=message):
        make_sample_data(tmp_path, foregrounds=fgs, backgrounds=bgs)
