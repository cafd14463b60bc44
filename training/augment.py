"""The reference training augmentation (REFERENCE.md section 3), on uint8 arrays, then tensors.

Per sample: rescale images whose short side is below the input size to ``small_image_min_side``;
make the trimap on the fly with an unknown band of radius ``r ~ U{min..max}``; choose a crop side
among ``crop_sizes`` that fit, centred on a random unknown pixel (shifted to fit); resize the crop
to ``input_size`` (bicubic for images and alpha, nearest for the trimap); flip horizontally with
probability ``flip_prob``. Everything stays uint8 until the crop is taken (``crop_sample``); only
the small crop is converted to float (``to_tensors``).

The network's input image is the composite of the cropped fg, bg and alpha, computed in float, so
that the composition loss is exactly zero when the predicted alpha is the true one.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch

from configs import TrainConfig
from shards.mattes import TRIMAP_UNKNOWN, trimap_from_alpha
from training.normalise import make_input as imagenet_input


def crop_sample(
    fg: np.ndarray,
    bg: np.ndarray,
    alpha: np.ndarray,
    cfg: TrainConfig,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Rescale, make a trimap, crop around the unknown region, resize, flip.

    Args:
        fg: (H, W, 3) uint8 RGB foreground.
        bg: (H, W, 3) uint8 RGB background already fitted to the foreground.
        alpha: (H, W) uint8 matte.
        cfg: the train config (input_size, crop_sizes, trimap_radius, ...).
        rng: the sample's random generator.

    Returns:
        ``fg``, ``bg`` (S, S, 3) uint8, ``alpha``, ``trimap`` (S, S) uint8, S = input_size.
    """
    height, width = alpha.shape
    if min(height, width) < cfg.input_size:
        scale = cfg.small_image_min_side / min(height, width)
        size = (round(width * scale), round(height * scale))
        fg = cv2.resize(fg, size, interpolation=cv2.INTER_CUBIC)
        bg = cv2.resize(bg, size, interpolation=cv2.INTER_CUBIC)
        alpha = cv2.resize(alpha, size, interpolation=cv2.INTER_CUBIC)
        height, width = alpha.shape
    lo, hi = cfg.trimap_radius
    radius = int(rng.integers(lo, hi + 1))
    fitting = [s for s in cfg.crop_sizes if s <= min(height, width)] or [min(height, width)]
    side = int(rng.choice(fitting))
    centre = sample_band_pixel(cv2.inRange(alpha, 1, 254), radius, rng)
    if centre is None:  # a binary matte: no unknown band, any centre
        centre = int(rng.integers(height)), int(rng.integers(width))
    cy, cx = centre
    y0 = min(max(cy - side // 2, 0), height - side)
    x0 = min(max(cx - side // 2, 0), width - side)
    window = (slice(y0, y0 + side), slice(x0, x0 + side))
    trimap = _window_trimap(alpha, y0, x0, side, radius)
    crops = {"fg": fg[window], "bg": bg[window], "alpha": alpha[window], "trimap": trimap}
    if side != cfg.input_size:
        size = (cfg.input_size, cfg.input_size)
        for name in ("fg", "bg", "alpha"):
            crops[name] = cv2.resize(crops[name], size, interpolation=cv2.INTER_CUBIC)
        crops["trimap"] = cv2.resize(crops["trimap"], size, interpolation=cv2.INTER_NEAREST)
    if rng.random() < cfg.flip_prob:
        return {name: cv2.flip(arr, 1) for name, arr in crops.items()}
    return {name: np.ascontiguousarray(arr) for name, arr in crops.items()}


TILE = 16  # side of the tiles that bound the unknown band for sampling


def sample_band_pixel(
    unknown: np.ndarray, radius: int, rng: np.random.Generator
) -> tuple[int, int] | None:
    """A pixel drawn uniformly from the trimap's unknown band, without making the trimap.

    The band is every pixel within Euclidean ``radius`` of ``unknown`` (``trimap_from_alpha``).
    Candidates come uniformly from the tiles within reach of a tile holding an unknown pixel
    (a superset of the band) and are kept when an unknown pixel lies within ``radius``:
    rejection sampling, so the draw is exactly uniform over the band, at a cost that follows
    the band's size rather than the image's (a full distance transform of a 1.5 MP matte takes
    longer than the rest of the augmentation).

    Args:
        unknown: (H, W) bool or uint8, non-zero where 0 < alpha < 255.
        radius: band radius in pixels.
        rng: the sample's generator.

    Returns:
        ``(y, x)``, or None when nothing is unknown.
    """
    unknown = unknown.view(np.uint8) if unknown.dtype == np.bool_ else unknown
    h, w = unknown.shape
    th, tw = -(-h // TILE), -(-w // TILE)
    padded = cv2.copyMakeBorder(unknown, 0, th * TILE - h, 0, tw * TILE - w, cv2.BORDER_CONSTANT)
    # a box average over each tile, rounded: any non-zero pixel leaves it >= 1 (255 / 256 -> 1)
    tiles = cv2.resize(np.minimum(padded, 1) * 255, (tw, th), interpolation=cv2.INTER_AREA)
    if not tiles.any():
        return None
    reach = 2 * -(-radius // TILE) + 1  # tiles whose pixels can be within radius of a tile
    candidates = cv2.dilate(tiles, np.ones((reach, reach), np.uint8))
    ty, tx = np.nonzero(candidates)
    heights, widths = np.minimum(TILE, h - ty * TILE), np.minimum(TILE, w - tx * TILE)
    cumulative = np.cumsum(heights * widths)  # edge tiles hold fewer pixels
    while True:
        i = int(np.searchsorted(cumulative, rng.integers(cumulative[-1]), side="right"))
        y = int(ty[i] * TILE + rng.integers(heights[i]))
        x = int(tx[i] * TILE + rng.integers(widths[i]))
        top, left = max(y - radius, 0), max(x - radius, 0)
        ys, xs = np.nonzero(unknown[top : y + radius + 1, left : x + radius + 1])
        if ys.size and int(((ys + top - y) ** 2 + (xs + left - x) ** 2).min()) <= radius**2:
            return y, x


def _window_trimap(alpha: np.ndarray, y0: int, x0: int, side: int, radius: int) -> np.ndarray:
    """``trimap_from_alpha(alpha, radius)[y0:y0+side, x0:x0+side]``, from the window alone.

    A pixel's band membership depends only on unknown pixels within ``radius`` of it, so the
    window grown by ``radius`` gives exactly the full image's trimap inside the window.
    """
    h, w = alpha.shape
    top, left = max(y0 - radius, 0), max(x0 - radius, 0)
    grown = alpha[top : min(y0 + side + radius, h), left : min(x0 + side + radius, w)]
    trimap = trimap_from_alpha(grown, radius)
    return trimap[y0 - top : y0 - top + side, x0 - left : x0 - left + side]


def to_tensors(
    crops: dict[str, np.ndarray],
    make_input: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """uint8 crops -> float tensors in [0, 1] (CHW, RGB) and the network input.

    Args:
        crops: ``crop_sample``'s output.
        make_input: the model family's input function (``ModelFamily.make_input``); None:
            the ImageNet-normalised RGB + trimap/255 of ``training.normalise``.

    Returns:
        ``image``: the network input, ``make_input(merged, trimap)``, e.g. (4, S, S);
        ``alpha`` (1, S, S); ``fg``, ``bg``, ``merged`` (3, S, S) in [0, 1]; ``unknown``
        (1, S, S), 1 where trimap == 128.
    """

    def rgb(arr: np.ndarray) -> torch.Tensor:  # (S, S, 3) uint8 RGB -> (3, S, S) float
        return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255)

    fg, bg = rgb(crops["fg"]), rgb(crops["bg"])
    alpha = torch.from_numpy(crops["alpha"])[None].float().div_(255)
    merged = torch.lerp(bg, fg, alpha)  # alpha * fg + (1 - alpha) * bg
    trimap = torch.from_numpy(crops["trimap"])[None]
    image = (make_input or imagenet_input)(merged, trimap)  # the same function as inference's
    return {
        "image": image,
        "alpha": alpha,
        "fg": fg,
        "bg": bg,
        "merged": merged,
        "unknown": (trimap == TRIMAP_UNKNOWN).float(),
    }
