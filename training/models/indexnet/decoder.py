"""IndexNet's context module (ASPP), index-guided decoder stages and prediction head.

Layers and names follow the official release (docs/reference.md section 2): ``dconv_pp.aspp1..4``,
``dconv_pp.global_avg_pool``, ``dconv_pp.bottleneck_conv``; ``decoder_layerN.dconv``;
``pred.0`` (conv-BN-ReLU6 to one channel) and ``pred.1`` (a last conv without bias).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.models.indexnet.mobilenetv2 import conv_bn

ASPP_WIDTH = 256  # channels of each of the five ASPP branches
ASPP_DILATIONS = {32: (2, 4, 8), 16: (6, 12, 18)}  # of aspp2..4, by output stride


def decoder_conv(inp: int, oup: int, kernel_size: int, kind: str = "std_conv") -> nn.Sequential:
    """The decoder's conv operator (official ``conv_operator``), stride 1, same padding.

    ``std_conv``: k x k conv + BN + ReLU6 (names ``0``, ``1``). ``dep_sep_conv``: depthwise
    k x k + BN + ReLU6, then 1x1 + BN + ReLU6 (names ``0``, ``1``, ``3``, ``4``).
    """
    if kind == "std_conv":
        return conv_bn(inp, oup, kernel_size)
    if kind == "dep_sep_conv":
        return nn.Sequential(*conv_bn(inp, inp, kernel_size, groups=inp), *conv_bn(inp, oup, 1))
    raise ValueError(f"unknown decoder conv {kind!r}; allowed: std_conv, dep_sep_conv")


class ASPPBranch(nn.Module):
    """One atrous branch: 1x1 conv-BN-ReLU6, or depthwise dilated 3x3 then 1x1 (``atrous_conv``).

    Args:
        inp: input channels.
        oup: output channels.
        dilation: 1 for the 1x1 branch; the dilation of the 3x3 depthwise conv otherwise.
    """

    def __init__(self, inp: int, oup: int, dilation: int) -> None:
        super().__init__()
        if dilation == 1:
            self.atrous_conv = conv_bn(inp, oup, 1)
        else:  # depthwise separable, to save parameters (as the official release does)
            self.atrous_conv = nn.Sequential(
                nn.Conv2d(inp, inp, 3, 1, dilation, dilation, groups=inp, bias=False),
                nn.BatchNorm2d(inp),
                nn.ReLU6(inplace=True),
                *conv_bn(inp, oup, 1),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, inp, H, W) -> (B, oup, H, W)."""
        return self.atrous_conv(x)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: five 256-channel views of the scene, fused to ``oup``.

    Branches: 1x1; depthwise 3x3 at three dilations (2, 4, 8 at output stride 32); global
    average pool -> 1x1 -> broadcast back. Concatenated (1280) -> 1x1 -> BN -> ReLU6 ->
    Dropout(0.5).

    Args:
        inp: input channels (320).
        oup: output channels (160).
        output_stride: 32 or 16, picks the dilations.
    """

    def __init__(self, inp: int, oup: int, output_stride: int = 32) -> None:
        super().__init__()
        d2, d3, d4 = ASPP_DILATIONS[output_stride]
        self.aspp1 = ASPPBranch(inp, ASPP_WIDTH, 1)
        self.aspp2 = ASPPBranch(inp, ASPP_WIDTH, d2)
        self.aspp3 = ASPPBranch(inp, ASPP_WIDTH, d3)
        self.aspp4 = ASPPBranch(inp, ASPP_WIDTH, d4)
        self.global_avg_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), *conv_bn(inp, ASPP_WIDTH, 1))
        self.bottleneck_conv = conv_bn(5 * ASPP_WIDTH, oup, 1)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, inp, H, W) -> (B, oup, H, W). Training needs B >= 2 (BN after the global pool)."""
        pooled = self.global_avg_pool(x)  # (B, 256, 1, 1)
        pooled = pooled.expand(-1, -1, x.shape[2], x.shape[3])  # nearest upsample of 1x1
        branches = (self.aspp1(x), self.aspp2(x), self.aspp3(x), self.aspp4(x), pooled)
        return self.dropout(self.bottleneck_conv(torch.cat(branches, dim=1)))  # cat: (B, 1280)


class IndexedUpsampling(nn.Module):
    """Decoder stage: index-guided upsampling to the skip's size, concat with it, then a conv.

    Args:
        inp: channels after concatenation (decoder input + skip).
        oup: output channels.
        kernel_size: of the conv (5 in the release).
        conv: ``std_conv`` or ``dep_sep_conv``.
    """

    def __init__(self, inp: int, oup: int, kernel_size: int = 5, conv: str = "std_conv") -> None:
        super().__init__()
        self.dconv = decoder_conv(inp, oup, kernel_size, conv)

    def forward(
        self, x: torch.Tensor, skip: torch.Tensor, index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x (B, Cx, h, w), skip (B, Cs, H, W), index (B, Cx or 1, H, W) -> (B, oup, H, W).

        Without an index the stage does not upsample: x is already at the skip's size.
        """
        if index is not None:
            x = index * F.interpolate(x, size=skip.shape[2:], mode="nearest")
        return self.dconv(torch.cat((x, skip), dim=1))


def prediction_head(inp: int, kernel_size: int = 5, conv: str = "std_conv") -> nn.Sequential:
    """``pred``: decoder conv ``inp -> 1`` (+ BN + ReLU6), then a k x k conv 1 -> 1, no bias.

    The output is the raw alpha: no sigmoid (clip to [0, 1] only at inference).
    """
    return nn.Sequential(
        decoder_conv(inp, 1, kernel_size, conv),
        nn.Conv2d(1, 1, kernel_size, 1, kernel_size // 2, bias=False),
    )
