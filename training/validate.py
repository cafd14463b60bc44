"""Validation during training: full-resolution predictions on the validation split, scored.

Reads the validation shards of the set being trained on (its ``index.json`` locates them),
feeds each stored ``merged`` image with its AIM-500 trimap to the model at full resolution
(``training.inference.predict_alpha``) and scores it with the benchmark's metrics
(``shards.metrics``, which need only numpy and OpenCV). Under DDP every rank scores its own
share of the samples (``i % world == rank``) and the sums are all-reduced, so no rank idles.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from shards.metrics import METRICS, all_metrics
from shards.reader import load_index, scored_samples, shard_urls
from training.inference import predict_alpha


def validate(
    model: torch.nn.Module,
    set_root: str,
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
    was_training = model.training
    model.eval()
    sums = torch.zeros(len(METRICS) + 1, dtype=torch.float64)  # the metrics, then the count
    urls = shard_urls(load_index(set_root), "validation")
    # every rank reads the split (a few shards) and decodes its share of the samples
    for _key, rgb, trimap, alpha in scored_samples(urls, limit, rank, world):
        scores = all_metrics(predict_alpha(model, rgb, trimap, device), alpha, trimap)
        sums += torch.tensor([*(scores[m] for m in METRICS), 1.0], dtype=torch.float64)
    model.train(was_training)
    if world > 1:  # on the model's device: NCCL reduces only CUDA tensors
        sums = sums.to(device)
        dist.all_reduce(sums)
        sums = sums.cpu()
    count = int(sums[-1])
    if not count:
        raise ValueError(f"{set_root}: no validation samples to score")
    return {m: float(sums[i]) / count for i, m in enumerate(METRICS)} | {"samples": count}
