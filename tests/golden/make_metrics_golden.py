"""Regenerate tests/golden/metrics.json: SAD, MSE, Grad and Conn on seeded synthetic mattes.

    python tests/golden/make_metrics_golden.py

Inputs come from ``make_case(kind, seed)`` below, built with numpy arithmetic alone (no OpenCV,
no random streams beyond ``np.random.default_rng``), so that they do not change with library
versions; the JSON records each input's sha256, and tests/test_metrics.py rebuilds the inputs,
checks those hashes (a changed input is reported as such, not as a changed metric), recomputes
the metrics and compares. Regenerate only when a metric is meant to change, and say why in the
commit. The values are ``evaluation.metrics``'s; the test also checks them against the plain
reference implementation in tests/test_metrics.py.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).with_name("metrics.json")
# (kind, seed, height, width): soft bodies with hair, Gaussian blobs (several components at
# each threshold), quantised plateaus and grid cells (equally large components, corner-only
# contacts), the same blob twice (decisive ties), noise, a constant prediction.
CASES = [
    ("soft", 0, 96, 128),
    ("soft", 1, 120, 90),
    ("blobs", 2, 100, 100),
    ("blobs", 3, 64, 160),
    ("plateaus", 4, 72, 96),
    ("cells", 7, 60, 80),
    ("cells", 8, 100, 100),
    ("twins", 9, 60, 90),
    ("noise", 5, 48, 64),
    ("constant", 6, 80, 80),
]


def _soft_disc(yy, xx, cy, cx, ry, rx, width):
    """1 inside an ellipse, 0 outside, a linear ramp of ``width`` pixels across its edge."""
    dist = (np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) - 1.0) * min(ry, rx)
    return np.clip(0.5 - dist / width, 0.0, 1.0)


def _strand(yy, xx, y0, x0, y1, x1, opacity):
    """An anti-aliased 1-pixel line segment of the given opacity (a hair)."""
    dy, dx = y1 - y0, x1 - x0
    t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / (dy * dy + dx * dx), 0.0, 1.0)
    dist = np.hypot(yy - (y0 + t * dy), xx - (x0 + t * dx))
    return opacity * np.clip(1.0 - dist, 0.0, 1.0)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a (2r+1)-square, as shifted ORs (separable)."""
    out = mask.copy()
    for axis in (0, 1):
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)])
        n = mask.shape[axis]
        out = np.zeros_like(mask)
        for s in range(2 * radius + 1):
            out |= padded[s : s + n] if axis == 0 else padded[:, s : s + n]
    return out


def trimap_of(gt: np.ndarray, radius: int) -> np.ndarray:
    """0/128/255 trimap: 128 within ``radius`` (square) of 0 < gt < 255, else 0 or 255."""
    trimap = np.where(gt == 255, 255, 0).astype(np.uint8)
    trimap[_dilate((gt > 0) & (gt < 255), radius)] = 128
    return trimap


