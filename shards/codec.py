"""Image bytes <-> arrays for shard members: decoding with OpenCV, and a fast PNG writer.

``encode_png`` writes standard 8-bit PNG (grey or RGB) itself: every row Up-filtered with one
numpy subtraction, deflated by ISA-L, chunks checksummed. Encoding the merged image is most of
a build's work (at zlib level 9 it is most of the reference's 20 hours); on 1.5-megapixel
composites this writer is 3.4x-7.3x faster than libpng at zlib level 1 with 5% smaller files,
and 100x-253x faster than level 9 (docs/benchmarks.md, Compositing, on two 2-core VMs). The output
is byte-identical for the same inputs, level and ISA-L build.

Arrays are uint8 and channel-last; colour is RGB, the project's one colour convention (OpenCV
decodes straight to RGB, and the PNG holds RGB as it is).

What the decoders make of unusual files (every reader of a shard or an input decodes through
here, so compositing, ``verify --deep``, training and evaluation see the same pixels):

- 16-bit PNGs are read at full precision and brought to 8 bits by ``to_8bit``: ``round(v/257)``
  (OpenCV alone would keep the high byte, ``v >> 8``);
- 1-, 2- and 4-bit grey PNGs are scaled to 0..255 (libpng: ``v * 255 / (2**d - 1)``);
- palettes are expanded to their colours (a grey palette gives its greys, never the indices);
- a greyscale image decodes as colour with R = G = B;
- a CMYK JPEG is read as Adobe-inverted CMYK (what Photoshop writes, and what Pillow assumes)
  and converted naively, R ~ (255-C)(255-K)/255, within 2 levels of Pillow's
  ``convert("RGB")``; an embedded ICC profile is not applied (nor by Pillow);
- an alpha channel is dropped by ``decode_color`` and ``decode_grey`` (``decode_unchanged``
  keeps it, for the input checks that must look at it).
"""

from __future__ import annotations

import struct

import cv2
import numpy as np
from isal import isal_zlib

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
# mattes carry no EXIF: never rotate the photo; 16-bit files stay 16-bit, to round them ourselves
_DECODE_FLAGS = cv2.IMREAD_IGNORE_ORIENTATION | cv2.IMREAD_ANYDEPTH
# OpenCV >= 4.10 decodes to RGB directly (the same values as BGR reversed, at no cost)
_COLOR_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)
_FILTER_UP = 2


def image_kind(head: bytes) -> str | None:
    """``"png"``, ``"jpeg"`` or None from a file's first bytes (8 are enough)."""
    if head.startswith(_PNG_SIGNATURE):
        return "png"
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    return None


def to_8bit(arr: np.ndarray) -> np.ndarray:
    """16-bit samples to 8 bits: ``round(v / 257)``, exactly, as ``(v + 128) // 257``.

    ``v / 257`` is never half-way between two integers (257 is odd), so no tie arises and the
    integer form equals the exact rational rounding for every ``v`` in 0..65535 (as it equals
    ``shards.mattes.to_uint8(v / 65535)``); 0 -> 0, 65535 -> 255, 257 * k -> k.

    Args:
        arr: uint16 array of any shape (uint8 is returned as it is).

    Returns:
        uint8 array of the same shape.
    """
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype != np.uint16:
        raise ValueError(f"to_8bit takes uint8 or uint16, got {arr.dtype}")
    return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _decode_raw(data: bytes, flags: int) -> np.ndarray:
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), flags | _DECODE_FLAGS)
    if arr is None:
        raise ValueError("not a decodable image")
    return arr


def _decode(data: bytes, flags: int) -> np.ndarray:
    return to_8bit(_decode_raw(data, flags))


def decode_color(data: bytes) -> np.ndarray:
    """Decode JPEG/PNG bytes to (H, W, 3) uint8 RGB, ignoring EXIF orientation (16-bit, grey,
    palette, CMYK and alpha files as the module docstring says).

    Raises:
        ValueError: the bytes are not a decodable image.
    """
    if _COLOR_RGB is not None:
        return _decode(data, _COLOR_RGB)
    return np.ascontiguousarray(_decode(data, cv2.IMREAD_COLOR)[..., ::-1])


def decode_grey(data: bytes) -> np.ndarray:
    """Decode PNG/JPEG bytes to (H, W) uint8 (colour mattes are converted to grey: R = G = B
    gives that value exactly; 16-bit ones are rounded by ``to_8bit``).

    Raises:
        ValueError: the bytes are not a decodable image.
    """
    return _decode(data, cv2.IMREAD_GRAYSCALE)


def decode_unchanged(data: bytes) -> np.ndarray:
    """Decode PNG/JPEG bytes as stored: (H, W) grey, or (H, W, 3) RGB, or (H, W, 4) RGBA.

    uint8, or uint16 for 16-bit PNGs (not rounded). Palettes are expanded to RGB (RGBA when the
    palette has transparent entries); a grey image with an alpha channel comes back as RGBA with
    R = G = B. Used to look at what ``decode_grey`` would drop (the alpha, the colours).

    Raises:
        ValueError: the bytes are not a decodable image.
    """
    arr = _decode_raw(data, cv2.IMREAD_UNCHANGED)
    if arr.ndim == 3 and arr.shape[2] >= 3:  # OpenCV's B, G, R(, A) -> R, G, B(, A)
        arr = np.ascontiguousarray(arr[..., [2, 1, 0, *range(3, arr.shape[2])]])
    return arr


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = isal_zlib.crc32(payload, isal_zlib.crc32(kind))
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def encode_png(arr: np.ndarray, level: int = 1) -> bytes:
    """Losslessly encode (H, W) grey or (H, W, 3) RGB uint8 as an 8-bit PNG.

    Args:
        arr: the image (colour is RGB).
        level: ISA-L deflate level, 0 (fastest) to 3 (smallest).

    Returns:
        The PNG file's bytes.
    """
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ValueError(f"encode_png takes (H, W) or (H, W, 3) uint8, got {arr.shape} {arr.dtype}")
    height, width = arr.shape[:2]
    rgb = arr if arr.ndim == 3 else arr[..., None]  # (H, W, C)
    channels = rgb.shape[2]
    rows = np.empty((height, 1 + width * channels), np.uint8)  # filter byte + pixels per row
    rows[:, 0] = _FILTER_UP  # Up on row 0 subtracts an all-zero row: its bytes stay as they are
    pixels = rows[:, 1:].reshape(height, width, channels)
    pixels[0] = rgb[0]
    np.subtract(rgb[1:], rgb[:-1], out=pixels[1:])  # uint8 arithmetic wraps modulo 256, as PNG does
    color_type = 2 if channels == 3 else 0
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"".join(
        (
            _PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", isal_zlib.compress(rows.data, level)),
            _chunk(b"IEND", b""),
        )
    )
