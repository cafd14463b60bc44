"""``--layout adobe``: the Adobe Image Matting data set as Adobe distributes it
(``Combined_Dataset``), whose test split composited over Pascal VOC is Composition-1k.

- ``Training_set/{Adobe-licensed images,Other}/{fg,alpha}/``, ``Training_set/training_fg_names.txt``
  and ``training_bg_names.txt`` (COCO ``train2014`` names, from ``--bg-dir``): the train split.
- ``Test_set/Adobe-licensed images/{fg,alpha,trimaps}/``, ``Test_set/test_fg_names.txt`` and
  ``test_bg_names.txt`` (VOC ``JPEGImages`` names, from ``--val-bg-dir``): the validation split.

The pairing is the lists' (Adobe's composition code): foreground ``i`` of a names file, in file
order, gets backgrounds ``i*n .. i*n+n-1`` of its background list, ``n = len(bg list) /
len(fg list)`` (100 and 20 in the release), as ``k = 0 .. n-1``. No background is substituted: one
missing or unreadable is an error before any work. The ``fg`` member is the provided foreground
colour image, the matte ``alpha/<the same file name>``, a validation trimap
``trimaps/<the same file name>`` (or its stem with ``.png``). The composite's rounding is Adobe's
float32 one (``shards.mattes.blend(..., "adobe")``) unless ``data.rounding`` is set.
"""

from __future__ import annotations

from collections import Counter
from pathlib import PurePosixPath

from pipeline.inputs import (
    IMAGE_SUFFIXES,
    Foreground,
    InputError,
    Inputs,
    Location,
    background_problems,
    child,
    examine,
    location,
    read_input,
    shown,
    stop_on,
)
from pipeline.layouts.base import Layout, Sources, safe_key
from pipeline.plan import TRAIN, VALIDATION
from shards import store
from shards.store import Options

LICENSED, OTHER = "Adobe-licensed images", "Other"
# split -> (folder, its foreground groups, fg names file, bg names file, the option of its bgs)
PARTS = {
    TRAIN: ("Training_set", (LICENSED, OTHER), "training_fg_names.txt", "training_bg_names.txt",
            "--bg-dir"),
    VALIDATION: ("Test_set", (LICENSED,), "test_fg_names.txt", "test_bg_names.txt",
                 "--val-bg-dir"),
}  # fmt: skip
TRIMAPS = "trimaps"


def _names(path: Location, problems: list[str], options: Options | None) -> list[str]:
    """The names of a names file, one a line, in file order (blank lines skipped)."""
    try:
        text = read_input(path, options).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{shown(path)}: cannot be read ({exc})")
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]


def _files(folder: Location, options: Options | None) -> set[str]:
    """The file names in ``folder``; empty when it is missing (its files are then missing)."""
    if not store.is_dir(folder, options):
        return set()
    return {name for name, is_dir in store.listdir(folder, options) if not is_dir}


def _split_entries(
    data_dir: Location, split: str, bg_dir: Location, problems: list[str], options: Options | None
) -> tuple[list[Foreground], list[Location]]:
    """The split's foregrounds (paired with their backgrounds) and the backgrounds to sniff."""
    folder, groups, fg_list, bg_list, bg_option = PARTS[split]
    part = child(data_dir, folder)
    fg_names = _names(child(part, fg_list), problems, options)
    bg_names = _names(child(part, bg_list), problems, options)
    fgs = {g: _files(child(part, g, "fg"), options) for g in groups}
    alphas = {g: _files(child(part, g, "alpha"), options) for g in groups}
    trimaps = _files(child(part, LICENSED, TRIMAPS), options) if split == VALIDATION else set()
    for g in groups:
        for name in sorted(alphas[g] - fgs[g]):
            expected = shown(child(part, g, "fg", name))
            problems.append(f"{shown(child(part, g, 'alpha', name))}: a matte without a "
                            f"foreground (expected {expected})")  # fmt: skip
    for name, times in sorted(Counter(fg_names).items()):
        if times > 1:
            problems.append(f"{shown(child(part, fg_list))}: {name!r} is listed {times} times")
    n = len(bg_names) // len(fg_names) if fg_names else 0
    if fg_names and (n == 0 or len(bg_names) % len(fg_names)):
        problems.append(
            f"{shown(child(part, bg_list))}: {len(bg_names)} background names for "
            f"{len(fg_names)} foregrounds in {fg_list}: "
            + ("too short, " if n == 0 else "not a multiple, ")
            + "each foreground takes the same number n of the next names in order"
        )
        n = 0
    elif not fg_names:
        problems.append(f"{shown(child(part, fg_list))}: no foreground names")
    entries = []
    for i, name in enumerate(fg_names):
        where = [g for g in groups if name in fgs[g]]
        looked = " or ".join(shown(child(part, g, "fg")) for g in groups)
        if not where:
            problems.append(f"{shown(child(part, fg_list))} line {i + 1}: {name!r} is not in "
                            f"{looked}")  # fmt: skip
            continue
        if len(where) > 1:
            problems.append(f"{shown(child(part, fg_list))} line {i + 1}: {name!r} is in both "
                            f"{looked}: which one is meant is ambiguous")  # fmt: skip
            continue
        group = where[0]
        original = child(part, group, "fg", name)
        if PurePosixPath(name).suffix.lower() not in IMAGE_SUFFIXES:
            problems.append(f"{shown(original)}: not an image file (expected "
                            f"{', '.join(IMAGE_SUFFIXES)})")  # fmt: skip
            continue
        if name not in alphas[group]:
            problems.append(f"{shown(original)}: no matte (expected "
                            f"{shown(child(part, group, 'alpha', name))})")  # fmt: skip
            continue
        trimap = None
        if split == VALIDATION:
            png = PurePosixPath(name).stem + ".png"
            found = name if name in trimaps else png if png in trimaps else None
            if found is None:
                expected = shown(child(part, LICENSED, TRIMAPS, name))
                problems.append(
                    f"{shown(original)}: no trimap (expected {expected} or {png}; validation "
                    "foregrounds are scored on their own trimap)"
                )
                continue
            trimap = str(child(part, LICENSED, TRIMAPS, found))
        key = safe_key(PurePosixPath(name).stem)
        entries.append(
            Foreground(
                key,
                str(original),
                str(child(part, group, "alpha", name)),
                trimap,
                0,
                0,
                key=key,
                backgrounds=tuple(bg_names[i * n : (i + 1) * n]),
                trimap_source="adobe",
            )  # fmt: skip
        )
    on_disk = _files(bg_dir, options)
    to_sniff = []
    for j, name in enumerate(bg_names[: n * len(fg_names)]):
        if name not in on_disk:
            problems.append(f"{shown(child(part, bg_list))} line {j + 1}: background {name!r} "
                            f"is not in {shown(bg_dir)} ({bg_option})")  # fmt: skip
        else:
            to_sniff.append(child(bg_dir, name))
    return entries, list(dict.fromkeys(to_sniff))


