"""evaluation.contact_sheet: rows of composite, trimap, prediction, truth and error map."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.contact_sheet import (
    CELL_HEIGHT,
    COLUMNS,
    GAP,
    LABEL,
    SheetRow,
    error_map,
    render,
    write_contact_sheet,
)
from shards.codec import decode_color


def _row(key: str, h: int, w: int, seed: int) -> SheetRow:
    rng = np.random.default_rng(seed)
    trimap = np.zeros((h, w), np.uint8)
    trimap[:, w // 3 :] = 128
    trimap[:, 2 * w // 3 :] = 255
    gt = rng.integers(0, 256, (h, w), dtype=np.uint8)
    pred = gt.copy()
    pred[: h // 2] = 255 - pred[: h // 2]  # wrong in the top half
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return SheetRow(key, rgb, trimap, pred, gt, 1.25)


def test_error_map_colours_only_the_unknown_region():
    row = _row("a", 40, 60, 0)
    err = error_map(row.pred, row.gt, row.trimap)
    assert err.shape == (40, 60, 3) and err.dtype == np.uint8
    known = row.trimap != 128
    assert (err[known] == 96).all()
    right = (row.trimap == 128) & (row.pred == row.gt)
    assert err[right].max() < 20  # no error: the dark end of the colour map


def test_layout_is_one_labelled_band_per_row_and_deterministic(tmp_path):
    rows = [_row("o_1-000", 100, 80, 1), _row("o_2-001", 60, 120, 2)]
    sheet = render(rows)
    assert sheet.shape[0] == LABEL + len(rows) * (LABEL + CELL_HEIGHT) + GAP
    # every column is as wide as its widest cell: 120x60 scaled to height 240 is 480 wide
    assert sheet.shape[1] == len(COLUMNS) * 480 + (len(COLUMNS) + 1) * GAP
    path = write_contact_sheet(rows, tmp_path / "sheet.png")
    again = write_contact_sheet(rows, tmp_path / "again.png")
    assert path.read_bytes() == again.read_bytes()
    decoded = decode_color(path.read_bytes())
    assert np.array_equal(decoded, sheet)
    with pytest.raises(ValueError, match="at least one sample"):
        render([])
