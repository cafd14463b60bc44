"""ViTMatte's optimiser policy: layer-wise learning-rate decay and the no-decay parameters.

Layer-wise decay 0.65 (docs/reference.md section 5): block i trains at 0.65^(12 - i) of the
learning rate, the patch and position embeddings at 0.65^13, the residual conv blocks (inside
the blocks) and the decoder at 1. ``no_weight_decay`` lists what the recipe's weight decay
spares. ``param_groups`` makes the family's ``ParamGroup``s from both.
"""

from __future__ import annotations

import re

from torch import nn

from training.models.family import ParamGroup
from training.models.vitmatte.network import DEPTH, VitMatte

LAYER_DECAY = 0.65

_BLOCK = re.compile(r"net\.backbone\.encoder\.layer\.(\d+)\.")


def layer_scale(name: str) -> tuple[str, float]:
    """The parameter group and learning-rate multiplier of a parameter named ``name``."""
    if name.startswith("net.backbone.embeddings."):
        return "embeddings", LAYER_DECAY ** (DEPTH + 1)
    match = _BLOCK.match(name)
    if match and ".residual." not in name:
        block = int(match[1])
        return f"block{block}", LAYER_DECAY ** (DEPTH - block)
    return "decoder", 1.0  # the decoder and the residual conv blocks


def no_weight_decay(model: VitMatte) -> list[nn.Parameter]:
    """The parameters the official recipe trains without weight decay: those of
    ``nn.LayerNorm`` and BatchNorm modules (detectron2's norm types: the ViT blocks' norms
    and the decoder's BN) and the absolute position embeddings. The channels-first LayerNorms
    of the residual conv blocks (transformers' ``VitDetLayerNorm``, detectron2's own
    ``LayerNorm`` in the official code) are not of those types and are decayed, as there; so
    are the relative position tables."""
    norms = (nn.LayerNorm, nn.modules.batchnorm._BatchNorm)
    spared = [p for m in model.modules() if isinstance(m, norms) for p in m.parameters(False)]
    return spared + [model.net.backbone.embeddings.position_embeddings]


def param_groups(model: VitMatte) -> tuple[ParamGroup, ...]:
    """Layer-wise decay: the embeddings, ViT blocks 0 .. 11, then the decoder with the residual
    conv blocks (``layer_scale``); all trained from the learning rate. Weight decay spares
    ``no_weight_decay``'s parameters (norms, position table)."""
    groups: dict[str, list[nn.Parameter]] = {}
    scales: dict[str, float] = {}
    for name, param in model.named_parameters():
        group, scale = layer_scale(name)
        groups.setdefault(group, []).append(param)
        scales[group] = scale
    spared = {id(p) for p in no_weight_decay(model)}
    order = ["embeddings", *(f"block{i}" for i in range(DEPTH)), "decoder"]
    what = {"embeddings": "patch and position embeddings", "decoder": "decoder, residual blocks"}
    return tuple(
        ParamGroup(
            name,
            tuple(groups[name]),
            what=what.get(name, f"ViT {name}"),
            lr_scale=scales[name],
            no_decay=tuple(p for p in groups[name] if id(p) in spared),
        )
        for name in order
        if name in groups
    )
