"""IndexNet model, loss, augmentation and the DDP trainer (reads shards, never ``pipeline``).

Public API of the model and its weights:

- ``IndexNet`` (``training.model``): the network; ``IndexNet()`` is the released variant
  (5,953,515 parameters, the official ``state_dict`` names), other variants from a
  ``ModelConfig`` (``configs``); ``build_model(model_cfg, backbone=None)`` builds one and
  optionally loads ImageNet MobileNetV2 weights into its encoder.
- ``matting_loss`` (``training.loss``): ``MattingLoss(total, alpha, comp)`` over the unknown
  region, as the official release computes it.
- ``training.checkpoint``: ``save_checkpoint``, ``load_checkpoint``, ``load_model`` (our format,
  ``weights_only=True``), ``import_official`` (the released ``indexnet_matting.pth.tar``),
  ``load_backbone`` (torchvision or official MobileNetV2 layouts), each reporting a ``LoadReport``
  or raising ``ValueError`` naming the file.
"""

import importlib
from typing import Any

# Names load on first use (PEP 562), so that importing a submodule such as ``training.cli``
# does not pull in torch: the root ``indexnet`` command then starts fast.
_EXPORTS = {
    "IndexNet": "training.model",
    "build_model": "training.model",
    "count_parameters": "training.model",
    "MattingLoss": "training.loss",
    "matting_loss": "training.loss",
    "LoadReport": "training.checkpoint",
    "import_official": "training.checkpoint",
    "load_backbone": "training.checkpoint",
    "load_checkpoint": "training.checkpoint",
    "load_model": "training.checkpoint",
    "save_checkpoint": "training.checkpoint",
    "ModelConfig": "configs",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'training' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
