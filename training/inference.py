"""Full-resolution alpha prediction with a trained network (validation, evaluation, predict).

The model's family (``training.models.registry``) makes its input from the image and trimap and says
what its sides must be multiples of (32 for both families) and how to pad: IndexNet's input is
reflect-padded up to the next multiple (the official code resizes instead; padding keeps every
pixel at its own resolution), ViTMatte's zero-padded as its official code does; the output is
cropped back. The prediction is clipped to [0, 1], forced to 0 where the trimap
is 0 and to 1 where it is 255, and rounded to 8 bits: docs/reference.md section 4.

Images larger than ``max_pixels`` are predicted in overlapping tiles (each reflect-padded the
same way), blended with linear ramps where they overlap, so memory stays bounded; tiles without
an unknown pixel are skipped, since every pixel there is forced to 0 or 1 anyway. A tile sees
less context than the whole image (ASPP's global pooling, the encoder's receptive field), which
is what tiling can cost in accuracy (docs/benchmarks.md measures it).
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from shards.mattes import TRIMAP_BACKGROUND, TRIMAP_FOREGROUND, TRIMAP_UNKNOWN, to_uint8
from training.models.family import ModelFamily
from training.models.registry import family_of


def enable_huge_pages() -> None:
    """Let PyTorch's CPU allocator use transparent huge pages, unless the user set it already.

    Full-resolution activations are hundreds of megabytes, allocated and freed at every forward
    pass; with 4 KB pages half of the CPU time of a 1.5 MP forward went to page faults, and
    ``THP_MEM_ALLOC_ENABLE=1`` (read by PyTorch at allocation time) makes it 1.54x as fast on
    the CPU (docs/benchmarks.md, Inference: 7.0 s against 10.8 s per 1.5 MP image). The commands
    that run the model call this.
    """
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def _forward_padded(
    model: torch.nn.Module, planes: torch.Tensor, multiple: int, pad_mode: str = "reflect"
) -> torch.Tensor:
    """(1, C, H, W) -> (H, W) raw prediction, padding bottom/right to a multiple of ``multiple``
    by ``pad_mode``: "reflect" (replicate where a side is too short to reflect) or "zeros"."""
    height, width = planes.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h or pad_w:
        if pad_mode == "zeros":
            planes = F.pad(planes, (0, pad_w, 0, pad_h))
        else:
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            planes = F.pad(planes, (0, pad_w, 0, pad_h), mode=mode)
    return model(planes)[0, 0, :height, :width].float()


def _input(family: ModelFamily, rgb: np.ndarray, trimap: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB and (H, W) trimap -> the family's (1, C, H, W) input, on the CPU."""
    # float copies made by numpy: any strides and read-only arrays (PIL's) are fine, and the
    # input is C-contiguous, as the network has always been fed
    rgb01 = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32))
    marks = torch.from_numpy(np.ascontiguousarray(trimap, dtype=np.float32))
    return family.make_input(rgb01.div_(255), marks)[None]


def _ramp(length: int, overlap: int, first: bool, last: bool) -> np.ndarray:
    weight = np.ones(length, np.float32)
    if overlap and not first:
        weight[:overlap] = np.linspace(0, 1, overlap + 2, dtype=np.float32)[1:-1]
    if overlap and not last:
        weight[-overlap:] = np.linspace(1, 0, overlap + 2, dtype=np.float32)[1:-1]
    return weight


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    count = math.ceil((size - overlap) / (tile - overlap))
    step = (size - tile) / (count - 1)
    return [round(i * step) for i in range(count)]


@torch.inference_mode()
def predict_alpha(
    model: torch.nn.Module,
    rgb: np.ndarray,
    trimap: np.ndarray,
    device: torch.device | str = "cpu",
    max_pixels: int = 4_000_000,
    tile: int = 1536,
    overlap: int = 128,
) -> np.ndarray:
    """Predict an 8-bit alpha matte for one image.

    Args:
        model: a network of a model family, in eval mode; its family (``family_of``: its
            ``.cfg.family``, else the default family) makes the input and sets the padding.
        rgb: (H, W, 3) uint8 RGB image.
        trimap: (H, W) uint8 trimap with values 0/128/255.
        device: where to run the network.
        max_pixels: images with more pixels are predicted in ``tile`` x ``tile`` tiles.
        tile: tile side (a multiple of the family's ``pad_multiple``, 32) for large images.
        overlap: pixels shared by neighbouring tiles, blended linearly.

    Returns:
        (H, W) uint8 alpha.
    """
    if rgb.shape[:2] != trimap.shape:
        raise ValueError(f"image {rgb.shape[:2]} and trimap {trimap.shape} differ in size")
    family = family_of(model)
    multiple = family.pad_multiple
    if max_pixels < 1 or tile % multiple or not 0 <= 2 * overlap < tile:
        raise ValueError(
            f"max_pixels must be >= 1 (got {max_pixels}), tile a multiple of {multiple} (got "
            f"{tile}) and overlap in [0, tile / 2) (got {overlap})"
        )
    height, width = trimap.shape
    planes = _input(family, rgb, trimap).to(device)
    if height * width <= max_pixels:
        raw = _forward_padded(model, planes, multiple, family.pad_mode).cpu().numpy()
    else:
        raw = np.zeros((height, width), np.float32)
        weight = np.zeros((height, width), np.float32)
        ys, xs = _starts(height, tile, overlap), _starts(width, tile, overlap)
        for i, y in enumerate(ys):
            for j, x in enumerate(xs):
                h, w = min(tile, height - y), min(tile, width - x)
                if not (trimap[y : y + h, x : x + w] == TRIMAP_UNKNOWN).any():
                    continue  # every pixel of the tile is known: forced to 0 or 1 below
                tile_planes = planes[..., y : y + h, x : x + w]
                part = _forward_padded(model, tile_planes, multiple, family.pad_mode).cpu().numpy()
                ramp = np.outer(
                    _ramp(h, overlap, i == 0, i == len(ys) - 1),
                    _ramp(w, overlap, j == 0, j == len(xs) - 1),
                )
                raw[y : y + h, x : x + w] += part * ramp
                weight[y : y + h, x : x + w] += ramp
        raw /= np.maximum(weight, 1e-12)  # weight is 0 only on known pixels of skipped tiles
    alpha = np.clip(raw, 0.0, 1.0)
    alpha[trimap == TRIMAP_BACKGROUND] = 0.0
    alpha[trimap == TRIMAP_FOREGROUND] = 1.0
    return to_uint8(alpha)  # the protocol's round half up
