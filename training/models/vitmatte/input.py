"""ViTMatte's network input: ImageNet-normalised RGB and the trimap as 0 / 0.5 / 1.

The trimap rule is the official training code's (< 85 background, >= 170 foreground, else
unknown). transformers' ``VitMatteImageProcessor`` normalises with mean and std 0.5 and divides
the trimap by 255 instead; we follow the official code, which trained the released weights, at
training and inference alike (on our exact 0/128/255 trimaps the only difference from its
test-time /255 is 0.5 against 0.502). docs/reference.md section 5.
"""

from __future__ import annotations

import torch

from training.models.imagenet import IMAGENET_MEAN, IMAGENET_STD

TRIMAP_LOW, TRIMAP_HIGH = 85, 170  # < 85: background (0); >= 170: foreground (1); else 0.5
_MEAN = torch.from_numpy(IMAGENET_MEAN)[:, None, None]
_STD = torch.from_numpy(IMAGENET_STD)[:, None, None]


def make_input(rgb01: torch.Tensor, trimap: torch.Tensor) -> torch.Tensor:
    """(3, H, W) or (B, 3, H, W) RGB in [0, 1] and a 0..255 trimap of the same layout
    ((H, W), (1, H, W) or (B, 1, H, W)) -> 4 planes: ImageNet-normalised RGB, then the trimap
    as 0 / 0.5 / 1, on ``rgb01``'s device."""
    raw = trimap.reshape(*rgb01.shape[:-3], 1, *rgb01.shape[-2:])
    planes = torch.full(raw.shape, 0.5, dtype=torch.float32, device=rgb01.device)
    planes[raw < TRIMAP_LOW] = 0.0
    planes[raw >= TRIMAP_HIGH] = 1.0
    mean, std = _MEAN.to(rgb01.device), _STD.to(rgb01.device)
    return torch.cat([(rgb01 - mean) / std, planes], dim=-3)
