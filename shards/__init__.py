"""The shard format shared by every stage: sample rules, codecs, tar writing, the index, Dask.

Public API:
- pixel rules (``shards.mattes``): ``BackgroundFit``, ``background_fit``, ``apply_fit``,
  ``fit_background``, ``blend``, ``trimap_from_alpha``, ``trivial_alpha`` (the baseline);
- codecs (``shards.codec``): ``decode_color``, ``decode_grey``, ``decode_unchanged``,
  ``encode_png``, ``to_8bit`` (16-bit samples to 8: ``round(v/257)``);
- writing (``shards.writer``, ``shards.atomic``): ``ShardWriter``, ``sha256_file``,
  ``atomic_write_bytes``, ``atomic_file`` (the one atomic write);
- the index (``shards.index``): ``Index``, ``ShardInfo``, ``read_index``, ``parse_index``,
  ``read_samples``;
- Dask (``shards.cluster``, imported on its own so readers need not load distributed):
  ``ClusterOptions``, ``dask_client``, ``map_bounded``.

It knows nothing of how composites are planned, of models or of metrics.
"""

from shards.atomic import atomic_file, atomic_write_bytes
from shards.codec import decode_color, decode_grey, decode_unchanged, encode_png, to_8bit
from shards.index import Index, ShardInfo, parse_index, read_index, read_samples
from shards.mattes import (
    BackgroundFit,
    apply_fit,
    background_fit,
    blend,
    fit_background,
    trimap_from_alpha,
    trivial_alpha,
)
from shards.writer import ShardWriter, sha256_file

__all__ = [
    "BackgroundFit",
    "Index",
    "ShardInfo",
    "ShardWriter",
    "apply_fit",
    "atomic_file",
    "atomic_write_bytes",
    "background_fit",
    "blend",
    "decode_color",
    "decode_grey",
    "decode_unchanged",
    "encode_png",
    "fit_background",
    "parse_index",
    "read_index",
    "read_samples",
    "sha256_file",
    "to_8bit",
    "trimap_from_alpha",
    "trivial_alpha",
]
