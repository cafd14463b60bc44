"""The ViTMatte family's registry entry: how the rest of the code builds, feeds and trains it."""

from __future__ import annotations

import torch

from configs import ModelConfig
from training.models.family import ModelFamily
from training.models.vitmatte.export import exportable
from training.models.vitmatte.input import make_input
from training.models.vitmatte.loss import vitmatte_loss
from training.models.vitmatte.network import PAD_MULTIPLE, VitMatte
from training.models.vitmatte.optim import param_groups
from training.models.vitmatte.weights import import_hf, load_vit_backbone


def _loss(pred: torch.Tensor, batch: dict[str, torch.Tensor], cfg: ModelConfig) -> dict:
    """The official recipe's loss (no settings)."""
    loss = vitmatte_loss(pred, batch["alpha"], batch["unknown"])
    return {"loss": loss.total} | {
        f"loss_{k}": v for k, v in loss._asdict().items() if k != "total"
    }


FAMILY = ModelFamily(
    name="vitmatte",
    title="ViTMatte",
    build=VitMatte,
    param_groups=param_groups,
    freeze_norm=lambda model: model,  # LayerNorms and decoder BN: the recipe freezes none
    stride=lambda cfg: PAD_MULTIPLE,
    pad_multiple=PAD_MULTIPLE,
    in_channels=4,
    make_input=make_input,
    describe=VitMatte.describe,
    loss=_loss,
    import_folder=import_hf,
    load_backbone=load_vit_backbone,
    exportable=exportable,
    pad_mode="zeros",  # the official code zero-pads the normalised input, then crops back
)
