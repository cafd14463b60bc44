"""TensorBoard event files of a run: ``RUN/tensorboard/``, for ``tensorboard --logdir``.

Rank 0 writes, through ``torch.utils.tensorboard.SummaryWriter``, every number of each logged
step record under a tag by kind (``train/loss``, ``train/loss_<term>``, ``lr/full`` for
``lr``, ``lr/<group>`` for ``lr_<group>``, ``perf/ms_per_step``, ``perf/data_wait_ms``,
``perf/samples_per_s``), each validation's means (``val/sad`` .. ``val/conn``) at its step,
the trivial baseline's once (``baseline/sad`` ..), and per validation a contact sheet per kept
sample (``val/sample_<i>``: image | trimap | prediction | truth, at most ``SHEET_WIDTH`` px
wide). TensorBoard is an optional extra (``pip install 'indexnet-matting[tensorboard]'``):
without it ``open_log`` prints a one-line note and returns None, and training runs the same.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

TENSORBOARD_DIR = "tensorboard"
SHEET_WIDTH = 512  # px, the widest a sample's image | trimap | prediction | truth strip gets
SHEET_SAMPLES = 3  # validation samples drawn per validation
_PERF = ("ms_per_step", "data_wait_ms", "samples_per_s")
_NOT_SCALARS = ("step", "epoch", "time_s")


def scalar_tag(key: str) -> str | None:
    """The tag of a step record's ``key``, or None for what is no curve (step, epoch, time)."""
    if key in _NOT_SCALARS:
        return None
    if key == "lr":
        return "lr/full"
    if key.startswith("lr_"):
        return f"lr/{key[3:]}"
    if key in _PERF:
        return f"perf/{key}"
    return f"train/{key}"


def sample_sheet(
    rgb: np.ndarray, trimap: np.ndarray, pred: np.ndarray, alpha: np.ndarray
) -> np.ndarray:
    """One sample as a strip: image | trimap | prediction | truth.

    Args:
        rgb: (H, W, 3) uint8; trimap, pred, alpha: (H, W) uint8.

    Returns:
        (h, w, 3) uint8 HWC, ``w <= SHEET_WIDTH`` (area-downscaled, aspect kept).
    """
    grey = [np.repeat(a[..., None], 3, axis=2) for a in (trimap, pred, alpha)]
    strip = np.concatenate([rgb, *grey], axis=1)
    height, width = strip.shape[:2]
    if width > SHEET_WIDTH:
        size = (SHEET_WIDTH, max(1, round(height * SHEET_WIDTH / width)))
        strip = cv2.resize(strip, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(strip)


class TensorBoardLog:
    """A run's event files; every method is a no-op after ``close``."""

    def __init__(self, writer) -> None:
        self.writer = writer

    def step(self, record: dict) -> None:
        """A logged step record of ``train.jsonl``."""
        if self.writer is None:
            return
        for key, value in record.items():
            tag = scalar_tag(key)
            if tag is not None and isinstance(value, int | float):
                self.writer.add_scalar(tag, value, record["step"])

    def validation(
        self, metrics: dict, step: int, kept: list, baseline: dict | None = None
    ) -> None:
        """A validation's means, its kept samples' strips and (once) the baseline's means."""
        if self.writer is None:
            return
        for prefix, means in (("val", metrics), ("baseline", baseline)):
            for name, value in (means or {}).items():
                if name != "samples":
                    self.writer.add_scalar(f"{prefix}/{name}", value, step)
        for i, sample in enumerate(kept):
            self.writer.add_image(f"val/sample_{i}", sample_sheet(*sample), step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None


def open_log(run_dir: Path) -> TensorBoardLog | None:
    """``TensorBoardLog`` on ``run_dir/tensorboard``; without the package, a note and None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print(
            "note: no TensorBoard logs for this run (the tensorboard package is not installed; "
            "pip install 'indexnet-matting[tensorboard]' to have them)",
            file=sys.stderr,
            flush=True,
        )
        return None
    return TensorBoardLog(SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD_DIR)))
