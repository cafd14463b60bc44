"""IndexNet's foreign weights: the official release's checkpoint and ImageNet MobileNetV2 files.

Both importers take what ``training.models.weights.read_weights`` read (the registry's front doors,
``training.models.registry.import_official`` and ``load_backbone``, read the file), so that one safe
reader guards every file:

- The official release (``indexnet_matting.pth.tar``): ``{"state_dict": {"module.<name>": ...}}``,
  checked strictly against our names and shapes (``official_model``).
- ImageNet MobileNetV2 for the encoder (``load_mobilenet_v2``): torchvision's ``mobilenet_v2``
  layout, the official release's (the CSAIL/tonylins ``features.N.conv.M`` layout it loads), or
  our own encoder names.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from configs import ModelConfig
from training.models.indexnet.mobilenetv2 import ENCODER_LAYERS, ENCODER_STAGES
from training.models.indexnet.network import IndexNet
from training.models.weights import LoadReport, load_strict, mismatch, state_dict_of

# -- the official release ---------------------------------------------------------------------


def official_model(raw: Any, source: str, model_cfg: ModelConfig) -> tuple[IndexNet, LoadReport]:
    """An ``IndexNet`` holding the official checkpoint's weights (``indexnet_matting.pth.tar``).

    The file is a dict whose ``state_dict`` has keys prefixed ``module.`` (nn.DataParallel);
    ``num_batches_tracked`` may be present or not. Names and shapes must match exactly.

    Args:
        raw: the file's contents (``read_weights(path, allow_numpy=True)``).
        source: the file, for messages.
        model_cfg: the variant it was trained as.

    Returns:
        The model with the weights loaded (in training mode), and what was loaded.

    Raises:
        ValueError: no state dict, or tensors missing, unexpected or of the wrong shape (all of
            them listed).
    """
    state = state_dict_of(raw, source)
    model = IndexNet(model_cfg)
    loaded = load_strict(model, state, source)
    notes = ()
    if not any(k.endswith("num_batches_tracked") for k in state):
        notes = ("BatchNorm num_batches_tracked absent in the file; left at 0",)
    return model, LoadReport(source, "official IndexNet state_dict", loaded, (), notes)


# -- ImageNet backbones -----------------------------------------------------------------------

_TORCHVISION_NESTED = re.compile(r"^features\.\d+\.conv\.\d+\.\d+\.")
# torchvision's block layout -> the official one: expansion blocks wrap conv+BN in
# Conv2dNormActivation (conv.0.0, conv.0.1, conv.1.0, conv.1.1), then conv.2 / conv.3
_TV_EXPAND = {"0.0": "0", "0.1": "1", "1.0": "3", "1.1": "4", "2": "6", "3": "7"}
_TV_NO_EXPAND = {"0.0": "0", "0.1": "1", "1": "3", "2": "4"}  # t = 1: dw, BN, pw, BN
_BLOCKS = [(s.name, i, s.expand_ratio) for s in ENCODER_STAGES for i in range(s.blocks)]
_UNUSED = re.compile(rf"^(features\.{len(_BLOCKS) + 1}\.|classifier\.)")  # 320->1280, classifier


def _backbone_name(key: str, torchvision: bool) -> str | None:
    """Our encoder name for a MobileNetV2 ``features.*`` key, or None when it has none."""
    m = re.match(r"^features\.(\d+)\.(.+)$", key)
    if not m:
        return None
    index, rest = int(m.group(1)), m.group(2)
    if index == 0:
        return f"layer0.{rest}" if re.match(r"^[01]\.\w+$", rest) else None
    if index > len(_BLOCKS):
        return None
    layer, block, expand = _BLOCKS[index - 1]
    if not torchvision:
        return f"{layer}.{block}.{rest}"
    m = re.match(r"^conv\.(\d+(?:\.\d+)?)\.(\w+)$", rest)
    table = _TV_EXPAND if expand != 1 else _TV_NO_EXPAND
    if not m or m.group(1) not in table:
        return None
    return f"{layer}.{block}.conv.{table[m.group(1)]}.{m.group(2)}"


_OURS = "IndexNet encoder"


def _layout(state: dict[str, torch.Tensor]) -> tuple[str, bool]:
    """The layout of a backbone state dict, and whether it is torchvision's."""
    if any(k.split(".", 1)[0] in ENCODER_LAYERS for k in state):
        return _OURS, False
    if any(_TORCHVISION_NESTED.match(k) for k in state):
        return "torchvision mobilenet_v2", True
    return "official backbone (CSAIL MobileNetV2 features.N.conv.M)", False


def load_mobilenet_v2(model: IndexNet, raw: Any, source: str) -> LoadReport:
    """Initialise the encoder (layer0 .. layer7) from ImageNet MobileNetV2 weights.

    Accepted layouts (a bare state dict, or inside ``state_dict``; ``module.`` prefixes dropped):
    torchvision's ``mobilenet_v2`` (``features.0`` .. ``features.17``, nested
    ``conv.0.0``), the official release's backbone (the CSAIL MobileNetV2 ``features.N.conv.M``
    that its ``CORRESP_NAME`` maps), or our own encoder names (``layer0`` .. ``layer7``). The
    last conv (``features.18``) and the classifier are reported as ignored. A 3-channel first
    conv fills the RGB inputs; the 4th (trimap) input channel starts at zero.

    Args:
        model: the network; only its encoder is written.
        raw: the file's contents (``read_weights(path, allow_numpy=True)``).
        source: the file, for messages.

    Returns:
        What was loaded, ignored and adapted.

    Raises:
        ValueError: no state dict, or a tensor it cannot place, of the wrong shape, or an
            encoder tensor it lacks (all listed); the model is then left unchanged.
    """
    state = state_dict_of(raw, source)
    own = model.state_dict()
    encoder = {k for k in own if k.split(".", 1)[0] in ENCODER_LAYERS}
    layout, torchvision = _layout(state)
    placed: dict[str, torch.Tensor] = {}
    ignored, unplaced, misshaped, notes = [], [], [], []
    for key, tensor in state.items():
        if layout == _OURS:
            name = key if key in encoder else None
        elif _UNUSED.match(key):
            ignored.append(key)
            continue
        else:
            name = _backbone_name(key, torchvision)
        if name is None or name not in encoder:
            unplaced.append(key)
            continue
        target = own[name]
        if name == "layer0.0.weight" and tensor.shape == (*target.shape[:1], 3, *target.shape[2:]):
            tensor = torch.cat([tensor, torch.zeros_like(tensor[:, :1])], dim=1)  # + trimap input
            notes.append(f"{name}: RGB weights from {key}; the 4th (trimap) input starts at zero")
        if tensor.shape != target.shape:
            misshaped.append(f"{key} {list(tensor.shape)} (model {name}: {list(target.shape)})")
        placed[name] = tensor
    missing = [k for k in sorted(encoder - placed.keys()) if not k.endswith("num_batches_tracked")]
    if unplaced or misshaped or missing:
        hint = (
            "a backbone file holds only MobileNetV2 weights; import a full IndexNet checkpoint "
            "with `indexnet model import-official` instead"
            if layout == _OURS
            else f"read as the {layout} layout"
        )
        raise mismatch(source, missing, unplaced, misshaped, hint)
    with torch.no_grad():
        for name, tensor in placed.items():
            own[name].copy_(tensor)
    if not any(k.endswith("num_batches_tracked") for k in placed):
        notes.append("BatchNorm num_batches_tracked absent in the file; left as they were")
    return LoadReport(source, layout, len(placed), tuple(ignored), tuple(notes))
