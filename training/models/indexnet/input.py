"""IndexNet's network input: ImageNet-normalised RGB and the trimap divided by 255.

One function, ``make_input``, makes it for training (``training.data.augment.compose_batch``)
and for inference (``training.inference.predict_alpha``), so that the two cannot drift apart:
the family's registry entry (``training.models.indexnet.family``) names it.
"""

from __future__ import annotations

import torch

from training.models.imagenet import IMAGENET_MEAN, IMAGENET_STD

_MEAN = torch.from_numpy(IMAGENET_MEAN)[:, None, None]
_STD = torch.from_numpy(IMAGENET_STD)[:, None, None]


def make_input(rgb01: torch.Tensor, trimap: torch.Tensor) -> torch.Tensor:
    """(3, H, W) RGB in [0, 1] and an (H, W) or (1, H, W) trimap -> (4, H, W) float32; or a
    batch, (B, 3, H, W) and (B, 1, H, W) -> (B, 4, H, W), on any device.

    Args:
        rgb01: (3, H, W) or (B, 3, H, W) float32 RGB in [0, 1].
        trimap: (H, W), (1, H, W) or (B, 1, H, W) 0/128/255 (uint8, or float holding those
            values), on ``rgb01``'s device.

    Returns:
        float32 with 4 channels: ``(rgb - mean) / std`` per channel (ImageNet statistics), then
        ``trimap / 255``.
    """
    planes = trimap.reshape(*rgb01.shape[:-3], 1, *rgb01.shape[-2:]).float() / 255
    mean, std = _MEAN.to(rgb01.device), _STD.to(rgb01.device)
    return torch.cat([(rgb01 - mean) / std, planes], dim=-3)
