"""``--layout aim500`` (the default): AIM-500's ``original/o_<id>.jpg``, ``mask/o_<id>.png`` and
``trimap/o_<id>.png`` under ``--data-dir``, backgrounds from ``--bg-dir`` paired by the seed.
The scan is ``pipeline.inputs.scan_inputs``; shards are byte-identical to those built before
layouts existed."""

from __future__ import annotations

from pipeline.inputs import Inputs, scan_inputs
from pipeline.layouts.base import Layout, Sources
from shards.store import Options


def scan(sources: Sources, options: Options | None = None) -> Inputs:
    """The AIM-500 folder and the backgrounds (``scan_inputs``)."""
    return scan_inputs(sources.data_dir, sources.bg_dir, options=options)


LAYOUT = Layout(
    name="aim500",
    scan=scan,
    required=("data_dir", "bg_dir"),
    summary="AIM-500: original/o_<id>.jpg, mask/o_<id>.png, trimap/o_<id>.png",
)
