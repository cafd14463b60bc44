"""Pixel rules that define what a shard sample means: background fit, blend, trimap, 8 bits.

They live with the format, not the compositor, because a stored sample is only meaningful
through them: ``bg`` is kept as the source photo plus its fit, ``merged`` must equal
``blend(fg, fit(bg), alpha)``, and the train ``trimap`` is ``trimap_from_alpha(alpha, r)``.
The compositor (``pipeline``), the checker (``shards.verify``) and the trainer all call these.
A trimap's three values are named here (``TRIMAP_*``), and so is the one rule that turns a float
alpha into 8 bits (``to_uint8``: the protocol's round half up), used wherever predictions are
written or scored, and so is the trivial prediction every score is read against
(``trivial_alpha``), which training's validation and ``indexnet evaluate run --baseline`` share.

Arrays are uint8 and channel-last; colour arrays are RGB, as ``shards.codec`` decodes them (the
blend is per channel, so the order never matters here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

TRIMAP_BACKGROUND = 0  # trimap value of the known background (alpha 0)
TRIMAP_UNKNOWN = 128  # the unknown region U, where alpha is predicted and scored
TRIMAP_FOREGROUND = 255  # the known foreground (alpha 1)
TRIMAP_VALUES = (TRIMAP_BACKGROUND, TRIMAP_UNKNOWN, TRIMAP_FOREGROUND)


@dataclass(frozen=True)
class BackgroundFit:
    """How a source background is fitted to an ``(h, w)`` foreground (the Adobe DIM rule).

    Attributes:
        resize: ``(width, height)`` of the bicubic resize, or None when the source is big enough.
        height: output height (the foreground's).
        width: output width (the foreground's).
    """

    resize: tuple[int, int] | None
    height: int
    width: int

    def to_json(self) -> dict:
        """JSON form stored in each sample's ``json`` member."""
        resize = list(self.resize) if self.resize else None
        return {"resize": resize, "crop": [0, 0, self.width, self.height]}

    @classmethod
    def from_json(cls, obj: dict) -> BackgroundFit:
        """Inverse of ``to_json``."""
        x0, y0, width, height = obj["crop"]
        if (x0, y0) != (0, 0):
            raise ValueError(f"background fit crops top-left only, got offset {(x0, y0)}")
        resize = tuple(obj["resize"]) if obj["resize"] else None
        return cls(resize=resize, height=height, width=width)


def background_fit(bg_height: int, bg_width: int, height: int, width: int) -> BackgroundFit:
    """The Adobe rule: ``ratio = max(w/bw, h/bh)``; if > 1 resize to ``ceil(b*ratio)``; crop."""
    ratio = max(width / bg_width, height / bg_height)
    if ratio > 1:
        resize = (math.ceil(bg_width * ratio), math.ceil(bg_height * ratio))
        return BackgroundFit(resize=resize, height=height, width=width)
    return BackgroundFit(resize=None, height=height, width=width)


def apply_fit(bg: np.ndarray, fit: BackgroundFit) -> np.ndarray:
    """Resize (bicubic) and crop the top-left ``fit.height x fit.width`` of ``bg``."""
    if fit.resize is not None:
        bg = cv2.resize(bg, fit.resize, interpolation=cv2.INTER_CUBIC)
    if bg.shape[0] < fit.height or bg.shape[1] < fit.width:
        raise ValueError(
            f"background {bg.shape[1]}x{bg.shape[0]} is smaller than its fit "
            f"{fit.width}x{fit.height}"
        )
    return bg[: fit.height, : fit.width]


def fit_background(bg: np.ndarray, height: int, width: int) -> tuple[np.ndarray, BackgroundFit]:
    """Fit ``bg`` (H', W', 3) to ``(height, width)``; return the fitted array and the fit."""
    fit = background_fit(bg.shape[0], bg.shape[1], height, width)
    return apply_fit(bg, fit), fit


def blend(
    fg: np.ndarray, bg: np.ndarray, alpha: np.ndarray, rounding: str = "nearest"
) -> np.ndarray:
    """Composite ``alpha*fg + (1-alpha)*bg`` with ``alpha = mask/255``, back to uint8.

    ``nearest`` and ``truncate`` are evaluated exactly in integers: ``(a*F + (255-a)*B + 127) //
    255`` for ``nearest`` is the real-valued blend rounded to the nearest integer (a tie is
    impossible: the numerator is an integer and 255 is odd), and ``// 255`` without the 127 is
    the reference's truncation, minus the float error that makes the reference's
    ``astype(uint8)`` drop some exact integers by one.

    ``adobe`` is Adobe's published composition code to the bit (docs/reference.md section 6),
    what Composition-1k is made with: ``alpha = mask/255.`` (a float64 division) stored as
    float32, ``alpha*fg + (1-alpha)*bg`` in float32, truncated by ``astype(uint8)``. Where the
    exact result is an integer, float32 may land just below it and truncate one lower (15,467
    of the 256^3 (a, F, B) triples): integer arithmetic cannot reproduce it, so it is computed
    the same way.

    Args:
        fg: (H, W, 3) uint8 foreground.
        bg: (H, W, 3) uint8 fitted background.
        alpha: (H, W) uint8 matte.
        rounding: ``nearest`` (ours), ``truncate`` (the IndexNet reference, exact) or ``adobe``
            (Adobe's float32 code, Composition-1k).

    Returns:
        (H, W, 3) uint8 composite.
    """
    if fg.shape != bg.shape or fg.shape[:2] != alpha.shape:
        raise ValueError(
            f"blend needs equal sizes, got fg {fg.shape}, bg {bg.shape}, alpha {alpha.shape}"
        )
    if rounding == "adobe":
        a32 = (alpha / 255.0).astype(np.float32)[..., None]
        comp = a32 * fg.astype(np.float32) + (1 - a32) * bg.astype(np.float32)
        return comp.astype(np.uint8)
    a = alpha.astype(np.uint16)[..., None]
    total = fg.astype(np.uint16) * a + bg.astype(np.uint16) * (255 - a)  # <= 65025: fits uint16
    if rounding == "nearest":
        total += 127
    elif rounding != "truncate":
        raise ValueError(f"rounding must be 'nearest', 'truncate' or 'adobe', got {rounding!r}")
    return (total // 255).astype(np.uint8)


def trimap_from_alpha(alpha: np.ndarray, radius: int) -> np.ndarray:
    """Trimap of docs/reference.md section 3: every pixel within Euclidean ``radius`` of the unknown
    region (0 < alpha < 255) is 128, the rest of alpha == 255 is 255, everything else 0.

    Args:
        alpha: (H, W) uint8 matte.
        radius: band radius in pixels, >= 0.

    Returns:
        (H, W) uint8 trimap with values in {0, 128, 255}.
    """
    unknown = (alpha > 0) & (alpha < 255)
    trimap = np.where(alpha == 255, np.uint8(TRIMAP_FOREGROUND), np.uint8(TRIMAP_BACKGROUND))
    if unknown.any():
        # distance from every pixel to the nearest unknown pixel (unknown pixels are the zeros)
        dist = cv2.distanceTransform((~unknown).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        trimap[dist <= radius] = TRIMAP_UNKNOWN
    return trimap


def trivial_alpha(trimap: np.ndarray) -> np.ndarray:
    """The baseline prediction: 0.5 in the unknown region (128 after the protocol's rounding
    of 127.5), the trimap's 0 and 1 elsewhere; that is, the trimap itself.

    Args:
        trimap: (H, W) uint8 with values in {0, 128, 255}.

    Returns:
        (H, W) uint8, a copy of ``trimap``.
    """
    return trimap.copy()


def to_uint8(alpha: np.ndarray) -> np.ndarray:
    """Convert a matte to 8 bits the way the evaluation protocol saves predictions.

    Args:
        alpha: (H, W) float in [0, 1] (values outside are clipped, as the protocol clips the
            network output), or an integer array with values in 0..255 (returned as uint8).

    Returns:
        (H, W) uint8: ``floor(clip(alpha, 0, 1) * 255 + 0.5)`` for floats, i.e. rounding half
        up as MATLAB's ``uint8`` and ``im2uint8`` do.

    Raises:
        TypeError: a boolean or non-numeric array.
        ValueError: NaN or infinite values, or integers outside 0..255.
    """
    arr = np.asarray(alpha)
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError("the matte has NaN or infinite values; cannot convert it to 8 bits")
        scaled = np.clip(arr.astype(np.float64), 0.0, 1.0) * 255.0
        return np.floor(scaled + 0.5).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.bool_:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError(
                f"integer matte values must lie in 0..255, found {arr.min()}..{arr.max()} "
                f"(dtype {arr.dtype})"
            )
        return arr.astype(np.uint8)
    raise TypeError(f"a matte must be uint8 (0..255) or float in [0, 1], got dtype {arr.dtype}")
