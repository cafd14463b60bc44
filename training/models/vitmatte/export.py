"""Exporting ViTMatte: a traceable relative-position lookup swapped into transformers' ViTDet.

transformers scales symbolic sizes by a float in ``get_rel_pos``, which torch.onnx cannot
convert; ``exportable`` swaps in ``_square_rel_pos``, which computes the same indices in integer
ops, while an export runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def _square_rel_pos(q_size, k_size, rel_pos: torch.Tensor, original):
    """transformers' ``get_rel_pos`` for self-attention (``q_size == k_size``, always so in
    ViTMatte) in integer tensor ops: ``arange(q)[:, None] - arange(k)[None, :] + k - 1``, the
    same indices as its float ``* max(k / q, 1.0)`` form, which torch.onnx cannot convert for
    symbolic sizes (``aten.mul.Scalar`` of a SymFloat)."""
    if q_size != k_size:
        return original(q_size, k_size, rel_pos)
    length = 2 * q_size - 1
    if (
        rel_pos.shape[0] != length
    ):  # the table of 512-pixel pretraining, resized as transformers does
        rel_pos = nn.functional.interpolate(
            rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=length, mode="linear"
        )
        rel_pos = rel_pos.reshape(-1, length).permute(1, 0)
    coords = torch.arange(q_size)[:, None] - torch.arange(k_size)[None, :] + (k_size - 1)
    return rel_pos[coords]


@contextlib.contextmanager
def exportable() -> Iterator[None]:
    """While open, transformers' ViTDet looks up relative positions with ``_square_rel_pos``
    (equal outputs, exportable to ONNX at any multiple of 32); restored on exit."""
    from transformers.models.vitdet import modeling_vitdet

    original = modeling_vitdet.get_rel_pos
    modeling_vitdet.get_rel_pos = lambda q, k, table: _square_rel_pos(q, k, table, original)
    try:
        yield
    finally:
        modeling_vitdet.get_rel_pos = original
