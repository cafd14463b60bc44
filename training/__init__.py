"""Model families, the training data path and the DDP trainer (reads shards, never ``pipeline``).

Subpackages: ``models`` (the family registry and one subpackage per family: IndexNet,
ViTMatte), ``data`` (order, stream, augmentation, batching, the throughput probe) and ``run``
(trainer, optimiser and schedule, validation, curves, TensorBoard). Beside them:
``checkpoint`` (our checkpoint format), ``inference`` (full-resolution prediction, used by
validation and ``evaluation``), ``distributed`` (a rank's process group and device) and
``cli``.

Public API (loaded on first use):

- ``FAMILIES``, ``ModelFamily``, ``ParamGroup``, ``get_family``: the model-family registry;
  ``build_model(model_cfg, backbone=None)``, ``import_official``, ``load_backbone`` build a
  family's network and read foreign weights, reporting a ``LoadReport`` or raising
  ``ValueError`` naming the file.
- ``IndexNet``: the network; ``IndexNet()`` is the released variant (5,953,515 parameters,
  the official ``state_dict`` names). ``matting_loss``: its loss, ``MattingLoss(total, alpha,
  comp)`` over the unknown region, as the official release computes it.
- ``save_checkpoint``, ``load_checkpoint``, ``load_model``, ``load_for_inference``: our
  checkpoints (``weights_only=True``, any registered family).
- ``read_run`` (a run's ``train.jsonl`` -> ``RunLog``): what ``indexnet report`` draws.
"""

import importlib
from typing import Any

# Names load on first use (PEP 562), so that importing a submodule such as ``training.cli``
# does not pull in torch: the root ``indexnet`` command then starts fast.
_EXPORTS = {
    "IndexNet": "training.models.indexnet.network",
    "FAMILIES": "training.models.registry",
    "ModelFamily": "training.models.family",
    "ParamGroup": "training.models.family",
    "build_model": "training.models.build",
    "count_parameters": "training.models.build",
    "get_family": "training.models.registry",
    "import_official": "training.models.build",
    "load_backbone": "training.models.build",
    "MattingLoss": "training.models.indexnet.loss",
    "matting_loss": "training.models.indexnet.loss",
    "LoadReport": "training.models.weights",
    "load_checkpoint": "training.checkpoint",
    "load_for_inference": "training.checkpoint",
    "load_model": "training.checkpoint",
    "save_checkpoint": "training.checkpoint",
    "ModelConfig": "configs",
    "RunLog": "training.run.curves",
    "read_run": "training.run.curves",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'training' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
