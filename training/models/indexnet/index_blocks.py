"""Index blocks: learned indices that guide IndexNet's downsampling and upsampling.

An index block looks at a (B, C, H, W) feature map and predicts, for every 2x2 cell of the
output grid, how much each of the four positions matters. The encoder pools with the
softmax-normalised indices (``idx_en``: the four weights of a cell sum to 1, so
``4 * avg_pool(idx_en * x)`` is a learned weighted pooling) and the decoder upsamples with the
sigmoid indices (``idx_de``: ``idx_de * nearest_upsample(x)``). Both come out at full resolution
(B, C or 1, H, W) after ``pixel_shuffle``.

Three kinds (docs/reference.md section 2; names and layers as in the official release):

- depthwise many-to-one (M2O, released): four branches, branch k predicts position k of every
  cell for each channel from all channels (``Conv(C -> C)``);
- depthwise one-to-one (O2O): the same with ``groups=C``, each channel from itself only;
- holistic: one branch predicts 4 maps shared by every channel.

``nonlinear`` makes a branch conv -> BN -> ReLU6 -> 1x1 conv instead of one conv; ``context``
makes the strided conv 4x4 with padding 1 (overlapping windows) instead of 2x2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

POSITIONS = 4  # a 2x2 cell: positions (0,0), (0,1), (1,0), (1,1), the pixel_shuffle order


def _window(context: bool) -> tuple[int, int]:
    """(kernel, padding) of the stride-2 index conv: 4x4 with context, else 2x2."""
    return (4, 1) if context else (2, 0)


def _index_branch(
    inp: int, hidden: int, oup: int, nonlinear: bool, context: bool, groups: int
) -> nn.Module:
    """Strided conv (H, W) -> (H/2, W/2), optionally followed by BN, ReLU6 and a 1x1 conv."""
    kernel, padding = _window(context)
    strided = nn.Conv2d(
        inp, hidden if nonlinear else oup, kernel, 2, padding, groups=groups, bias=False
    )
    if not nonlinear:
        return strided
    return nn.Sequential(
        strided,
        nn.BatchNorm2d(hidden),
        nn.ReLU6(inplace=True),
        nn.Conv2d(hidden, oup, 1, groups=groups, bias=False),
    )


class DepthwiseIndexBlock(nn.Module):
    """Depthwise index block: four branches ``indexnet1..4``, one per cell position.

    Args:
        channels: C, the width of the feature map it indexes.
        one_to_one: O2O (``groups=C``: channel c's indices from channel c alone) instead of M2O.
        nonlinear: conv-BN-ReLU6-conv1x1 branches instead of one linear conv.
        context: 4x4 windows (padding 1) instead of 2x2.
    """

    def __init__(
        self, channels: int, one_to_one: bool = False, nonlinear: bool = True, context: bool = True
    ) -> None:
        super().__init__()
        groups = channels if one_to_one else 1

        def branch() -> nn.Sequential:
            # official names: indexnetK.0 strided conv [, .1 BN, .3 1x1 conv]; the linear
            # variant is still a Sequential, so its conv is indexnetK.0 as well
            module = _index_branch(channels, channels, channels, nonlinear, context, groups)
            return module if isinstance(module, nn.Sequential) else nn.Sequential(module)

        self.indexnet1 = branch()
        self.indexnet2 = branch()
        self.indexnet3 = branch()
        self.indexnet4 = branch()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) -> encoder and decoder indices, each (B, C, H, W); H, W even."""
        b, c, h, w = x.shape
        branches = (self.indexnet1, self.indexnet2, self.indexnet3, self.indexnet4)
        logits = torch.stack([branch(x) for branch in branches], dim=2)  # (B, C, 4, H/2, W/2)
        y = torch.sigmoid(logits)
        z = F.softmax(y, dim=2)  # the four positions of a cell sum to 1
        # (B, C, 4, H/2, W/2) -> (B, 4C, H/2, W/2): channel 4c + k is position k of channel c,
        # which pixel_shuffle puts at offset (k // 2, k % 2) of the cell -> (B, C, H, W)
        idx_en = F.pixel_shuffle(z.reshape(b, c * POSITIONS, h // 2, w // 2), 2)
        idx_de = F.pixel_shuffle(y.reshape(b, c * POSITIONS, h // 2, w // 2), 2)
        return idx_en, idx_de


class HolisticIndexBlock(nn.Module):
    """Holistic index block: ``indexnet`` predicts one 2x2 index map shared by all channels.

    Nonlinear: ``Conv(C -> 2C, stride 2) -> BN -> ReLU6 -> Conv1x1(2C -> 4)``; linear: a bare
    ``Conv(C -> 4, stride 2)`` (official name ``indexnet.weight``, no Sequential).

    Args:
        channels: C, the width of the feature map it indexes.
        nonlinear: the two-layer branch instead of one linear conv.
        context: 4x4 windows (padding 1) instead of 2x2.
    """

    def __init__(self, channels: int, nonlinear: bool = True, context: bool = True) -> None:
        super().__init__()
        self.indexnet = _index_branch(
            channels, 2 * channels, POSITIONS, nonlinear, context, groups=1
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) -> encoder and decoder indices, each (B, 1, H, W), broadcast over C."""
        y = torch.sigmoid(self.indexnet(x))  # (B, 4, H/2, W/2)
        z = F.softmax(y, dim=1)
        return F.pixel_shuffle(z, 2), F.pixel_shuffle(y, 2)  # (B, 1, H, W) each


def index_block(
    kind: str, channels: int, nonlinear: bool = True, context: bool = True
) -> DepthwiseIndexBlock | HolisticIndexBlock:
    """The index block of ``ModelConfig.index_block`` (``m2o``, ``o2o`` or ``holistic``)."""
    if kind == "holistic":
        return HolisticIndexBlock(channels, nonlinear, context)
    if kind in ("m2o", "o2o"):
        return DepthwiseIndexBlock(channels, kind == "o2o", nonlinear, context)
    raise ValueError(f"unknown index block {kind!r}; allowed: m2o, o2o, holistic")
