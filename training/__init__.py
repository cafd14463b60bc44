"""IndexNet model, loss, augmentation and the DDP trainer (reads shards, never ``pipeline``).

Public API of the model and its weights:

- ``training.families``: the model-family registry, ``FAMILIES`` of ``ModelFamily`` entries
  keyed by ``model.family`` (``get_family``); ``build_model(model_cfg, backbone=None)`` builds
  the family's network and optionally loads a pretrained backbone (IndexNet: ImageNet
  MobileNetV2, torchvision or official layouts, ``load_backbone``); ``import_official`` loads a
  family's released weights (the released ``indexnet_matting.pth.tar``). Each reports a
  ``LoadReport`` or raises ``ValueError`` naming the file.
- ``IndexNet`` (``training.model``): the network; ``IndexNet()`` is the released variant
  (5,953,515 parameters, the official ``state_dict`` names), other variants from a
  ``ModelConfig`` (``configs``).
- ``matting_loss`` (``training.loss``): ``MattingLoss(total, alpha, comp)`` over the unknown
  region, as the official release computes it.
- ``training.checkpoint``: ``save_checkpoint``, ``load_checkpoint``, ``load_model`` (our format,
  ``weights_only=True``, any registered family), ``load_for_inference``.
- ``training.curves``: ``read_run`` (a run's ``train.jsonl`` -> ``RunLog``) and ``draw`` (runs
  -> one PNG of their curves), what ``indexnet report`` and the trainer's ``curves.png`` use.
"""

import importlib
from typing import Any

# Names load on first use (PEP 562), so that importing a submodule such as ``training.cli``
# does not pull in torch: the root ``indexnet`` command then starts fast.
_EXPORTS = {
    "IndexNet": "training.model",
    "FAMILIES": "training.families",
    "ModelFamily": "training.families",
    "ParamGroup": "training.families",
    "build_model": "training.families",
    "count_parameters": "training.families",
    "get_family": "training.families",
    "import_official": "training.families",
    "load_backbone": "training.families",
    "MattingLoss": "training.loss",
    "matting_loss": "training.loss",
    "LoadReport": "training.weights",
    "load_checkpoint": "training.checkpoint",
    "load_for_inference": "training.checkpoint",
    "load_model": "training.checkpoint",
    "save_checkpoint": "training.checkpoint",
    "ModelConfig": "configs",
    "RunLog": "training.curves",
    "read_run": "training.curves",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'training' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
