"""The toy family's registry entry: all a family is, for ``training.models.registry.FAMILIES``."""

from __future__ import annotations

from tests.training.models.toy.network import ToyNet, make_input
from training.models.family import ModelFamily, ParamGroup

FAMILY = ModelFamily(
    name="toy",
    title="Toy",
    build=ToyNet,
    param_groups=lambda model: (ParamGroup("all", tuple(model.parameters()), what="2 convs"),),
    freeze_norm=lambda model: model,  # no normalisation layers
    stride=lambda cfg: 2,
    pad_multiple=4,
    in_channels=2,
    make_input=make_input,
    describe=lambda model: "toy 2-conv",
    loss=lambda pred, batch, cfg: {"loss": (pred - batch["alpha"]).abs().mean()},
)