def _to8(a: np.ndarray) -> np.ndarray:
    return np.floor(np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def make_case(kind: str, seed: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic ``(pred, gt, trimap)``, each (h, w) uint8, for one case of ``CASES``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    if kind == "soft":  # a body touching the bottom edge, hair strands, a veil
        gt = _soft_disc(yy, xx, h * 0.75, w * 0.5, h * 0.45, w * 0.3, rng.uniform(2, 5))
        for _ in range(8):
            y0, x0 = h * 0.35, w * rng.uniform(0.3, 0.7)
            y1, x1 = rng.uniform(0, h * 0.3), rng.uniform(0, w)
            gt = np.maximum(gt, _strand(yy, xx, y0, x0, y1, x1, rng.uniform(0.5, 1.0)))
        gt = np.maximum(gt, 0.4 * _soft_disc(yy, xx, h * 0.2, w * 0.15, h * 0.12, w * 0.1, 4))
        shift = rng.integers(-2, 3, size=2)
        pred = np.roll(gt, tuple(shift), axis=(0, 1)) * rng.uniform(0.85, 1.0)
        pred = pred + rng.normal(0, 0.04, (h, w)) * (pred > 0.02)
        radius = 4
    elif kind == "blobs":  # Gaussian blobs: several components at most thresholds
        gt, pred = np.zeros((h, w)), np.zeros((h, w))
        for _ in range(7):
            cy, cx, s = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(4, 12)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
            gt = np.maximum(gt, blob * rng.uniform(0.6, 1.3))
            moved = np.exp(-((yy - cy - rng.normal()) ** 2 + (xx - cx) ** 2) / (2 * s * s))
            pred = np.maximum(pred, moved * rng.uniform(0.6, 1.3))
        radius = 3
    elif kind == "plateaus":  # equal squares on flat levels: many equally large components
        levels = rng.choice(np.arange(0, 256, 51), size=(h // 8, w // 8)) / 255.0
        gt = np.kron(levels, np.ones((8, 8)))
        pred = np.kron(np.roll(levels, 1, axis=1), np.ones((8, 8)))
        radius = 2
    elif kind == "cells":  # 5x5 cells on a grid: equal components, diagonal-only contacts
        occupied = rng.random((h // 5, w // 5)) < 0.4
        gt_levels = rng.choice([255, 204, 153, 140, 100, 51], size=occupied.shape) * occupied
        pred_levels = rng.choice([230, 215], size=occupied.shape) * occupied
        gt = np.kron(gt_levels, np.ones((5, 5), np.uint8)).astype(np.uint8)
        pred = np.kron(pred_levels, np.ones((5, 5), np.uint8)).astype(np.uint8)
        trimap = np.full((h, w), 128, np.uint8)
        trimap[: h // 4] = 0
        return pred, gt, trimap
    elif kind == "twins":  # one soft blob twice: the first in column-major order must win ties
        size = min(h, w) // 3
        py, px = np.mgrid[0:size, 0:size].astype(np.float64)
        c = (size - 1) / 2
        blob = _soft_disc(py, px, c, c, size * 0.4, size * 0.3, size * 0.3)
        gt, pred = np.zeros((h, w)), np.zeros((h, w))
        top_right = (slice(2, 2 + size), slice(w - size - 2, w - 2))
        bottom_left = (slice(h - size - 2, h - 2), slice(2, 2 + size))
        gt[top_right] = pred[top_right] = blob
        gt[bottom_left] = blob  # min(pred, gt) is the same blob: equally large components
        pred[bottom_left] = np.minimum(blob + rng.uniform(0.1, 0.3), 1.0) * (blob > 0)
        trimap = np.full((h, w), 128, np.uint8)
        return _to8(pred), _to8(gt), trimap
    elif kind == "noise":  # independent noise: thousands of tiny components
        gt, pred = rng.random((h, w)), rng.random((h, w))
        trimap = rng.choice(np.array([0, 128, 255], np.uint8), size=(h, w), p=[0.2, 0.6, 0.2])
        return _to8(pred), _to8(gt), trimap
    elif kind == "constant":  # a constant prediction: Grad's normalisation has nothing to stretch
        gt = _soft_disc(yy, xx, h * 0.5, w * 0.5, h * 0.3, w * 0.3, 6)
        pred = np.full((h, w), 0.5)
        radius = 3
    else:
        raise ValueError(f"unknown case kind {kind!r}")
    gt8 = _to8(gt)
    return _to8(pred), gt8, trimap_of(gt8, radius)


def case_name(kind: str, seed: int) -> str:
    return f"{kind}-{seed}"


def sha256(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def compute() -> dict:
    """The golden document: per case its inputs' hashes and the four metrics."""
    from evaluation.metrics import all_metrics

    cases = []
    for kind, seed, h, w in CASES:
        pred, gt, trimap = make_case(kind, seed, h, w)
        cases.append(
            {
                "name": case_name(kind, seed),
                "kind": kind,
                "seed": seed,
                "shape": [h, w],
                "sha256": {"pred": sha256(pred), "gt": sha256(gt), "trimap": sha256(trimap)},
                "unknown_pixels": int(np.count_nonzero(trimap == 128)),
                "metrics": all_metrics(pred, gt, trimap),
            }
        )
    return {
        "about": "SAD, MSE, Grad, Conn (docs/reference.md section 4) on "
        "make_metrics_golden.py's cases",
        "cases": cases,
    }


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
    GOLDEN.write_text(json.dumps(compute(), indent=2) + "\n")
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    main()
