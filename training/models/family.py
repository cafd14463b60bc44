"""The types of the model-family registry: ``ModelFamily`` (one entry) and ``ParamGroup``.

A family is one ``ModelFamily``: everything the trainer, checkpoints, inference, export and the
CLI need to know about a kind of network. Each family's subpackage (``training.models.indexnet``,
``training.models.vitmatte``) defines its entry as ``FAMILY``; ``training.models.registry``
lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from configs import ModelConfig
from training.models.weights import LoadReport

# The family of what names none: version-1 checkpoints (written before families existed, all
# of them IndexNet) and modules without a ``.cfg`` (wrappers, TorchScript files); also
# ``ModelConfig``'s default.
DEFAULT_FAMILY = "indexnet"


@dataclass(frozen=True)
class ParamGroup:
    """One optimizer parameter group of a network."""

    name: str  # the group's name in the optimizer (and in ``train.jsonl`` as ``lr_<name>``)
    params: tuple[nn.Parameter, ...]
    backbone: bool = False  # pretrained: trained at learning_rate / optim.backbone_lr_mult
    what: str = ""  # the modules it holds, for `indexnet model summary`
    lr_scale: float = 1.0  # a further multiplier of the group's lr (e.g. layer-wise decay)
    no_decay: tuple[nn.Parameter, ...] = ()  # those of ``params`` trained without weight decay


@dataclass(frozen=True)
class ModelFamily:
    """How to build, train, feed, export and import the weights of one kind of network."""

    name: str  # the key in FAMILIES, the value of model.family
    title: str  # how messages name the network, e.g. "IndexNet"
    build: Callable[[ModelConfig], nn.Module]  # a fresh network in training mode, cfg kept as .cfg
    param_groups: Callable[[nn.Module], Sequence[ParamGroup]]  # every parameter exactly once
    # keep (or stop keeping) norms in eval, as the network's own section of ``.cfg`` says
    freeze_norm: Callable[[nn.Module], nn.Module]
    stride: Callable[[ModelConfig], int]  # input sides must be multiples of this
    pad_multiple: int  # inference pads to it: a multiple of every stride, so one tile size fits
    in_channels: int  # of the input make_input makes
    make_input: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (3,H,W) RGB01, trimap
    describe: Callable[[nn.Module], str]  # the variant in one line
    # (prediction, the step's tensors (training.data.augment.compose_batch), the run's
    # ModelConfig, whose family section holds any loss settings) -> "loss" (the total, which is
    # minimised) and each term as "loss_<term>", for train.jsonl
    loss: Callable[[torch.Tensor, dict[str, torch.Tensor], ModelConfig], dict[str, torch.Tensor]]
    official_file: str = ""  # the family's released weight file, for messages
    # (contents of the official file, source, cfg) -> (model, report); None: no release
    import_official: Callable[[Any, str, ModelConfig], tuple[nn.Module, LoadReport]] | None = None
    # (model, contents of a backbone file, source) -> report; None: no pretrained backbone
    load_backbone: Callable[[nn.Module, Any, str], LoadReport] | None = None
    # a transformers-format folder (config.json + safetensors) -> the model; None: no such format
    import_folder: Callable[[Path], nn.Module] | None = None
    # a context in which the family's networks export (e.g. a library function made traceable)
    exportable: Callable[[], AbstractContextManager] = nullcontext
    # how inference pads the input planes bottom/right: "reflect" or "zeros" (after make_input)
    pad_mode: str = "reflect"
