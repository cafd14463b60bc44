"""The model-family registry: ``FAMILIES``, keyed by ``model.family``.

Adding a family is one subpackage of ``training.models`` defining its ``FAMILY`` entry, and one
line here. The networks a family builds keep their ``ModelConfig`` as ``.cfg`` (as
transformers' models keep ``.config``): checkpoints record it, and ``family_of(model)`` reads
the family from it. Nothing outside the registry and the families' own subpackages names a
family.
"""

from __future__ import annotations

from torch import nn

from configs import ModelConfig
from training.models.family import DEFAULT_FAMILY, ModelFamily
from training.models.indexnet.family import FAMILY as INDEXNET
from training.models.vitmatte.family import FAMILY as VITMATTE

FAMILIES: dict[str, ModelFamily] = {
    INDEXNET.name: INDEXNET,
    VITMATTE.name: VITMATTE,
}


def get_family(name: str) -> ModelFamily:
    """The registry entry of ``name``.

    Raises:
        ValueError: not a known family; the message names it and the known ones.
    """
    family = FAMILIES.get(name)
    if family is None:
        raise ValueError(
            f"model.family {name!r} is not a model family; known: {', '.join(sorted(FAMILIES))}"
        )
    return family


def family_of(model: nn.Module) -> ModelFamily:
    """The family of a network built by one (from its ``.cfg``); else ``DEFAULT_FAMILY``'s."""
    cfg = getattr(model, "cfg", None)
    return get_family(cfg.family if isinstance(cfg, ModelConfig) else DEFAULT_FAMILY)
