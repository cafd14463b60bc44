"""The MobileNetV2 encoder of IndexNet: every stride 1, downsampling left to the index blocks.

IndexNet keeps MobileNetV2 1.0x's convolutions (so ImageNet weights fit) but sets every stride to
1: the resolution drops only where an index block pools (after layer0, 2, 3, 4 and 6,
``training.models.indexnet.network``). Module and parameter names follow the official release
(``layer1.0.conv.0.weight``...), which is also the layout of the ImageNet backbone it loads
(``features.N.conv.M`` in the CSAIL/tonylins MobileNetV2), so its checkpoint loads as is.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(inp: int, oup: int, kernel_size: int, groups: int = 1) -> nn.Sequential:
    """Conv (stride 1, same padding, no bias) + BatchNorm + ReLU6: official names ``0``, ``1``.

    Args:
        inp: input channels.
        oup: output channels.
        kernel_size: odd kernel side.
        groups: conv groups (``inp`` for a depthwise conv).
    """
    return nn.Sequential(
        nn.Conv2d(inp, oup, kernel_size, 1, kernel_size // 2, groups=groups, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> 3x3 depthwise -> 1x1 linear projection (+ residual).

    ``conv`` holds the layers under the official (and CSAIL ImageNet) indices: with expansion,
    ``0`` pw conv, ``1`` BN, ``3`` dw conv, ``4`` BN, ``6`` pw-linear conv, ``7`` BN (2 and 5 are
    ReLU6); without expansion (t = 1), ``0`` dw conv, ``1`` BN, ``3`` pw-linear conv, ``4`` BN.
    Stride is always 1 here, so the residual applies whenever input and output widths agree.

    As in the official release, the block zero-pads its *input* and the depthwise conv has no
    padding of its own. With expansion this is not the same as a padded depthwise conv: the
    expansion conv, BN and ReLU6 also run on the padded border, so the depthwise conv sees
    ``relu6(BN(0))`` there rather than zeros, and in training the border enters the BN batch
    statistics. The released weights were trained this way, so we keep it.

    Args:
        inp: input channels.
        oup: output channels.
        expand_ratio: hidden width = ``round(inp * expand_ratio)``.
        dilation: of the 3x3 depthwise conv (2 in layer6/7 at output stride 16).
    """

    def __init__(self, inp: int, oup: int, expand_ratio: int, dilation: int = 1) -> None:
        super().__init__()
        hidden = round(inp * expand_ratio)
        self.use_residual = inp == oup
        self.padding = dilation  # a 3x3 kernel dilated by d spans 2d + 1 pixels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers += [  # pw expand
                nn.Conv2d(inp, hidden, 1, bias=False),
                nn.BatchNorm2d(hidden),
                nn.ReLU6(inplace=True),
            ]
        layers += [
            # dw: no padding, the input was padded (see the class docstring)
            nn.Conv2d(hidden, hidden, 3, 1, 0, dilation, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            # pw-linear projection
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, inp, H, W) -> (B, oup, H, W)."""
        p = self.padding
        out = self.conv(F.pad(x, (p, p, p, p)))  # (B, inp, H + 2p, W + 2p) -> (B, oup, H, W)
        return x + out if self.use_residual else out


class Stage(NamedTuple):
    """One row of the encoder table: a ``layerN`` of ``blocks`` inverted residuals."""

    name: str  # official module name
    expand_ratio: int  # t
    inp: int  # input channels
    oup: int  # c
    blocks: int  # n
    downsample: bool  # stride 2 in ImageNet MobileNetV2; IndexNet index-pools after it instead


# MobileNetV2 1.0x inverted-residual stages, every stride 1. After ImageNet's stride-2 stages
# (layer2, 3, 4, 6; layer6 only at output stride 32) IndexNet pools with learned indices.
ENCODER_STAGES: tuple[Stage, ...] = (
    #     name,   t,  in, out, n, downsample
    Stage("layer1", 1, 32, 16, 1, False),
    Stage("layer2", 6, 16, 24, 2, True),
    Stage("layer3", 6, 24, 32, 3, True),
    Stage("layer4", 6, 32, 64, 4, True),
    Stage("layer5", 6, 64, 96, 3, False),
    Stage("layer6", 6, 96, 160, 3, True),
    Stage("layer7", 6, 160, 320, 1, False),
)
STEM_CHANNELS = 32  # layer0: 3x3 conv 4 -> 32 + BN + ReLU6, pooled after
ENCODER_LAYERS = ("layer0",) + tuple(stage.name for stage in ENCODER_STAGES)


def build_stage(stage: Stage, dilation: int = 1) -> nn.Sequential:
    """``layerN`` as ``nn.Sequential`` of its inverted residuals (official indices ``0..n-1``).

    Args:
        stage: the table row.
        dilation: of the depthwise convs. As in the official code, the first block of a stage
            that is strided in ImageNet MobileNetV2 (``downsample``) takes half of it.
    """
    first = max(dilation // 2, 1) if stage.downsample else dilation
    blocks = [
        InvertedResidual(
            stage.inp if i == 0 else stage.oup,
            stage.oup,
            stage.expand_ratio,
            dilation=first if i == 0 else dilation,
        )
        for i in range(stage.blocks)
    ]
    return nn.Sequential(*blocks)


def stage_dilations(output_stride: int) -> dict[str, int]:
    """Depthwise dilation per stage: 1 everywhere at stride 32; layer6/7 get 2 at stride 16.

    At output stride 16 layer6 is not pooled, so (as in the official code) layer6's later blocks
    and layer7 dilate by 2 to keep the receptive field of the stride-32 network.
    """
    dilated = {"layer6", "layer7"} if output_stride == 16 else set()
    return {stage.name: 2 if stage.name in dilated else 1 for stage in ENCODER_STAGES}
