"""What every layout shares: the options a build names its inputs with, the layout's table row,
and the one rule that turns a data set's file name into a WebDataset sample key."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

from pipeline.inputs import Inputs
from shards import store
from shards.store import Options

# the command line's names of the ``Sources`` fields
OPTION_NAMES = {
    "data_dir": "--data-dir",
    "bg_dir": "--bg-dir",
    "val_bg_dir": "--val-bg-dir",
    "fg_dir": "--fg-dir",
    "alpha_dir": "--alpha-dir",
    "trimap_dir": "--trimap-dir",
    "val_fg_dir": "--val-fg-dir",
    "val_alpha_dir": "--val-alpha-dir",
    "val_trimap_dir": "--val-trimap-dir",
}


@dataclass(frozen=True)
class Sources:
    """The folders (local paths or store URLs) a build's inputs were named by, and the layout
    that reads them; a layout uses the fields of its row's ``required`` and ``optional``."""

    layout: str = "aim500"
    data_dir: str | Path | None = None
    bg_dir: str | Path | None = None
    val_bg_dir: str | Path | None = None
    fg_dir: str | Path | None = None
    alpha_dir: str | Path | None = None
    trimap_dir: str | Path | None = None
    val_fg_dir: str | Path | None = None
    val_alpha_dir: str | Path | None = None
    val_trimap_dir: str | Path | None = None

    def given(self) -> dict[str, str | Path]:
        """The folders that were given, by field name."""
        return {f.name: v for f in fields(self) if f.name != "layout"
                if (v := getattr(self, f.name)) is not None}  # fmt: skip

    @property
    def root(self) -> str | Path:
        """The data set's own folder: ``data_dir``, else the deepest folder holding the
        foreground and matte folders (the default ``--out`` is a ``shards`` folder beside it)."""
        if self.data_dir is not None:
            return self.data_dir
        dirs = {str(d).rstrip("/") if store.is_remote(d) else str(Path(d).resolve())
                for d in (self.fg_dir, self.alpha_dir) if d is not None}  # fmt: skip
        if not dirs:
            raise ValueError("no --data-dir or --fg-dir given")
        parts = [d.split("/") for d in sorted(dirs)]
        common = []
        for names in zip(*parts, strict=False):
            if len(set(names)) > 1:
                break
            common.append(names[0])
        if len(dirs) == 1:
            common = common[:-1]
        root = "/".join(common)
        return root if store.is_remote(root) else Path(root or "/")


@dataclass(frozen=True)
class Layout:
    """One row of the layout table (``pipeline.layouts.LAYOUTS``).

    Attributes:
        name: ``--layout NAME``.
        scan: ``scan(sources, options) -> Inputs``: list and check every input, raising
            ``pipeline.inputs.InputError`` with every problem (nothing may be written).
        required: the ``Sources`` fields a build must give.
        optional: the fields it may give; any other given is an error.
        rounding: the composite's rounding unless ``data.rounding`` is set (None: the config's).
        pairs: the layout pairs backgrounds itself, so ``--bgs-per-*-fg`` do not apply.
        splits: the layout gives the split itself, so ``--val-count`` does not apply.
        summary: one line for ``--help``.
    """

    name: str
    scan: Callable[[Sources, Options | None], Inputs]
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    rounding: str | None = None
    pairs: bool = False
    splits: bool = False
    summary: str = ""


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def safe_key(stem: str) -> str:
    """A sample key stem for a file stem: itself when it holds only letters, digits, ``_`` and
    ``-``; otherwise every other character becomes ``_`` and the first 8 hex digits of the
    stem's sha256 are appended (``Aaron Eckhart.v2`` -> ``Aaron_Eckhart_v2_1b2c...``), so two
    stems that differ only there still get different keys. Deterministic: no counters."""
    if stem and not _UNSAFE.search(stem):
        return stem
    digest = hashlib.sha256(stem.encode()).hexdigest()[:8]
    return f"{_UNSAFE.sub('_', stem)}_{digest}"
