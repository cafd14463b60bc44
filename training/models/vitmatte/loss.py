"""ViTMatte's training loss, as its official code computes it (docs/reference.md section 5).

The sum, each with weight 1, of four terms over an (B, 1, H, W) predicted and true alpha in
[0, 1], where "unknown" is the trimap's unknown region (``unknown`` = 1 there):

- ``unknown_l1``: the mean |pred - gt| over the unknown pixels;
- ``known_l1``: the same over the known pixels (0 when there are none);
- ``laplacian``: a 5-level Laplacian pyramid of both (5x5 Gaussian, the outer product of
  [1, 4, 6, 4, 1] / 16, reflect padding 2; down: blur then every 2nd pixel; up: zeros
  inserted, x4, blur); each level's mean L1 weighted 2^level, the sum divided by 5;
- ``gradient``: Sobel x and y (zero padding 1) of pred and of gt, compared over the unknown
  pixels: L1(gx_p, gx_g) + L1(gy_p, gy_g) + 0.01 (|gx_p| + |gy_p|), each a mean over them.

Two departures from the official file, both deliberate. Its means over a region are written as
``l1(pred*m, gt*m) * B*512^2 / sum(m)``, which is the mean over the region only at 512x512
crops; here the mean is computed directly, at any crop size (the same values at 512). And a
batch with no unknown pixel (the official code divides by zero there) gives 0 for the unknown
terms. The Sobel filters see the whole prediction, then the region is taken: the official code
filters ``preds``, not ``preds * m`` (docs/reference.md section 5; the code is what trained the
released weights).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

LEVELS = 5  # the pyramid's levels
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
GAUSSIAN = (_BINOMIAL[:, None] * _BINOMIAL[None, :] / 256)[None, None]  # (1, 1, 5, 5), sums to 1
SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])[None, None]
SOBEL_Y = SOBEL_X.transpose(2, 3).contiguous()  # [[-1, -2, -1], [0, 0, 0], [1, 2, 1]]
PENALTY = 0.01  # the gradient term's weight on the prediction's own gradient


class VitMatteLoss(NamedTuple):
    """The loss and its four terms (scalars)."""

    total: torch.Tensor
    unknown_l1: torch.Tensor
    known_l1: torch.Tensor
    laplacian: torch.Tensor
    gradient: torch.Tensor


def _region_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` where ``mask`` is 1 (0 when it is nowhere 1)."""
    count = mask.sum()
    return (values * mask).sum() / count if count > 0 else values.sum() * 0


def _blur(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    flat = F.pad(x.reshape(b * c, 1, h, w), (2, 2, 2, 2), mode="reflect")
    return F.conv2d(flat, GAUSSIAN.to(x)).reshape(b, c, h, w)


def laplacian_pyramid(x: torch.Tensor, levels: int = LEVELS) -> list[torch.Tensor]:
    """The ``levels`` band-pass images of (B, C, H, W) ``x`` (each level cropped to even sides
    first, as the official code does); sides of at least 2^(levels + 1) (64 for 5 levels)."""
    out, current = [], x
    for _ in range(levels):
        current = current[:, :, : current.shape[2] // 2 * 2, : current.shape[3] // 2 * 2]
        down = _blur(current)[:, :, ::2, ::2]
        up = torch.zeros_like(current)
        up[:, :, ::2, ::2] = down * 4
        out.append(current - _blur(up))
        current = down
    return out


def laplacian_loss(pred: torch.Tensor, gt: torch.Tensor, levels: int = LEVELS) -> torch.Tensor:
    """sum over levels of 2^level x mean |L_level(pred) - L_level(gt)|, divided by ``levels``."""
    pairs = zip(laplacian_pyramid(pred, levels), laplacian_pyramid(gt, levels), strict=True)
    return sum((2**level) * F.l1_loss(p, g) for level, (p, g) in enumerate(pairs)) / levels


def gradient_penalty(pred: torch.Tensor, gt: torch.Tensor, unknown: torch.Tensor) -> torch.Tensor:
    """L1 of the Sobel gradients of pred and gt over the unknown pixels, plus 0.01 x the mean
    |gradient| of pred there."""
    gx_p, gy_p = (F.conv2d(pred, k.to(pred), padding=1) for k in (SOBEL_X, SOBEL_Y))
    gx_g, gy_g = (F.conv2d(gt, k.to(gt), padding=1) for k in (SOBEL_X, SOBEL_Y))
    return (
        _region_mean((gx_p - gx_g).abs(), unknown)
        + _region_mean((gy_p - gy_g).abs(), unknown)
        + PENALTY * (_region_mean(gx_p.abs(), unknown) + _region_mean(gy_p.abs(), unknown))
    )


def vitmatte_loss(pred: torch.Tensor, gt: torch.Tensor, unknown: torch.Tensor) -> VitMatteLoss:
    """ViTMatte's loss of (B, 1, H, W) ``pred`` against ``gt``; ``unknown`` (B, 1, H, W) is 1 on
    the trimap's unknown region, 0 elsewhere (float32 throughout)."""
    pred, gt, unknown = pred.float(), gt.float(), unknown.float()
    error = (pred - gt).abs()
    terms = (
        _region_mean(error, unknown),
        _region_mean(error, 1 - unknown),
        laplacian_loss(pred, gt),
        gradient_penalty(pred, gt, unknown),
    )
    return VitMatteLoss(sum(terms), *terms)
