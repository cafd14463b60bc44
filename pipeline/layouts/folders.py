"""``--layout folders``: any set of foreground images and mattes in two folders, paired by file
stem (Distinctions-646, AM-2k, P3M-10k, PPM-100, alphamatting.com, your own).

``--fg-dir`` and ``--alpha-dir`` (and ``--trimap-dir``, the trimaps by the same stems) are the
foregrounds; the split is the listed or seeded one of AIM-500 (``data.validation_ids``, here the
foregrounds' sample keys; ``--val-count``) unless the set ships its own: ``--val-fg-dir``,
``--val-alpha-dir`` and ``--val-trimap-dir`` are then the validation split, every one with a
trimap. Files are ``.jpg``, ``.jpeg``, ``.png``, ``.tif``, ``.tiff`` or ``.webp`` (8-bit TIFF and
WebP: ``shards.codec`` decodes them through OpenCV), with any names: a foreground's sample key is
its stem, made safe (``safe_key``). Backgrounds come from ``--bg-dir``, paired by the seed as for
AIM-500.
"""

from __future__ import annotations

from collections import Counter
from pathlib import PurePosixPath

from pipeline.inputs import (
    ANY_IMAGE_SUFFIXES,
    Foreground,
    InputError,
    Inputs,
    Location,
    _listing,
    background_problems,
    examine,
    list_backgrounds,
    location,
    shown,
    stop_on,
)
from pipeline.layouts.base import OPTION_NAMES, Layout, Sources, safe_key
from shards import store
from shards.store import Options

FORMATS = ("JPEG", "PNG", "TIFF", "WEBP")


def _match(
    fg_dir: Location,
    alpha_dir: Location,
    trimap_dir: Location | None,
    problems: list[str],
    options: Options | None,
    need_trimap: bool,
) -> list[Foreground]:
    """Foregrounds and mattes of two folders paired by stem (sizes 0: ``examine`` reads them)."""
    fgs = _listing(fg_dir, problems, options, ANY_IMAGE_SUFFIXES)
    alphas = _listing(alpha_dir, problems, options, ANY_IMAGE_SUFFIXES)
    trimaps = _listing(trimap_dir, problems, options, ANY_IMAGE_SUFFIXES) if trimap_dir else {}
    for stem in sorted(fgs.keys() - alphas.keys()):
        problems.append(f"{shown(fgs[stem])}: no matte (expected a file {stem}.* in "
                        f"{shown(alpha_dir)})")  # fmt: skip
    for stem in sorted(alphas.keys() - fgs.keys()):
        problems.append(f"{shown(alphas[stem])}: a matte without a foreground (expected a file "
                        f"{stem}.* in {shown(fg_dir)})")  # fmt: skip
    entries = []
    for stem in sorted(fgs.keys() & alphas.keys()):
        if need_trimap and stem not in trimaps:
            problems.append(f"{shown(fgs[stem])}: no trimap (expected a file {stem}.* in "
                            f"{shown(trimap_dir)}; validation foregrounds are scored on their "
                            "own trimap)")  # fmt: skip
        key = safe_key(stem)
        trimap = str(trimaps[stem]) if stem in trimaps else None
        entries.append(Foreground(key, str(fgs[stem]), str(alphas[stem]), trimap, 0, 0,
                                  key=key, trimap_source="folders"))  # fmt: skip
    return entries


def scan(sources: Sources, options: Options | None = None, threads: int = 16) -> Inputs:
    """List and check the foreground, matte (and trimap) folders and the backgrounds.

    Raises:
        InputError: every missing folder, foreground without a matte or the reverse, file that
            is not an image, size mismatch, unreadable file, validation foreground (of
            ``--val-fg-dir``) without a trimap, two foregrounds with one sample key.
    """
    given = {k: location(v) for k, v in sources.given().items()}
    problems = []
    val = [k for k in ("val_fg_dir", "val_alpha_dir", "val_trimap_dir") if k in given]
    if val and len(val) < 3:
        problems.append("--val-fg-dir, --val-alpha-dir and --val-trimap-dir go together; "
                        f"given only {', '.join(OPTION_NAMES[k] for k in val)}")  # fmt: skip
    for name, folder in given.items():
        if not store.is_dir(folder, options):
            problems.append(f"{shown(folder)}: missing folder ({OPTION_NAMES[name]})")
    if problems:
        raise InputError("inputs are missing", problems)
    entries = _match(given["fg_dir"], given["alpha_dir"], given.get("trimap_dir"), problems,
                     options, need_trimap=False)  # fmt: skip
    validation = []
    if val:
        validation = _match(given["val_fg_dir"], given["val_alpha_dir"], given["val_trimap_dir"],
                            problems, options, need_trimap=True)  # fmt: skip
    for key, times in sorted(Counter(e.id for e in entries + validation).items()):
        if times > 1:
            problems.append(
                f"{times} foregrounds have the sample key {key!r} (the same or a "
                "similar file stem, in the train and validation folders): rename one"
            )
    root = location(sources.root)
    bg_dir = given["bg_dir"]
    backgrounds, ignored = list_backgrounds(bg_dir, options)
    foregrounds, conversions = examine(entries + validation, root, problems, options, threads,
                                       FORMATS)  # fmt: skip
    problems += background_problems(backgrounds, options, threads)
    if not entries and not problems:
        problems.append(f"{shown(given['fg_dir'])}: no foregrounds found")
    if val and not validation and not problems:
        problems.append(f"{shown(given['val_fg_dir'])}: no foregrounds found")
    if not backgrounds:
        problems.append(f"{shown(bg_dir)}: no background images (.jpg, .jpeg, .png) found")
    stop_on(problems)
    val_ids = {e.id for e in validation}
    split = None
    if val:
        split = (tuple(sorted(e.id for e in entries)), tuple(sorted(val_ids)), "folders")
    return Inputs(
        data_dir=root,
        bg_dir=bg_dir,
        foregrounds=tuple(sorted(foregrounds, key=lambda fg: fg.id)),
        backgrounds=tuple(PurePosixPath(str(p)).name for p in backgrounds),
        ignored=ignored,
        conversions=tuple(conversions),
        layout="folders",
        sources=tuple((k, shown(v)) for k, v in given.items()),
        split=split,
    )


LAYOUT = Layout(
    name="folders",
    scan=scan,
    required=("fg_dir", "alpha_dir", "bg_dir"),
    optional=("trimap_dir", "val_fg_dir", "val_alpha_dir", "val_trimap_dir"),
    summary="any folders of foregrounds and mattes paired by file stem (--fg-dir, --alpha-dir, "
    "[--trimap-dir], [--val-fg-dir --val-alpha-dir --val-trimap-dir])",
)
