"""Validation during training: full-resolution predictions on the validation split, scored.

Reads the validation shards of the set being trained on (its ``index.json`` locates them),
feeds each stored ``merged`` image with its AIM-500 trimap to the model at full resolution
(``training.inference.predict_alpha``) and scores it with the benchmark's metrics
(``shards.metrics``, which need only numpy and OpenCV). Under DDP every rank scores its own
share of the samples (``i % world == rank``) and the sums are all-reduced, so no rank idles.

``score_validation`` can also score the trivial prediction (``shards.mattes.trivial_alpha``)
on the same samples, the scale a small or young model is read against, and keep the first few
samples with their predictions (for TensorBoard's images), all in the one pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from shards.mattes import trivial_alpha
from shards.metrics import METRICS, all_metrics
from shards.reader import ShardList, load_index, scored_samples, split_shards
from training.inference import predict_alpha


@dataclass
class Validation:
    """What one pass over the validation split gave (the means are the same on every rank).

    Attributes:
        metrics: ``{"sad", "mse", "grad", "conn"}`` means over images, and ``samples`` scored.
        baseline: ``trivial_alpha``'s means in the same form, when asked for.
        kept: this rank's first samples as ``(rgb, trimap, pred, alpha)``: (H, W, 3) uint8 RGB,
            (H, W) uint8 0/128/255, (H, W) uint8 prediction, (H, W) uint8 truth.
    """

    metrics: dict[str, float]
    baseline: dict[str, float] | None = None
    kept: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)


def score_validation(
    model: torch.nn.Module,
    set_root: str | ShardList,
    device: torch.device,
    limit: int = 0,
    rank: int = 0,
    world: int = 1,
    baseline: bool = False,
    keep: int = 0,
) -> Validation:
    """Score the validation split (or its first ``limit`` samples) in one pass.

    Under DDP (``world > 1``) every rank must call it with the same ``baseline``; each scores
    its share and all get the same means.

    Args:
        set_root: the shard set's folder or URL, or its validation ``ShardList`` (which
            carries the store's options and cache).
        baseline: also score ``trivial_alpha`` on every sample.
        keep: keep this rank's first ``keep`` samples and predictions (``Validation.kept``).

    Raises:
        ValueError: the split has no samples.
    """
    was_training = model.training
    model.eval()
    width = len(METRICS) * (2 if baseline else 1) + 1  # the metrics, the baseline's, the count
    sums = torch.zeros(width, dtype=torch.float64)
    kept = []
    shards = set_root
    if not isinstance(shards, ShardList):
        shards = split_shards(load_index(set_root), "validation")
    # every rank reads the split (a few shards) and decodes its share of the samples
    for _key, rgb, trimap, alpha in scored_samples(shards, limit, rank, world):
        pred = predict_alpha(model, rgb, trimap, device)
        scores = all_metrics(pred, alpha, trimap)
        row = [scores[m] for m in METRICS]
        if baseline:
            trivial = all_metrics(trivial_alpha(trimap), alpha, trimap)
            row += [trivial[m] for m in METRICS]
        sums += torch.tensor([*row, 1.0], dtype=torch.float64)
        if len(kept) < keep:
            kept.append((rgb, trimap, pred, alpha))
    model.train(was_training)
    if world > 1:  # on the model's device: NCCL reduces only CUDA tensors
        sums = sums.to(device)
        dist.all_reduce(sums)
        sums = sums.cpu()
    count = int(sums[-1])
    if not count:
        raise ValueError(f"{shards.index.root}: no validation samples to score")

    def means(offset: int) -> dict[str, float]:
        return {m: float(sums[offset + i]) / count for i, m in enumerate(METRICS)} | {
            "samples": count
        }

    return Validation(means(0), means(len(METRICS)) if baseline else None, kept)


def validate(
    model: torch.nn.Module,
    set_root: str | ShardList,
    device: torch.device,
    limit: int = 0,
    rank: int = 0,
    world: int = 1,
) -> dict[str, float]:
    """Mean SAD, MSE, Grad and Conn over the validation split (or its first ``limit`` samples).

    Under DDP (``world > 1``) every rank must call it; each scores its share and all get the
    same means.

    Returns:
        ``{"sad", "mse", "grad", "conn"}`` means over images, and ``samples`` scored.

    Raises:
        ValueError: the split has no samples.
    """
    return score_validation(model, set_root, device, limit, rank, world).metrics
