"""The shard format shared by every stage: sample rules, tar writing and reading, the index.

Public API: ``BackgroundFit``, ``background_fit``, ``apply_fit``, ``fit_background``, ``blend``,
``trimap_from_alpha``, ``decode_color``, ``decode_grey``, ``encode_png``.
It knows nothing of how composites are planned, of models or of metrics.
"""

from shards.mattes import (
    BackgroundFit,
    apply_fit,
    background_fit,
    blend,
    decode_color,
    decode_grey,
    encode_png,
    fit_background,
    trimap_from_alpha,
)

__all__ = [
    "BackgroundFit",
    "apply_fit",
    "background_fit",
    "blend",
    "decode_color",
    "decode_grey",
    "encode_png",
    "fit_background",
    "trimap_from_alpha",
]
