"""shards.codec: our PNG writer is standard, lossless and deterministic; decoders fail clearly
and read 16-bit, palette, greyscale, CMYK and alpha files as the module says."""

from __future__ import annotations

import io
from fractions import Fraction

import cv2
import numpy as np
import pytest
from PIL import Image

from shards.codec import (
    decode_color,
    decode_grey,
    decode_unchanged,
    encode_png,
    image_kind,
    to_8bit,
)
from shards.mattes import to_uint8


@pytest.mark.parametrize("level", [0, 1, 3])
def test_png_round_trips_through_opencv_and_pillow(level):
    rng = np.random.default_rng(level)
    rgb = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    data = encode_png(rgb, level)
    assert np.array_equal(decode_color(data), rgb)
    pil = np.asarray(Image.open(io.BytesIO(data)))  # an independent decoder: PIL/libpng
    assert np.array_equal(pil, rgb)  # RGB in, RGB in the file, RGB out
    grey = rgb[..., 1].copy()
    data = encode_png(grey, level)
    assert Image.open(io.BytesIO(data)).mode == "L"
    assert np.array_equal(decode_grey(data), grey)


def test_png_handles_one_row_and_non_contiguous_input():
    row = np.arange(30, dtype=np.uint8).reshape(1, 10, 3)
    assert np.array_equal(decode_color(encode_png(row)), row)
    view = np.arange(8 * 9 * 3, dtype=np.uint8).reshape(8, 9, 3)[::2, 1:]
    assert np.array_equal(decode_color(encode_png(view)), view)


def test_png_is_deterministic_and_checks_input():
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert encode_png(img) == encode_png(img.copy())
    with pytest.raises(ValueError, match="uint8"):
        encode_png(img.astype(np.float32))
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4, 4), np.uint8))


def test_image_kind_sniffs_magic():
    assert image_kind(encode_png(np.zeros((2, 2), np.uint8))) == "png"
    assert image_kind(b"\xff\xd8\xff\xe0rest") == "jpeg"
    assert image_kind(b"hello") is None


def test_decoders_reject_garbage():
    with pytest.raises(ValueError, match="not a decodable image"):
        decode_color(b"not an image")
    with pytest.raises(ValueError, match="not a decodable image"):
        decode_grey(b"\x89PNG\r\n\x1a\n truncated")


# --- unusual files: 16-bit, palette, greyscale, CMYK, alpha ---------------------------------


def _png(arr: np.ndarray) -> bytes:
    """OpenCV's PNG of ``arr`` (grey, or B, G, R(, A) as OpenCV orders them; uint8 or uint16)."""
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


def _pil(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _photo(h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth RGB image (JPEG keeps it within a level or two)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 4, y * 5, 255 - (x + y) * 2], -1).clip(0, 255).astype(np.uint8)


def test_to_8bit_is_round_v_over_257_for_every_16_bit_value():
    v = np.arange(65536, dtype=np.uint16)
    exact = np.array([round(Fraction(int(i), 257)) for i in v], np.uint8)
    # v/257 is never half-way (257 is odd): no tie, so round-half-up and half-even agree
    assert all(Fraction(int(i), 257) - int(i) // 257 != Fraction(1, 2) for i in v)
    assert np.array_equal(to_8bit(v), exact)
    assert np.array_equal(to_uint8(v / 65535), exact)  # the float rule gives the same
    assert not np.array_equal(v >> 8, exact)  # what OpenCV's 8-bit decode would keep
    assert to_8bit(np.array([0, 128, 129, 257 * 200, 65535], np.uint16)).tolist() == [
        0, 0, 1, 200, 255,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="uint8 or uint16"):
        to_8bit(np.zeros(3, np.int32))


def test_16_bit_pngs_decode_at_full_precision():
    v = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    assert np.array_equal(decode_grey(_png(v)), to_8bit(v))
    rgb = np.random.default_rng(0).integers(0, 65536, (9, 11, 3), dtype=np.uint16)
    data = _png(rgb[..., ::-1])
    assert np.array_equal(decode_color(data), to_8bit(rgb))
    assert decode_unchanged(data).dtype == np.uint16
    assert np.array_equal(decode_unchanged(data), rgb)


def test_palette_png_decodes_to_its_palette_greys_not_its_indices():
    index = np.arange(256, dtype=np.uint8).reshape(16, 16)
    greys = [(255 - i) // 3 * 3 for i in range(256)]  # not the identity: index != grey
    img = Image.fromarray(index, "P")
    img.putpalette([g for grey in greys for g in (grey, grey, grey)])
    data = _pil(img, "PNG")
    assert Image.open(io.BytesIO(data)).mode == "P"
    want = np.array(greys, np.uint8)[index]
    assert np.array_equal(decode_grey(data), want)
    assert np.array_equal(decode_color(data), np.repeat(want[..., None], 3, 2))


def test_greyscale_jpeg_decodes_to_three_equal_channels():
    grey = _photo()[..., 1]
    data = _pil(Image.fromarray(grey, "L"), "JPEG", quality=95)
    rgb = decode_color(data)
    assert rgb.shape == (*grey.shape, 3)
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])
    pil = np.asarray(Image.open(io.BytesIO(data)), np.int16)  # Pillow's decode of the L JPEG
    assert np.abs(rgb[..., 0] - pil).max() <= 1


def test_cmyk_jpeg_decodes_to_the_colours_pillow_gives():
    y, x = np.mgrid[0:48, 0:64]
    cmyk = np.stack([x * 4, y * 5, (x + y) * 2, (x * y) % 200], -1).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(cmyk, "CMYK")
    data = _pil(img, "JPEG", quality=98)  # Pillow writes Adobe-inverted CMYK with an APP14
    assert b"Adobe" in data[:200] and Image.open(io.BytesIO(data)).mode == "CMYK"
    rgb = decode_color(data).astype(np.int16)
    pil = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.int16)
    truth = np.asarray(img.convert("RGB"), np.int16)  # before JPEG
    assert np.abs(rgb - pil).max() <= 2 and np.abs(rgb - pil).mean() < 1
    assert np.abs(rgb - truth).max() <= 4
    inverted = 255 - truth  # what reading it as plain (not inverted) CMYK would roughly give
    assert np.abs(rgb - inverted).mean() > 50


def test_decode_unchanged_keeps_the_alpha_and_orders_rgba():
    rgba = np.random.default_rng(1).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    data = _png(rgba[..., [2, 1, 0, 3]])
    assert np.array_equal(decode_unchanged(data), rgba)
    assert np.array_equal(decode_color(data), rgba[..., :3])  # the alpha is dropped
    la = np.stack([rgba[..., 0], rgba[..., 3]], -1)
    data = _pil(Image.fromarray(la, "LA"), "PNG")
    assert np.array_equal(decode_unchanged(data), np.dstack([la[..., :1]] * 3 + [la[..., 1:]]))
    assert np.array_equal(decode_grey(data), la[..., 0])


def test_low_bit_grey_pngs_are_scaled_to_0_255():
    bits = np.arange(64).reshape(8, 8) % 2 == 1
    data = _pil(Image.fromarray(bits), "PNG")
    assert data[24] == 1  # IHDR bit depth
    assert np.array_equal(decode_grey(data), bits.astype(np.uint8) * 255)