def scan(sources: Sources, options: Options | None = None, threads: int = 16) -> Inputs:
    """List and check Adobe's folders, names files and both background folders.

    Raises:
        InputError: every missing folder or names file, listed name not on disk, background
            list that does not divide among its foregrounds, foreground without a matte or
            (validation) trimap, matte without a foreground, size mismatch, unreadable file.
    """
    data_dir = location(sources.data_dir)
    bg_dirs = {TRAIN: location(sources.bg_dir), VALIDATION: location(sources.val_bg_dir)}
    problems = []
    for folder, what in ((data_dir, "--data-dir"), (bg_dirs[TRAIN], "--bg-dir"),
                         (bg_dirs[VALIDATION], "--val-bg-dir")):  # fmt: skip
        if not store.is_dir(folder, options):
            problems.append(f"{shown(folder)}: missing folder ({what})")
    for folder, _, fg_list, bg_list, _ in PARTS.values():
        for name in (fg_list, bg_list):
            if not store.exists(child(data_dir, folder, name), options):
                problems.append(f"{shown(child(data_dir, folder, name))}: missing (the names "
                                "file of Adobe's Combined_Dataset)")  # fmt: skip
    if problems:
        raise InputError("inputs are missing", problems)
    entries, backgrounds = [], {}
    for split in (TRAIN, VALIDATION):
        found, to_sniff = _split_entries(data_dir, split, bg_dirs[split], problems, options)
        entries += [(split, e) for e in found]
        backgrounds[split] = to_sniff
    for key, times in sorted(Counter(e.id for _, e in entries).items()):
        if times > 1:
            problems.append(f"{shown(data_dir)}: {times} foregrounds have the sample key {key!r} "
                            "(the same file stem): rename one")  # fmt: skip
    foregrounds, conversions = examine([e for _, e in entries], data_dir, problems, options,
                                       threads)  # fmt: skip
    problems += background_problems(backgrounds[TRAIN] + backgrounds[VALIDATION], options, threads)
    stop_on(problems)
    split_of = {e.id: split for split, e in entries}
    ids = {s: tuple(sorted(fg.id for fg in foregrounds if split_of[fg.id] == s))
           for s in (TRAIN, VALIDATION)}  # fmt: skip
    return Inputs(
        data_dir=data_dir,
        bg_dir=bg_dirs[TRAIN],
        foregrounds=tuple(sorted(foregrounds, key=lambda fg: fg.id)),
        backgrounds=tuple(sorted({bg for fg in foregrounds for bg in fg.backgrounds})),
        ignored=(),
        conversions=tuple(conversions),
        layout="adobe",
        sources=(
            ("data_dir", shown(data_dir)),
            ("bg_dir", shown(bg_dirs[TRAIN])),
            ("val_bg_dir", shown(bg_dirs[VALIDATION])),
        ),  # fmt: skip
        val_bg_dir=bg_dirs[VALIDATION],
        split=(ids[TRAIN], ids[VALIDATION], "dataset"),
        paired=True,
    )


LAYOUT = Layout(
    name="adobe",
    scan=scan,
    required=("data_dir", "bg_dir", "val_bg_dir"),
    rounding="adobe",
    pairs=True,
    splits=True,
    summary="Adobe Image Matting (Combined_Dataset): Training_set train, Test_set validation "
    "(Composition-1k), backgrounds paired by its names files",
)
