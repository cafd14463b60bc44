"""The toy family's network and input: two convolutions on grey + trimap, at even sides."""

from __future__ import annotations

import torch
from torch import nn

from configs import ModelConfig


class ToyNet(nn.Module):
    """(B, 2, H, W) grey + trimap -> (B, 1, H, W) raw alpha; H and W even."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg  # what every family's network keeps
        self.down = nn.Conv2d(2, 8, 3, stride=2, padding=1)  # (B, 8, H/2, W/2)
        self.up = nn.ConvTranspose2d(8, 1, 2, stride=2)  # (B, 1, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(torch.relu(self.down(x)))


def make_input(rgb01: torch.Tensor, trimap: torch.Tensor) -> torch.Tensor:
    """Grey (no ImageNet statistics) and trimap / 255: (2, H, W)."""
    return torch.stack([rgb01.mean(0), trimap.reshape(rgb01.shape[-2:]).float() / 255])
