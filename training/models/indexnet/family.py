"""The IndexNet family's registry entry: how the rest of the code builds, feeds and trains it."""

from __future__ import annotations

import torch

from configs import ModelConfig
from training.models.family import ModelFamily, ParamGroup
from training.models.indexnet.input import make_input
from training.models.indexnet.loss import matting_loss
from training.models.indexnet.network import IN_CHANNELS, IndexNet
from training.models.indexnet.weights import load_mobilenet_v2, official_model


def _loss(pred: torch.Tensor, batch: dict[str, torch.Tensor], cfg: ModelConfig) -> dict:
    """The weighted L_alpha + L_comp of ``model.indexnet.loss``."""
    loss = matting_loss(
        pred,
        batch["alpha"],
        batch["fg"],
        batch["bg"],
        batch["merged"],
        batch["unknown"],
        cfg.indexnet.loss,
    )
    return {"loss": loss.total, "loss_alpha": loss.alpha, "loss_comp": loss.comp}


def _freeze_norm(model: IndexNet) -> IndexNet:
    """The encoder's BatchNorm statistics fixed, or not, as ``model.indexnet.freeze_encoder_bn``
    of the network's config says."""
    return model.freeze_encoder_bn(model.cfg.indexnet.freeze_encoder_bn)


def param_groups(model: IndexNet) -> tuple[ParamGroup, ...]:
    """The pretrained encoder (trained at learning_rate / backbone_lr_mult) and the rest."""
    return (
        ParamGroup("encoder", tuple(model.encoder_parameters()), True, "layer0 .. layer7"),
        ParamGroup(
            "decoder", tuple(model.decoder_parameters()), False, "index blocks, ASPP, decoder, head"
        ),
    )


FAMILY = ModelFamily(
    name="indexnet",
    title="IndexNet",
    build=IndexNet,
    param_groups=param_groups,
    freeze_norm=_freeze_norm,
    stride=lambda cfg: cfg.indexnet.output_stride,
    pad_multiple=32,  # output stride 32 or 16
    in_channels=IN_CHANNELS,
    make_input=make_input,
    describe=IndexNet.describe,
    official_file="indexnet_matting.pth.tar",
    import_official=official_model,
    load_backbone=load_mobilenet_v2,
    loss=_loss,
)
