"""A contact sheet: a few evaluated samples in one PNG, so a person sees the result at a glance.

One row per sample: the composite, its trimap, the prediction, the ground truth and the error
map (|prediction - truth| on the unknown region, dark = right, bright = wrong; known pixels
are grey), each scaled to the same height, with the key and the sample's SAD written above.
Only OpenCV and numpy; deterministic (same inputs, same bytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from shards.atomic import atomic_write_bytes
from shards.codec import encode_png
from shards.mattes import TRIMAP_UNKNOWN

COLUMNS = ("composite", "trimap", "prediction", "ground truth", "error (unknown region)")
CELL_HEIGHT = 240  # pixels per row image
LABEL = 22  # height of the text band above each row and the header
GAP = 4  # pixels between cells
_BACKGROUND = 255
_KNOWN_GREY = 96


@dataclass(frozen=True)
class SheetRow:
    """One sample: (H, W, 3) uint8 RGB composite, (H, W) uint8 trimap, prediction, truth."""

    key: str
    rgb: np.ndarray
    trimap: np.ndarray
    pred: np.ndarray
    gt: np.ndarray
    sad: float


def error_map(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB: |pred - gt| through the inferno colour map on the unknown region."""
    diff = cv2.absdiff(pred, gt)
    coloured = cv2.applyColorMap(diff, cv2.COLORMAP_INFERNO)[..., ::-1]  # BGR -> RGB
    coloured[trimap != TRIMAP_UNKNOWN] = _KNOWN_GREY
    return coloured


def _cell(image: np.ndarray) -> np.ndarray:
    """Any (H, W) or (H, W, 3) uint8 image -> RGB at CELL_HEIGHT, aspect kept."""
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    h, w = image.shape[:2]
    width = max(1, round(w * CELL_HEIGHT / h))
    return cv2.resize(image, (width, CELL_HEIGHT), interpolation=cv2.INTER_AREA)


def _text(band: np.ndarray, text: str, x: int) -> None:
    cv2.putText(
        band, text, (x, LABEL - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA
    )


def render(rows: list[SheetRow]) -> np.ndarray:
    """The sheet as an (H, W, 3) uint8 RGB array (header, then a labelled band per row)."""
    if not rows:
        raise ValueError("a contact sheet needs at least one sample")
    grids = []
    for row in rows:
        cells = [
            _cell(a)
            for a in (
                row.rgb,
                row.trimap,
                row.pred,
                row.gt,
                error_map(row.pred, row.gt, row.trimap),
            )
        ]
        grids.append(cells)
    widths = [max(cells[c].shape[1] for cells in grids) for c in range(len(COLUMNS))]
    total = sum(widths) + GAP * (len(widths) + 1)
    header = np.full((LABEL, total, 3), _BACKGROUND, np.uint8)
    x = GAP
    for name, width in zip(COLUMNS, widths, strict=True):
        _text(header, name, x)
        x += width + GAP
    parts = [header]
    for row, cells in zip(rows, grids, strict=True):
        band = np.full((LABEL, total, 3), _BACKGROUND, np.uint8)
        _text(band, f"{row.key}   SAD {row.sad:.3f}", GAP)
        line = np.full((CELL_HEIGHT, total, 3), _BACKGROUND, np.uint8)
        x = GAP
        for cell, width in zip(cells, widths, strict=True):
            line[:, x : x + cell.shape[1]] = cell
            x += width + GAP
        parts += [band, line]
    parts.append(np.full((GAP, total, 3), _BACKGROUND, np.uint8))
    return np.concatenate(parts, axis=0)


def write_contact_sheet(rows: list[SheetRow], path: Path) -> Path:
    """Render ``rows`` and write the PNG atomically; returns ``path``."""
    atomic_write_bytes(Path(path), encode_png(render(rows)))
    return Path(path)
