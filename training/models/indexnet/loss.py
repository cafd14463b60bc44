"""The IndexNet matting loss: alpha and composition terms over the unknown region.

docs/reference.md section 3, as the official release computes it (``weighted_loss`` in its trainer):
with the unknown mask ``m`` (trimap == 128), ``eps = 1e-6`` and sums over every pixel,

    L_alpha = mean_b( sum sqrt(((a_p - a_g) m)^2 + eps^2) / sum m )
    L_comp  = mean_b( sum_rgb sum sqrt(((C_p - C_g) m)^2 + eps^2) / sum m ),
              C_p = a_p fg + (1 - a_p) bg,  C_g = the merged image
    L       = 0.5 L_alpha + 0.5 L_comp

The prediction is raw (unclamped). Known pixels contribute only the constant ``eps`` each (their
difference is masked to 0 before the square root), so their predictions never count; the
composition term sums its three channels rather than averaging them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from configs import LossConfig


class MattingLoss(NamedTuple):
    """The weighted total and its two terms, each a 0-dim float32 tensor."""

    total: torch.Tensor  # alpha_weight * alpha + comp_weight * comp
    alpha: torch.Tensor  # L_alpha
    comp: torch.Tensor  # L_comp


def _charbonnier_sum(diff: torch.Tensor, mask: torch.Tensor, eps: float) -> torch.Tensor:
    """Per-sample ``sum sqrt((diff * mask)^2 + eps^2)`` over channels and pixels: (B,)."""
    masked = diff * mask
    return torch.sqrt(masked * masked + eps * eps).sum(dim=(1, 2, 3))


def matting_loss(
    pred: torch.Tensor,
    alpha: torch.Tensor,
    fg: torch.Tensor,
    bg: torch.Tensor,
    merged: torch.Tensor,
    unknown: torch.Tensor,
    cfg: LossConfig | None = None,
) -> MattingLoss:
    """Alpha-prediction and composition losses over the unknown region, in float32.

    Args:
        pred: (B, 1, H, W) predicted alpha, raw network output (any dtype, e.g. bf16).
        alpha: (B, 1, H, W) ground-truth alpha in [0, 1].
        fg: (B, 3, H, W) foreground colour in [0, 1].
        bg: (B, 3, H, W) background colour in [0, 1].
        merged: (B, 3, H, W) the composite the network saw, in [0, 1].
        unknown: (B, 1, H, W) bool or 0/1 mask of the unknown region (trimap == 128).
        cfg: weights and epsilon, ``model.indexnet.loss`` (``None``: 0.5, 0.5, 1e-6).

    Returns:
        ``MattingLoss(total, alpha, comp)``, averaged over the batch.

    Raises:
        ValueError: shapes that do not match the above.

    A sample without unknown pixels divides by 1 instead of 0 (the official code would give
    inf): its loss is then the constant ``eps`` floor, with zero gradient.
    """
    cfg = cfg or LossConfig()
    _check_shapes(pred, alpha, fg, bg, merged, unknown)
    pred = pred.float()
    mask = unknown.float()
    count = mask.sum(dim=(1, 2, 3)).clamp_min(1.0)  # (B,) unknown pixels per sample
    alpha_term = (_charbonnier_sum(pred - alpha, mask, cfg.eps) / count).mean()
    composite = pred * fg + (1.0 - pred) * bg  # (B, 3, H, W)
    comp_term = (_charbonnier_sum(composite - merged, mask, cfg.eps) / count).mean()
    total = cfg.alpha_weight * alpha_term + cfg.comp_weight * comp_term
    return MattingLoss(total, alpha_term, comp_term)


def _check_shapes(
    pred: torch.Tensor,
    alpha: torch.Tensor,
    fg: torch.Tensor,
    bg: torch.Tensor,
    merged: torch.Tensor,
    unknown: torch.Tensor,
) -> None:
    if pred.dim() != 4 or pred.shape[1] != 1:
        raise ValueError(f"pred must be (B, 1, H, W), got {tuple(pred.shape)}")
    b, _, h, w = pred.shape
    expected = {"alpha": 1, "unknown": 1, "fg": 3, "bg": 3, "merged": 3}
    given = {"alpha": alpha, "unknown": unknown, "fg": fg, "bg": bg, "merged": merged}
    for name, tensor in given.items():
        want = (b, expected[name], h, w)
        if tuple(tensor.shape) != want:
            raise ValueError(f"{name} must be {want} to match pred, got {tuple(tensor.shape)}")
