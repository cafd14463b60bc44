"""IndexNet for image matting (Lu, Dai, Shen, ICCV 2019), as in its official release.

The network, top to bottom (docs/reference.md section 2; the released variant, output stride 32)::

    input (B, 4, H, W): ImageNet-normalised RGB + trimap / 255
    layer0  3x3 conv 4 -> 32            H      index0 pools -> H/2
    layer1  t1  32 -> 16  x1            H/2
    layer2  t6  16 -> 24  x2            H/2    index2 pools -> H/4
    layer3  t6  24 -> 32  x3            H/4    index3 pools -> H/8
    layer4  t6  32 -> 64  x4            H/8    index4 pools -> H/16
    layer5  t6  64 -> 96  x3            H/16
    layer6  t6  96 -> 160 x3            H/16   index6 pools -> H/32
    layer7  t6 160 -> 320 x1            H/32
    dconv_pp  ASPP 320 -> 160           H/32
    decoder_layer6  (160 + 160) -> 96   H/16   upsampled with index6
    decoder_layer5  ( 96 +  96) -> 64   H/16
    decoder_layer4  ( 64 +  64) -> 32   H/8    upsampled with index4
    decoder_layer3  ( 32 +  32) -> 24   H/4    upsampled with index3
    decoder_layer2  ( 24 +  24) -> 16   H/2    upsampled with index2
    decoder_layer1  ( 16 +  16) -> 32   H/2
    decoder_layer0  ( 32 +  32) -> 32   H      upsampled with index0
    pred  5x5 conv 32 -> 1 + BN + ReLU6, 5x5 conv 1 -> 1    (B, 1, H, W), raw alpha

Pooling is ``x = idx_en * x; x = 4 * avg_pool2d(x, 2)``; the skip kept for the decoder is
``idx_en * x`` at full resolution. ``state_dict()`` names and shapes are the official ones, so the
released ``indexnet_matting.pth.tar`` loads after dropping its ``module.`` prefix
(``training.models.registry.import_official``). Its registry entry, which the rest of the code uses
instead of this class, is ``training.models.registry.INDEXNET``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from configs import ModelConfig
from training.models.indexnet.decoder import ASPP, IndexedUpsampling, prediction_head
from training.models.indexnet.index_blocks import index_block
from training.models.indexnet.mobilenetv2 import (
    ENCODER_LAYERS,
    ENCODER_STAGES,
    STEM_CHANNELS,
    build_stage,
    conv_bn,
    stage_dilations,
)

IN_CHANNELS = 4  # RGB + trimap
CONTEXT_CHANNELS = 160  # dconv_pp output

# The decoder, from the bottom: name, output channels, skip it joins, index that upsamples it.
# Input channels are (previous output) + (skip width): the skip of a stage is the encoder
# output of the same resolution, taken after its index block (idx_en * x) where one exists.
DECODER_STAGES: tuple[tuple[str, int, str, str | None], ...] = (
    # name,            out, skip,     index
    ("decoder_layer6", 96, "layer6", "index6"),
    ("decoder_layer5", 64, "layer5", None),
    ("decoder_layer4", 32, "layer4", "index4"),
    ("decoder_layer3", 24, "layer3", "index3"),
    ("decoder_layer2", 16, "layer2", "index2"),
    ("decoder_layer1", 32, "layer1", None),
    ("decoder_layer0", 32, "layer0", "index0"),
)


def pooled_layers(output_stride: int) -> tuple[str, ...]:
    """Encoder layers followed by an index block: layer0, 2, 3, 4 (and 6 at stride 32)."""
    strided = [s.name for s in ENCODER_STAGES if s.downsample]
    if output_stride == 16:
        strided.remove("layer6")
    return ("layer0", *strided)


class IndexNet(nn.Module):
    """IndexNet matting: MobileNetV2 encoder with index pooling, ASPP, index-guided decoder.

    ``IndexNet()`` is the released model (depthwise M2O index blocks, nonlinear, with context,
    ASPP, output stride 32, 5x5 decoder): 5,953,515 parameters, the official ``state_dict``.

    Args:
        cfg: the model config, whose ``indexnet`` section is the variant; ``None`` is
            ``ModelConfig()``, the released one. Kept as ``.cfg``.
    """

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or ModelConfig()
        variant = self.cfg.indexnet
        self.pooled = pooled_layers(variant.output_stride)
        width = {"layer0": STEM_CHANNELS} | {s.name: s.oup for s in ENCODER_STAGES}

        # encoder: layer0 .. layer7 (registration order = the official state_dict order)
        self.layer0 = conv_bn(IN_CHANNELS, STEM_CHANNELS, 3)
        dilations = stage_dilations(variant.output_stride)
        for stage in ENCODER_STAGES:
            self.add_module(stage.name, build_stage(stage, dilations[stage.name]))

        # index blocks: index0, index2, index3, index4 (, index6)
        for layer in self.pooled:
            self.add_module(
                layer.replace("layer", "index"),
                index_block(variant.index_block, width[layer], variant.nonlinear, variant.context),
            )

        # context: dconv_pp
        last = ENCODER_STAGES[-1].oup
        self.dconv_pp = (
            ASPP(last, CONTEXT_CHANNELS, variant.output_stride)
            if variant.aspp
            else conv_bn(last, CONTEXT_CHANNELS, 1)
        )

        # decoder: decoder_layer6 .. decoder_layer0, then pred
        channels = CONTEXT_CHANNELS
        for name, out, skip, _ in DECODER_STAGES:
            stage = IndexedUpsampling(
                channels + width[skip], out, variant.decoder_kernel_size, variant.decoder_conv
            )
            self.add_module(name, stage)
            channels = out
        self.pred = prediction_head(channels, variant.decoder_kernel_size, variant.decoder_conv)

        self._encoder_bn_frozen = False
        self.backbone_report = None  # set by families.build_model(backbone=...): what was loaded
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official initialisation: conv ~ N(0, 2 / (k * k * out)), BN weight 1, bias 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict raw alpha.

        Args:
            x: (B, 4, H, W) float: normalised RGB and trimap / 255; H and W multiples of the
                output stride (32 for the released model).

        Returns:
            (B, 1, H, W) alpha, unclamped (no sigmoid).

        Raises:
            ValueError: not 4 channels, or a side not a multiple of the output stride.
        """
        self._check_input(x)
        skips: dict[str, torch.Tensor] = {}
        indices: dict[str, torch.Tensor] = {}
        for name in ENCODER_LAYERS:
            x = getattr(self, name)(x)
            if name in self.pooled:
                idx_en, idx_de = getattr(self, name.replace("layer", "index"))(x)
                x = idx_en * x  # (B, C, H, W), kept as the skip
                indices[name] = idx_de
                skips[name] = x
                x = 4 * F.avg_pool2d(x, 2, 2)  # (B, C, H/2, W/2): weighted sum of each cell
            else:
                skips[name] = x
        x = self.dconv_pp(x)
        for name, _, skip, index in DECODER_STAGES:
            idx = indices.get(skip) if index is not None else None
            x = getattr(self, name)(x, skips[skip], idx)
        return self.pred(x)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != IN_CHANNELS:
            raise ValueError(
                f"IndexNet expects (B, {IN_CHANNELS}, H, W) input (RGB + trimap), "
                f"got shape {tuple(x.shape)}"
            )
        stride = self.cfg.indexnet.output_stride
        h, w = x.shape[2], x.shape[3]
        if h % stride or w % stride:
            raise ValueError(
                f"IndexNet input sides must be multiples of {stride}, got {h}x{w}; pad (e.g. "
                f"reflect) to {-(-h // stride) * stride}x{-(-w // stride) * stride} and crop back"
            )

    # -- training helpers ----------------------------------------------------------------------

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of layer0 .. layer7 (the ImageNet backbone; lr / backbone_lr_mult)."""
        for name in ENCODER_LAYERS:
            yield from getattr(self, name).parameters()

    def decoder_parameters(self) -> Iterator[nn.Parameter]:
        """Everything else: index blocks, dconv_pp, decoder and pred (the full learning rate)."""
        for name, module in self.named_children():
            if name not in ENCODER_LAYERS:
                yield from module.parameters()

    def freeze_encoder_bn(self, frozen: bool = True) -> IndexNet:
        """Keep the encoder's BatchNorm statistics fixed (eval mode) even under ``train()``.

        The running mean and variance of layer0 .. layer7 stop updating and are used in
        training; BN affine weights still learn. Survives later ``model.train()`` calls.
        """
        self._encoder_bn_frozen = frozen
        return self.train(self.training)

    def train(self, mode: bool = True) -> IndexNet:
        """``nn.Module.train``, keeping the encoder's BatchNorm in eval mode when frozen."""
        super().train(mode)
        if mode and self._encoder_bn_frozen:
            for name in ENCODER_LAYERS:
                for m in getattr(self, name).modules():
                    if isinstance(m, _BatchNorm):  # also SyncBatchNorm after conversion
                        m.eval()
        return self

    def describe(self) -> str:
        """One line naming the variant, e.g. ``m2o nonlinear context aspp os32 k5 std_conv``."""
        cfg = self.cfg.indexnet
        return " ".join(
            [
                cfg.index_block,
                "nonlinear" if cfg.nonlinear else "linear",
                "context" if cfg.context else "no-context",
                "aspp" if cfg.aspp else "no-aspp",
                f"os{cfg.output_stride}",
                f"k{cfg.decoder_kernel_size}",
                cfg.decoder_conv,
            ]
        )
