"""Synthetic AIM-500-style foregrounds and COCO-style backgrounds, deterministic from a seed.

``make_sample_data(out)`` writes ``out/AIM-500/{original,mask,trimap}/o_<id>.*`` and
``out/backgrounds/*.jpg``. The mattes carry what makes matting hard: soft edges, thin hair-like
strands, a semi-transparent veil, a hole, and a body touching the image border. Foregrounds come
in both orientations and a few sizes; backgrounds are both smaller and larger than them (so the
background-fit rule resizes some and only crops others) and vary in content.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from shards.mattes import trimap_from_alpha

# (height, width) of foregrounds, cycled: both orientations, a few sizes
FG_SIZES = ((240, 320), (320, 240), (288, 384), (384, 288), (256, 256), (352, 264))
# (height, width) of backgrounds, cycled: some smaller than every foreground, some larger
BG_SIZES = ((480, 640), (120, 160), (640, 480), (200, 150), (427, 640), (375, 500), (96, 128))
TRIMAP_RADIUS = 6  # unknown band of the sample trimaps, like AIM-500's hand-made ones
JPEG_QUALITY = 92


@dataclass(frozen=True)
class SampleDataSummary:
    """What ``make_sample_data`` wrote."""

    data_dir: Path  # the AIM-500-style folder (pass as --data-dir)
    bg_dir: Path  # the backgrounds folder (pass as --bg-dir)
    foreground_ids: tuple[str, ...]
    foreground_sizes: tuple[tuple[int, int], ...]  # (height, width) per foreground
    background_count: int
    bytes_written: int


def _smooth_noise(rng: np.random.Generator, h: int, w: int, scale: int) -> np.ndarray:
    """(h, w) float32 in [0, 1]: low-frequency noise (bicubic-upsampled random grid)."""
    grid = rng.random((max(2, h // scale), max(2, w // scale)), dtype=np.float32)
    return np.clip(cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def synthetic_photo(rng: np.random.Generator, h: int, w: int, style: int) -> np.ndarray:
    """(h, w, 3) uint8 photo-like image; ``style`` picks texture, gradient, shapes or stripes."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(20, 235, size=3).astype(np.float32)
    tint = rng.uniform(-90, 90, size=3).astype(np.float32)
    if style == 0:  # texture: multi-scale noise
        field = 0.6 * _smooth_noise(rng, h, w, 24) + 0.4 * _smooth_noise(rng, h, w, 4)
        img = base + tint * (field[..., None] * 2 - 1)
    elif style == 1:  # gradient at a random angle
        theta = rng.uniform(0, np.pi)
        ramp = (np.cos(theta) * xx + np.sin(theta) * yy) / max(h, w)
        img = base + tint * ramp[..., None]
    elif style == 2:  # shapes on a flat ground
        img = np.broadcast_to(base, (h, w, 3)).copy()
        for _ in range(int(rng.integers(4, 9))):
            colour = rng.uniform(0, 255, size=3).tolist()
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            if rng.random() < 0.5:
                radius = int(rng.integers(max(h, w) // 12, max(h, w) // 4))
                cv2.circle(img, centre, radius, colour, -1, cv2.LINE_AA)
            else:
                corner = (int(rng.integers(0, w)), int(rng.integers(0, h)))
                cv2.rectangle(img, centre, corner, colour, -1)
    else:  # stripes
        period = rng.uniform(8, 40)
        theta = rng.uniform(0, np.pi)
        wave = np.sin((np.cos(theta) * xx + np.sin(theta) * yy) * 2 * np.pi / period)
        img = base + tint * wave[..., None]
    img = img + rng.normal(0, 4, size=(h, w, 3)).astype(np.float32)  # sensor noise
    return np.clip(img, 0, 255).astype(np.uint8)


def synthetic_matte(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w) uint8 alpha with a soft body touching the bottom border, a hole, hair, a veil."""
    alpha = np.zeros((h, w), np.float32)
    # body: an ellipse whose lower part leaves through the bottom edge (object touching border)
    cx, cy = int(w * rng.uniform(0.4, 0.6)), int(h * rng.uniform(0.65, 0.75))
    axes = (int(w * rng.uniform(0.2, 0.3)), h - cy + int(h * rng.uniform(0.03, 0.1)))
    cv2.ellipse(alpha, (cx, cy), axes, 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    # hole: a small disc cut out of the body
    hole_r = max(3, min(axes) // 4)
    cv2.circle(alpha, (cx + axes[0] // 3, cy), hole_r, 0.0, -1, cv2.LINE_AA)
    # soft boundary: blur the body so its edge ramps over several pixels
    sigma = rng.uniform(1.0, 2.5)
    alpha = cv2.GaussianBlur(alpha, (0, 0), sigma)
    # hair: thin anti-aliased curves leaving the top of the body, some partially transparent
    hair = np.zeros((h, w), np.float32)
    top = (cx, cy - axes[1])
    for _ in range(int(rng.integers(12, 24))):
        angle = rng.uniform(-np.pi * 0.9, -np.pi * 0.1)
        length = rng.uniform(0.15, 0.35) * h
        bend = rng.uniform(-0.6, 0.6)
        start_x = top[0] + rng.uniform(-axes[0], axes[0]) * 0.8
        t = np.linspace(0.0, 1.0, 24)
        xs = start_x + np.cos(angle + bend * t) * length * t
        ys = top[1] + axes[1] * 0.15 + np.sin(angle + bend * t) * length * t
        pts = np.stack([xs, ys], axis=1).round().astype(np.int32)
        cv2.polylines(hair, [pts], False, float(rng.uniform(0.5, 1.0)), 1, cv2.LINE_AA)
    alpha = np.maximum(alpha, hair)
    # veil: a semi-transparent region beside the body (alpha 0.25-0.6 with texture)
    vx, vy = int(w * rng.uniform(0.05, 0.25)), int(h * rng.uniform(0.15, 0.4))
    vw, vh = int(w * rng.uniform(0.2, 0.35)), int(h * rng.uniform(0.15, 0.3))
    veil = np.zeros((h, w), np.float32)
    level = rng.uniform(0.25, 0.6)
    region = veil[vy : vy + vh, vx : vx + vw]  # a view: clipped where it passes the border
    region[:] = level * (0.8 + 0.2 * _smooth_noise(rng, *region.shape, 8))
    veil = cv2.GaussianBlur(veil, (0, 0), 1.5)
    alpha = np.maximum(alpha, veil)
    return np.clip(np.rint(alpha * 255), 0, 255).astype(np.uint8)


def _write(path: Path, data: bytes) -> int:
    path.write_bytes(data)
    return len(data)


def _encode(ext: str, arr: np.ndarray) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, arr, params)
    assert ok, f"encoding {ext} failed"
    return buf.tobytes()


def make_sample_data(
    out: Path, foregrounds: int = 6, backgrounds: int = 48, seed: int = 0, overwrite: bool = False
) -> SampleDataSummary:
    """Write a small AIM-500-style data set and a backgrounds folder under ``out``.

    Args:
        out: destination; ``out/AIM-500`` and ``out/backgrounds`` are created.
        foregrounds: number of foregrounds (>= 2 so that a split has both sides).
        backgrounds: number of background photos (>= 1).
        seed: the same seed writes byte-identical files.
        overwrite: replace existing ``out/AIM-500`` and ``out/backgrounds``.

    Returns:
        A ``SampleDataSummary`` of what was written.

    Raises:
        ValueError: bad counts, or the folders exist and ``overwrite`` is False.
    """
    if foregrounds < 2:
        raise ValueError(
            f"--foregrounds must be >= 2 (a train and a validation one), got {foregrounds}"
        )
    if backgrounds < 1:
        raise ValueError(f"--backgrounds must be >= 1, got {backgrounds}")
    data_dir, bg_dir = out / "AIM-500", out / "backgrounds"
    for folder in (data_dir, bg_dir):
        if folder.exists() and any(folder.iterdir()):
            if not overwrite:
                raise ValueError(
                    f"{folder} already exists and is not empty; pass --overwrite to replace it"
                )
            shutil.rmtree(folder)
    for sub in ("original", "mask", "trimap"):
        (data_dir / sub).mkdir(parents=True, exist_ok=True)
    bg_dir.mkdir(parents=True, exist_ok=True)

    id_rng = np.random.default_rng([seed, 0])
    ids: list[str] = []
    while len(ids) < foregrounds:
        candidate = f"{int(id_rng.integers(0, 2**32)):08x}"
        if candidate not in ids:
            ids.append(candidate)

    written = 0
    sizes = []
    for i, fid in enumerate(ids):
        rng = np.random.default_rng([seed, 1, i])
        h, w = FG_SIZES[i % len(FG_SIZES)]
        sizes.append((h, w))
        alpha = synthetic_matte(rng, h, w)
        written += _write(
            data_dir / "original" / f"o_{fid}.jpg",
            _encode(".jpg", synthetic_photo(rng, h, w, i % 4)),
        )
        written += _write(data_dir / "mask" / f"o_{fid}.png", _encode(".png", alpha))
        trimap = trimap_from_alpha(alpha, TRIMAP_RADIUS)
        written += _write(data_dir / "trimap" / f"o_{fid}.png", _encode(".png", trimap))
    for j in range(backgrounds):
        rng = np.random.default_rng([seed, 2, j])
        h, w = BG_SIZES[j % len(BG_SIZES)]
        written += _write(
            bg_dir / f"bg_{j:06d}.jpg", _encode(".jpg", synthetic_photo(rng, h, w, j % 4))
        )
    return SampleDataSummary(
        data_dir=data_dir,
        bg_dir=bg_dir,
        foreground_ids=tuple(ids),
        foreground_sizes=tuple(sizes),
        background_count=backgrounds,
        bytes_written=written,
    )
