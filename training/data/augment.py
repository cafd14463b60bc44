"""The reference training augmentation (docs/reference.md section 3), on uint8 arrays, then tensors.

Per sample: rescale images whose short side is below the input size to ``small_image_min_side``;
make the trimap on the fly with an unknown band of radius ``r ~ U{min..max}``; choose a crop side
among ``crop_sizes`` that fit, centred on a random unknown pixel (shifted to fit); resize the crop
to ``input_size`` (bicubic for images and alpha, nearest for the trimap); flip horizontally with
probability ``flip_prob``. Everything stays uint8 until the crop is taken (``crop_sample``); the
loader ships the small uint8 crop (``pack_crops``), and the trainer converts a batch of them to
float on its device (``compose_batch``; ``to_tensors`` is the same for one sample).

The network's input image is the composite of the cropped fg, bg and alpha, computed in float, so
that the composition loss is exactly zero when the predicted alpha is the true one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from configs import AugmentConfig
from shards.mattes import TRIMAP_BACKGROUND, TRIMAP_FOREGROUND, TRIMAP_UNKNOWN, trimap_from_alpha


@dataclass(frozen=True)
class MatteMaps:
    """What ``crop_sample`` derives from a matte alone, made once for a matte that many samples
    share (the loader's cached alphas, ``training.data.decode_cache``): the same crops, faster.

    Attributes:
        tiles: ``unknown_tiles`` of the matte (None: no unknown pixel).
        near: (H, W) uint8, each pixel's Euclidean distance to the nearest unknown pixel rounded
            up (255 for 255 and beyond): the band of radius ``r < 255`` is ``near <= r``.
    """

    tiles: np.ndarray | None
    near: np.ndarray | None

    @property
    def nbytes(self) -> int:
        return sum(m.nbytes for m in (self.tiles, self.near) if m is not None)


def matte_maps(alpha: np.ndarray) -> MatteMaps:
    """``MatteMaps`` of an (H, W) uint8 matte (one distance transform of the whole matte)."""
    unknown = cv2.inRange(alpha, 1, 254)
    tiles = unknown_tiles(unknown)
    if tiles is None:
        return MatteMaps(None, None)
    dist = cv2.distanceTransform(255 - unknown, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    near = np.minimum(np.ceil(dist), 255).astype(np.uint8)  # d <= r iff ceil(d) <= r, r whole
    return MatteMaps(tiles, near)


def crop_sample(
    fg: np.ndarray,
    bg: np.ndarray,
    alpha: np.ndarray,
    cfg: AugmentConfig,
    rng: np.random.Generator,
    maps: MatteMaps | None = None,
) -> dict[str, np.ndarray]:
    """Rescale, make a trimap, crop around the unknown region, resize, flip.

    Args:
        fg: (H, W, 3) uint8 RGB foreground.
        bg: (H, W, 3) uint8 RGB background already fitted to the foreground.
        alpha: (H, W) uint8 matte.
        cfg: the ``augment`` section (input_size, crop_sizes, trimap_radius, ...).
        rng: the sample's random generator.
        maps: ``matte_maps(alpha)``, when made already: the same result, without the distance
            transform of the crop's window.

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
        maps = None  # they describe the matte before the rescale
    lo, hi = cfg.trimap_radius
    radius = int(rng.integers(lo, hi + 1))
    if radius >= 255:
        maps = None  # near holds distances up to 254
    fitting = [s for s in cfg.crop_sizes if s <= min(height, width)] or [min(height, width)]
    side = int(rng.choice(fitting))
    if maps is not None:
        centre = sample_band_pixel(None, radius, rng, maps)
    else:
        centre = sample_band_pixel(cv2.inRange(alpha, 1, 254), radius, rng)
    if centre is None:  # a binary matte: no unknown band, any centre
        centre = int(rng.integers(height)), int(rng.integers(width))
    cy, cx = centre
    y0 = min(max(cy - side // 2, 0), height - side)
    x0 = min(max(cx - side // 2, 0), width - side)
    window = (slice(y0, y0 + side), slice(x0, x0 + side))
    if maps is not None and maps.near is not None:
        trimap = np.where(
            alpha[window] == 255, np.uint8(TRIMAP_FOREGROUND), np.uint8(TRIMAP_BACKGROUND)
        )
        trimap[maps.near[window] <= radius] = TRIMAP_UNKNOWN
    else:
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


def unknown_tiles(unknown: np.ndarray) -> np.ndarray | None:
    """(ceil(H/16), ceil(W/16)) uint8, non-zero for each ``TILE`` x ``TILE`` tile of an (H, W)
    uint8 unknown mask that holds an unknown pixel; None when none does."""
    h, w = unknown.shape
    th, tw = -(-h // TILE), -(-w // TILE)
    padded = cv2.copyMakeBorder(unknown, 0, th * TILE - h, 0, tw * TILE - w, cv2.BORDER_CONSTANT)
    # a box average over each tile, rounded: any non-zero pixel leaves it >= 1 (255 / 256 -> 1)
    tiles = cv2.resize(np.minimum(padded, 1) * 255, (tw, th), interpolation=cv2.INTER_AREA)
    return tiles if tiles.any() else None


def sample_band_pixel(
    unknown: np.ndarray | None,
    radius: int,
    rng: np.random.Generator,
    maps: MatteMaps | None = None,
) -> tuple[int, int] | None:
    """A pixel drawn uniformly from the trimap's unknown band, without making the trimap.

    The band is every pixel within Euclidean ``radius`` of ``unknown`` (``trimap_from_alpha``).
    Candidates come uniformly from the tiles within reach of a tile holding an unknown pixel
    (a superset of the band) and are kept when an unknown pixel lies within ``radius``:
    rejection sampling, so the draw is exactly uniform over the band, at a cost that follows
    the band's size rather than the image's (a full distance transform of a 1.5 MP matte takes
    longer than the rest of the augmentation).

    Args:
        unknown: (H, W) bool or uint8, non-zero where 0 < alpha < 255 (None with ``maps``).
        radius: band radius in pixels (below 255 with ``maps``).
        rng: the sample's generator.
        maps: the matte's ``MatteMaps``: the same draws, with the tiles and the band test
            looked up rather than computed.

    Returns:
        ``(y, x)``, or None when nothing is unknown.
    """
    if maps is not None:
        tiles, near = maps.tiles, maps.near
        if tiles is None:
            return None
        h, w = near.shape
    else:
        unknown = unknown.view(np.uint8) if unknown.dtype == np.bool_ else unknown
        h, w = unknown.shape
        tiles, near = unknown_tiles(unknown), None
        if tiles is None:
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
        if near is not None:
            if near[y, x] <= radius:
                return y, x
            continue
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


CROP_CHANNELS = {"fg": slice(0, 3), "bg": slice(3, 6), "alpha": slice(6, 7), "trimap": slice(7, 8)}


def pack_crops(crops: dict[str, np.ndarray]) -> torch.Tensor:
    """``crop_sample``'s uint8 crops in one (S, S, 8) uint8 tensor (``CROP_CHANNELS``): fg RGB,
    bg RGB, alpha, trimap; what a loader process ships, 8 bytes a pixel."""
    return torch.from_numpy(cv2.merge([crops["fg"], crops["bg"], crops["alpha"], crops["trimap"]]))


def compose_batch(
    packed: torch.Tensor,
    make_input: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> dict[str, torch.Tensor]:
    """(B, S, S, 8) uint8 packed crops, on any device -> the float tensors of a training step.

    The one place the float math of a training sample is done: the trainer runs it on the
    device on each batch, and ``to_tensors`` on one sample on the CPU.

    Args:
        packed: ``pack_crops`` outputs, stacked.
        make_input: the model family's input function (``ModelFamily.make_input``); the data
            path has no default family.

    Returns:
        ``image``: the network input, ``make_input(merged, trimap)``, e.g. (B, 4, S, S);
        ``alpha`` (B, 1, S, S); ``fg``, ``bg``, ``merged`` (B, 3, S, S) in [0, 1]; ``unknown``
        (B, 1, S, S), 1 where trimap == 128. The network input image is the composite of the
        cropped fg, bg and alpha, in float, so the composition loss is exactly zero when the
        predicted alpha is the true one.
    """
    planes = packed.permute(0, 3, 1, 2)  # (B, 8, S, S) uint8, a view

    def unit(name: str) -> torch.Tensor:  # uint8 -> float in [0, 1]
        return planes[:, CROP_CHANNELS[name]].float().div_(255)

    fg, bg, alpha = unit("fg"), unit("bg"), unit("alpha")
    merged = torch.lerp(bg, fg, alpha)  # alpha * fg + (1 - alpha) * bg
    trimap = planes[:, CROP_CHANNELS["trimap"]]
    image = make_input(merged, trimap)  # the same function as inference's
    return {
        "image": image,
        "alpha": alpha,
        "fg": fg,
        "bg": bg,
        "merged": merged,
        "unknown": (trimap == TRIMAP_UNKNOWN).float(),
    }


def to_tensors(
    crops: dict[str, np.ndarray],
    make_input: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> dict[str, torch.Tensor]:
    """One sample's uint8 crops -> its float tensors (CHW, RGB), ``compose_batch`` on the CPU.

    Returns:
        ``compose_batch``'s tensors without the batch dimension: ``image`` (4, S, S),
        ``alpha`` and ``unknown`` (1, S, S), ``fg``, ``bg``, ``merged`` (3, S, S).
    """
    batch = compose_batch(pack_crops(crops)[None], make_input)
    return {name: tensor[0] for name, tensor in batch.items()}
