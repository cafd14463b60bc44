"""shards.mattes: the background-fit rule, the exact blend, the default trimap, codecs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shards.mattes import (
    BackgroundFit,
    apply_fit,
    background_fit,
    blend,
    fit_background,
    trimap_from_alpha,
)


def test_fit_upscales_small_backgrounds_by_the_larger_ratio():
    fit = background_fit(bg_height=120, bg_width=160, height=300, width=200)
    ratio = max(200 / 160, 300 / 120)  # 2.5, driven by height
    assert fit.resize == (math.ceil(160 * ratio), math.ceil(120 * ratio)) == (400, 300)
    bg = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    fitted, fit2 = fit_background(bg, 300, 200)
    assert fit2 == fit and fitted.shape == (300, 200, 3)


def test_fit_only_crops_large_backgrounds_top_left():
    bg = np.arange(480 * 640 * 3, dtype=np.uint32).reshape(480, 640, 3).astype(np.uint8)
    fitted, fit = fit_background(bg, 100, 50)
    assert fit.resize is None
    assert np.array_equal(fitted, bg[:100, :50])


def test_fit_json_round_trip_and_bad_crop():
    fit = BackgroundFit(resize=(400, 300), height=300, width=200)
    assert BackgroundFit.from_json(fit.to_json()) == fit
    with pytest.raises(ValueError, match="top-left"):
        BackgroundFit.from_json({"resize": None, "crop": [1, 0, 5, 5]})
    with pytest.raises(ValueError, match="smaller than its fit"):
        apply_fit(np.zeros((10, 10, 3), np.uint8), BackgroundFit(None, 20, 20))


def test_blend_is_the_exactly_rounded_float_blend():
    rng = np.random.default_rng(1)
    fg, bg = (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2))
    alpha = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    a = alpha.astype(np.float64)[..., None] / 255
    exact = a * fg + (1 - a) * bg
    assert np.array_equal(blend(fg, bg, alpha), np.rint(exact).astype(np.uint8))
    assert np.array_equal(blend(fg, bg, alpha, "truncate"), np.floor(exact + 1e-9).astype(np.uint8))


def _adobe_composite_pixel(f: int, b: int, a: int) -> int:
    """One channel of one pixel as Adobe's composition code makes it (docs/reference.md section
    6), written from its description with NumPy float32 scalars, one operation at a time: the
    matte over 255. in float64, stored as float32; ``alpha*fg + (1-alpha)*bg`` in float32;
    ``astype(uint8)`` truncates."""
    alpha = np.float32(np.float64(a) / 255.0)
    comp = alpha * np.float32(f) + (np.float32(1) - alpha) * np.float32(b)
    assert isinstance(comp, np.float32)
    return int(comp)  # truncation toward zero, as astype(np.uint8) of a non-negative float


def test_adobe_rounding_is_adobes_float32_code_to_the_bit():
    """Composition-1k is only comparable when made exactly as Adobe's code makes it: where the
    exact blend is an integer, float32 may land just below it and truncate one lower. Every
    (a, F, B) triple where that happens, and random ones, match the procedure pixel for pixel."""
    a = np.arange(256, dtype=np.uint32)[:, None, None]
    f = np.arange(256, dtype=np.uint32)[None, :, None]
    b = np.arange(256, dtype=np.uint32)[None, None, :]
    exact = (a * f + (255 - a) * b) // 255  # exact integer truncation
    a32 = (a / 255.0).astype(np.float32)
    below = a32 * f.astype(np.float32) + (1 - a32) * b.astype(np.float32) < exact
    edges = np.argwhere(below)
    assert len(edges) > 10_000  # the float32 edge cases exist in numbers
    rng = np.random.default_rng(3)
    cases = np.concatenate([edges, rng.integers(0, 256, (4_000, 3))])
    n = len(cases) // 3 * 3
    alpha = cases[:n, 0].astype(np.uint8).reshape(-1, 3)[:, 0].reshape(-1, 1)
    # one pixel per row; its three channels take three consecutive cases sharing the first's a
    fg = cases[:n, 1].astype(np.uint8).reshape(-1, 1, 3)
    bg = cases[:n, 2].astype(np.uint8).reshape(-1, 1, 3)
    got = blend(fg, bg, alpha, "adobe")
    want = np.array(
        [[[_adobe_composite_pixel(int(fg[i, 0, c]), int(bg[i, 0, c]), int(alpha[i, 0]))
           for c in range(3)]] for i in range(len(alpha))], np.uint8)  # fmt: skip
    assert np.array_equal(got, want)
    # each edge case on its own (its own a in every channel): one below exact truncation
    fg1 = np.repeat(edges[:, 1].astype(np.uint8)[:, None, None], 3, axis=2)
    bg1 = np.repeat(edges[:, 2].astype(np.uint8)[:, None, None], 3, axis=2)
    al1 = edges[:, 0].astype(np.uint8)[:, None]
    adobe, truncated = blend(fg1, bg1, al1, "adobe"), blend(fg1, bg1, al1, "truncate")
    assert np.array_equal(adobe.astype(int), truncated.astype(int) - 1)
    first = tuple(int(v) for v in edges[0])
    assert _adobe_composite_pixel(first[1], first[2], first[0]) == int(adobe[0, 0, 0])


def test_blend_endpoints_and_errors():
    fg = np.full((2, 2, 3), 200, np.uint8)
    bg = np.full((2, 2, 3), 10, np.uint8)
    assert (blend(fg, bg, np.full((2, 2), 255, np.uint8)) == 200).all()
    assert (blend(fg, bg, np.zeros((2, 2), np.uint8)) == 10).all()
    with pytest.raises(ValueError, match="equal sizes"):
        blend(fg, bg[:1], np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="rounding"):
        blend(fg, bg, np.zeros((2, 2), np.uint8), "floor")


def test_trimap_band_is_euclidean_radius_around_unknown():
    alpha = np.zeros((41, 41), np.uint8)
    alpha[20, 20] = 100  # one unknown pixel
    alpha[:, 35:] = 255
    trimap = trimap_from_alpha(alpha, radius=5)
    yy, xx = np.mgrid[:41, :41]
    inside = (yy - 20) ** 2 + (xx - 20) ** 2 <= 25
    assert (trimap[inside] == 128).all()
    assert (trimap[~inside & (alpha == 255)] == 255).all()
    assert (trimap[~inside & (alpha == 0)] == 0).all()


def test_trimap_of_a_binary_matte_has_no_unknown():
    alpha = np.zeros((8, 8), np.uint8)
    alpha[2:6, 2:6] = 255
    assert set(np.unique(trimap_from_alpha(alpha, 3))) == {0, 255}


def _misaligned(arr: np.ndarray, offset: int) -> np.ndarray:
    """A copy of ``arr`` whose data starts ``offset`` bytes into a fresh buffer."""
    buf = np.empty(arr.nbytes + offset, np.uint8)
    out = buf[offset:].view(arr.dtype).reshape(arr.shape)
    out[...] = arr
    return out


def test_opencv_paths_do_not_depend_on_threads_or_alignment():
    """Issue 14: the OpenCV calls whose output goes into a shard (JPEG decode, the bicubic fit,
    the trimap's distance transform) give the same bytes for any cv2.setNumThreads and any
    buffer alignment (SIMD code paths load aligned and unaligned data differently)."""
    import cv2

    from pipeline.sample_data import synthetic_matte, synthetic_photo
    from shards.codec import decode_color, encode_png

    photo = synthetic_photo(np.random.default_rng(0), 240, 320, 1)
    jpeg = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].ravel()
    alpha = synthetic_matte(np.random.default_rng(1), 300, 450)
    seen = set()
    saved = cv2.getNumThreads()
    try:
        for threads in (1, 2, 4, 8):
            cv2.setNumThreads(threads)
            for offset in (0, 1, 3, 17):
                bg = decode_color(memoryview(_misaligned(jpeg, offset)))
                fitted, _ = fit_background(_misaligned(bg, offset), 300, 450)  # 1.41x bicubic
                trimap = trimap_from_alpha(_misaligned(alpha, offset), 10)
                seen.add((encode_png(bg), encode_png(fitted), encode_png(trimap)))
    finally:
        cv2.setNumThreads(saved)
    assert len(seen) == 1
