"""Reading a user's photo and trimap: EXIF-upright, 8-bit, a trimap quantised to 0/128/255.

- Images are read with Pillow and turned upright by their EXIF orientation: phone photos are
  stored sideways with a tag saying so, and a trimap is drawn on the picture as viewers show
  it. Grey and palette images become RGB, an alpha channel is dropped, 16-bit samples are
  scaled to 8 bits.
- A trimap must be single-channel: 8- or 16-bit grey, or a palette of greys. Values other than
  0/128/255 (soft brush edges, JPEG noise) are quantised and counted: below 85 -> 0 (background),
  above 170 -> 255 (foreground), 85..170 -> 128 (unknown).

Every failure is a ``ValueError`` naming the file and saying how to fix it. Each reader takes a
path or a binary file object (``indexnet serve`` reads uploads from memory), with ``name`` to
call it by in messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from shards.mattes import TRIMAP_BACKGROUND, TRIMAP_FOREGROUND, TRIMAP_UNKNOWN

BACKGROUND_BELOW = 85  # trimap grey values below this are background (0)
FOREGROUND_ABOVE = 170  # values above this are foreground (255); 85..170 are unknown (128)
TRIMAP_RULE = (
    f"other grey values are quantised: below {BACKGROUND_BELOW} -> 0 (background), "
    f"above {FOREGROUND_ABOVE} -> 255 (foreground), the rest -> 128 (unknown)"
)
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # "I": how older Pillow opens 16-bit PNG


Source = str | Path | BinaryIO  # a file's path, or a binary file object such as io.BytesIO


def _named(source: Source, name: str | None) -> tuple[Path | BinaryIO, str]:
    """``source`` as Pillow opens it, and what messages call it (``name``, else the path)."""
    if isinstance(source, (str, Path)):
        source = Path(source)
        return source, str(source) if name is None else name
    return source, name if name is not None else "the uploaded file"


def _open(source: Path | BinaryIO, what: str, path: str) -> Image.Image:
    """``source`` decoded in full and turned upright; every failure a ValueError naming it
    (``path``)."""
    try:
        with Image.open(source) as img:
            img.load()  # decode now, so that a truncated file fails here
            return ImageOps.exif_transpose(img)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such {what} file") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a folder; give the {what} file") from None
    except Image.DecompressionBombError as exc:  # Pillow's guard against decompression bombs
        raise ValueError(f"{path}: too large to read safely ({exc})") from None
    except UnidentifiedImageError:
        raise ValueError(
            f"{path}: not an image Pillow can read; give the {what} as PNG, JPEG, BMP, TIFF or "
            "WebP (convert HEIC photos first)"
        ) from None
    except Exception as exc:  # damaged data: OSError, SyntaxError, struct.error... by format
        raise ValueError(
            f"{path}: cannot read the {what} ({type(exc).__name__}: {exc}); the file may be "
            "truncated or damaged: export it again"
        ) from None


def _to_8bit(samples: np.ndarray) -> np.ndarray:
    """16-bit samples (0..65535) -> uint8; 8-bit values stored as v * 257 come back exactly."""
    return np.rint(np.clip(samples, 0, 65535) / 257).astype(np.uint8)


def read_image(path: Source, name: str | None = None) -> np.ndarray:
    """Read an image, upright by its EXIF orientation, as 8-bit RGB.

    Grey, palette and CMYK images are converted to RGB; an alpha channel is dropped; 16-bit
    grey is scaled to 8 bits (Pillow itself reduces 16-bit colour to 8 bits).

    Args:
        path: the image file, or a binary file object holding its bytes.
        name: what messages call it (default: the path).

    Returns:
        (H, W, 3) uint8 RGB, H and W those of the upright image.

    Raises:
        ValueError: no such file, not an image, damaged data, or 32-bit float samples; the
            message names the file.
    """
    source, path = _named(path, name)
    img = _open(source, "image", path)
    if img.mode in _SIXTEEN_BIT:
        grey = _to_8bit(np.asarray(img))
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode == "F":
        raise ValueError(f"{path}: 32-bit float image; save it as an 8- or 16-bit PNG or a JPEG")
    return np.asarray(img.convert("RGB"))


def quantise_trimap(grey: np.ndarray) -> tuple[np.ndarray, int]:
    """Snap grey values to a trimap's three (``TRIMAP_RULE``).

    Args:
        grey: (H, W) uint8.

    Returns:
        (H, W) uint8 trimap with values 0/128/255, and how many pixels changed (those that
        were not already 0, 128 or 255).
    """
    trimap = np.full_like(grey, TRIMAP_UNKNOWN)
    trimap[grey < BACKGROUND_BELOW] = TRIMAP_BACKGROUND
    trimap[grey > FOREGROUND_ABOVE] = TRIMAP_FOREGROUND
    return trimap, int(np.count_nonzero(trimap != grey))


def _not_single_channel(path: str, found: str) -> ValueError:
    return ValueError(
        f"{path}: a trimap must be single-channel, but this one is {found}; save it as a "
        "single-channel grey image (an 8-bit grey PNG, mode L): 0 = background, "
        f"128 = unknown, 255 = foreground; {TRIMAP_RULE}"
    )


def read_trimap(path: Source, name: str | None = None) -> tuple[np.ndarray, int]:
    """Read a trimap, upright by its EXIF orientation, quantised to 0/128/255.

    Accepted: 8-bit grey (and 1-bit), 16-bit grey (scaled to 8 bits), or a palette image whose
    colours are all grey. Other values are quantised by ``TRIMAP_RULE``.

    Args:
        path: the trimap file, or a binary file object holding its bytes.
        name: what messages call it (default: the path).

    Returns:
        (H, W) uint8 trimap with values 0/128/255, and how many pixels were quantised.

    Raises:
        ValueError: no such file, not an image, damaged data, or not single-channel (RGB,
            RGBA, grey with alpha, a coloured palette); the message names the file and says
            how to save it.
    """
    source, path = _named(path, name)
    img = _open(source, "trimap", path)
    if img.mode in ("L", "1"):
        grey = np.asarray(img.convert("L"))
    elif img.mode in _SIXTEEN_BIT:
        grey = _to_8bit(np.asarray(img))
    elif img.mode == "P":
        rgb = np.asarray(img.convert("RGB"))
        grey = rgb[..., 0]
        if not (np.array_equal(grey, rgb[..., 1]) and np.array_equal(grey, rgb[..., 2])):
            raise _not_single_channel(path, "a palette image with coloured entries")
    else:
        raise _not_single_channel(path, f"{img.mode} ({len(img.getbands())} channels)")
    return quantise_trimap(grey)


def read_pair(
    image: Source,
    trimap: Source,
    image_name: str | None = None,
    trimap_name: str | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """``read_image`` and ``read_trimap``, checked to be the same size.

    Args:
        image, trimap: the files, or binary file objects holding their bytes.
        image_name, trimap_name: what messages call them (default: their paths).

    Returns:
        (H, W, 3) uint8 RGB, (H, W) uint8 trimap in {0, 128, 255}, pixels quantised.

    Raises:
        ValueError: either file is unreadable or bad (named), or their sizes differ (both
            files and both sizes named).
    """
    rgb = read_image(image, image_name)
    marks, quantised = read_trimap(trimap, trimap_name)
    image, trimap = _named(image, image_name)[1], _named(trimap, trimap_name)[1]
    if rgb.shape[:2] != marks.shape:
        (h, w), (th, tw) = rgb.shape[:2], marks.shape
        hint = (
            "; the sides are swapped: if the photo carries an EXIF rotation, draw the trimap on "
            "the upright picture, as image viewers show it"
            if (h, w) == (tw, th)
            else ""
        )
        raise ValueError(
            f"{image} is {w}x{h} but its trimap {trimap} is {tw}x{th} (width x height); the "
            f"trimap must be drawn at the image's size{hint}"
        )
    return rgb, marks, quantised
