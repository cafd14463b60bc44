"""shards.codec: our PNG writer is standard, lossless and deterministic; decoders fail clearly."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from shards.codec import decode_color, decode_grey, encode_png, image_kind


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
