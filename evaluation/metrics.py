"""The benchmark's metrics, under the name users and their scripts import them by.

The code is ``shards.metrics`` (pure numpy and OpenCV, at the base of the package graph so that
training's validation and evaluation share one implementation); this module only re-exports it.
"""

from shards.mattes import TRIMAP_UNKNOWN as UNKNOWN
from shards.mattes import to_uint8
from shards.metrics import METRICS, all_metrics, conn, grad, mse, sad

__all__ = ["METRICS", "UNKNOWN", "all_metrics", "conn", "grad", "mse", "sad", "to_uint8"]
