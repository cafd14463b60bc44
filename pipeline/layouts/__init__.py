"""Dataset layouts: how a build finds its foregrounds, mattes and trimaps, which split each
belongs to, and (optionally) which backgrounds each is composited over.

``LAYOUTS`` is the table ``pipeline build --layout NAME`` chooses from. Adding a layout is one
module here with a ``scan(sources, options) -> pipeline.inputs.Inputs`` and a ``LAYOUT`` row
(``base.Layout``), plus its line below (CONTRIBUTING.md, "Add a dataset layout").
"""

from __future__ import annotations

from dataclasses import replace

from configs import Config
from pipeline.inputs import Inputs
from pipeline.layouts import adobe, aim500, folders
from pipeline.layouts.base import OPTION_NAMES, Layout, Sources, safe_key
from shards.store import Options

LAYOUTS: dict[str, Layout] = {row.name: row for row in (aim500.LAYOUT, adobe.LAYOUT,
                                                         folders.LAYOUT)}  # fmt: skip
DEFAULT = "aim500"

__all__ = ["DEFAULT", "LAYOUTS", "OPTION_NAMES", "Layout", "Sources", "get", "safe_key", "scan",
           "with_rounding"]  # fmt: skip


def get(name: str) -> Layout:
    """The layout ``name``; a ``ValueError`` naming the known ones otherwise."""
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ValueError(f"--layout {name!r} is unknown; layouts: {', '.join(LAYOUTS)}") from None


def check(sources: Sources) -> Layout:
    """The sources' layout, after checking that they give exactly the folders it reads.

    Raises:
        ValueError: an unknown layout, a required folder missing or one it does not read given.
    """
    layout = get(sources.layout)
    given = sources.given()
    missing = [OPTION_NAMES[k] for k in layout.required if k not in given]
    extra = [OPTION_NAMES[k] for k in given if k not in (*layout.required, *layout.optional)]
    problems = [f"--layout {layout.name} needs {', '.join(missing)}"] if missing else []
    if extra:
        problems.append(f"--layout {layout.name} does not read {', '.join(extra)}")
    if problems:
        raise ValueError("; ".join(problems))
    return layout


def scan(sources: Sources, options: Options | None = None) -> Inputs:
    """List and check the inputs of ``sources`` with its layout (``Layout.scan``)."""
    return check(sources).scan(sources, options)


def with_rounding(cfg: Config, layout: Layout, explicit: bool) -> Config:
    """``cfg`` with the layout's rounding unless ``data.rounding`` was set (``explicit``)."""
    if explicit or layout.rounding is None or cfg.data.rounding == layout.rounding:
        return cfg
    return replace(cfg, data=replace(cfg.data, rounding=layout.rounding))
