"""The optimiser and the learning-rate schedule of a run, from ``optim`` and the family's groups.

``build_optimizer`` makes Adam or AdamW over the family's parameter groups (``ParamGroup``:
a pretrained backbone at ``learning_rate / backbone_lr_mult``, a family's own per-group scale
such as ViTMatte's layer-wise decay, no weight decay where the family says so). ``lr_factor``
is the schedule, a pure function of the step: a linear warmup, then steps down at epoch
milestones; there is no scheduler state to save. ``learning_rates`` is what ``train.jsonl`` logs.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import torch

from configs import OptimConfig
from training.models.build import parameter_groups
from training.models.family import ParamGroup

NO_DECAY = ".no_decay"  # the suffix of the optimizer group of a group's ``no_decay`` parameters


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Adam or AdamW (``optim.optimizer``) over the family's parameter groups: a backbone at
    lr / backbone_lr_mult, others at lr, each times its ``lr_scale``; a group's ``no_decay``
    parameters form a group of their own, ``<name>.no_decay``, without weight decay.

    For IndexNet: ``encoder`` (layer0 .. layer7) then ``decoder``, as the reference recipe has it.
    The learning rates set here are the base ones that ``lr_factor`` scales at every step.
    """
    groups = []
    for group in parameter_groups(model):
        # lr / mult, not lr * (1 / mult): exactly the float the recipe has always used
        lr = cfg.learning_rate / cfg.backbone_lr_mult if group.backbone else cfg.learning_rate
        spared = {id(p) for p in group.no_decay}
        for name, params, decay in (
            (group.name, [p for p in group.params if id(p) not in spared], cfg.weight_decay),
            (group.name + NO_DECAY, [p for p in group.params if id(p) in spared], 0.0),
        ):
            if params:
                rate = lr * group.lr_scale
                groups.append({"name": name, "lr": rate, "params": params, "weight_decay": decay})
    kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.optimizer]
    return kind(
        groups, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps, weight_decay=cfg.weight_decay
    )


def lr_factor(cfg: OptimConfig, step: int, steps_per_epoch: int) -> float:
    """The multiplier of every group's base learning rate at optimiser step ``step`` (0-based).

    From milestone ``k`` (an epoch) on it is ``lr_factors[k]`` (or ``lr_decay ** (k + 1)`` when
    ``lr_factors`` is empty), and during the first ``warmup_iters`` steps it is further scaled by
    ``warmup_factor * (1 - a) + a``, ``a = step / warmup_iters`` (detectron2's linear warmup, as
    the official ViTMatte recipe has it). The epoch of a step is ``step // steps_per_epoch``.
    """
    passed = bisect.bisect_right(cfg.milestones, step // steps_per_epoch)
    factor = (
        (cfg.lr_factors[passed - 1] if cfg.lr_factors else cfg.lr_decay**passed) if passed else 1.0
    )
    if step < cfg.warmup_iters:
        a = step / cfg.warmup_iters
        factor *= cfg.warmup_factor * (1 - a) + a
    return factor


def learning_rates(
    optimizer: torch.optim.Optimizer, groups: Sequence[ParamGroup]
) -> dict[str, float]:
    """What ``train.jsonl`` logs: ``lr``, the full rate, and ``lr_<name>`` per backbone group.

    For IndexNet: ``lr`` (the decoder's) and ``lr_encoder``.
    """
    rates = {}
    for group in optimizer.param_groups:  # a group's own rate, else its no_decay part's
        rates.setdefault(group["name"].removesuffix(NO_DECAY), group["lr"])
    full = next((g for g in groups if not g.backbone and g.lr_scale == 1), groups[0])
    return {"lr": rates[full.name]} | {f"lr_{g.name}": rates[g.name] for g in groups if g.backbone}
