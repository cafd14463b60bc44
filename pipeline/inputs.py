"""Scan and validate a build's inputs before any work: every offender is listed at once.

``scan_inputs(data_dir, bg_dir)`` reads the AIM-500 layout (``original/o_<id>.jpg``,
``mask/o_<id>.png``, ``trimap/o_<id>.png``) and a folder of background photos, checks headers
(sizes from the image header; backgrounds by their magic bytes), and returns sorted ``Inputs``.
Pixels are not decoded here: a background whose body is corrupt is found while compositing.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from shards.codec import image_kind

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class InputError(ValueError):
    """Inputs that cannot be built; ``problems`` lists every offender."""

    def __init__(self, summary: str, problems: list[str]) -> None:
        self.problems = problems
        shown = problems[:50]
        more = (
            f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        )
        super().__init__(f"{summary}:\n  " + "\n  ".join(shown) + more)


@dataclass(frozen=True)
class Foreground:
    """One AIM-500 foreground: its files and size."""

    id: str  # the <id> of o_<id>
    original: str  # absolute paths, as strings so tasks pickle small
    mask: str
    trimap: str | None  # None when the data set has no trimap for it
    height: int
    width: int


@dataclass(frozen=True)
class Inputs:
    """Validated inputs, sorted by name (never directory order)."""

    data_dir: Path
    bg_dir: Path
    foregrounds: tuple[Foreground, ...]
    backgrounds: tuple[str, ...]  # file names in bg_dir
    ignored: tuple[str, ...]  # files in bg_dir that are not images by name (e.g. README)


def _listing(folder: Path, problems: list[str]) -> dict[str, Path]:
    """Image files of ``folder`` by stem; non-image files become problems."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            problems.append(f"{path}: not an image file (expected {', '.join(IMAGE_SUFFIXES)})")
        elif path.stem in found:
            problems.append(f"{path}: a second file for {path.stem} (also {found[path.stem].name})")
        else:
            found[path.stem] = path
    return found


def _header_size(path: Path) -> tuple[int, int] | str:
    """``(height, width)`` from the header, or the reason it cannot be read."""
    try:
        with Image.open(path) as img:
            if img.format not in ("JPEG", "PNG"):
                return f"is {img.format}, expected JPEG or PNG"
            width, height = img.size
            return height, width
    except UnidentifiedImageError:
        return "not a readable image (unknown format or corrupt header)"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"


def _sniff(path: Path) -> str | None:
    """None when ``path`` starts like a JPEG or PNG, else the reason."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return None if image_kind(head) else "not a JPEG or PNG (bad magic bytes)"


def scan_inputs(data_dir: Path, bg_dir: Path, threads: int = 16) -> Inputs:
    """List and check the foregrounds and backgrounds.

    Args:
        data_dir: AIM-500-style folder with ``original/``, ``mask/`` and optionally ``trimap/``.
        bg_dir: folder of background photos (JPEG or PNG).
        threads: header reads run in this many threads (they are I/O bound).

    Returns:
        ``Inputs`` sorted by file name.

    Raises:
        InputError: listing every missing folder, unpaired or unreadable file, size mismatch.
    """
    data_dir, bg_dir = Path(data_dir).resolve(), Path(bg_dir).resolve()
    problems: list[str] = []
    for folder, what in ((data_dir, "--data-dir"), (data_dir / "original", "originals"),
                         (data_dir / "mask", "masks"), (bg_dir, "--bg-dir")):  # fmt: skip
        if not folder.is_dir():
            problems.append(f"{folder}: missing folder ({what})")
    if problems:
        raise InputError("inputs are missing", problems)

    originals = _listing(data_dir / "original", problems)
    masks = _listing(data_dir / "mask", problems)
    trimap_dir = data_dir / "trimap"
    trimaps = _listing(trimap_dir, problems) if trimap_dir.is_dir() else {}
    for stem in sorted(originals.keys() - masks.keys()):
        problems.append(f"{originals[stem]}: no mask (expected mask/{stem}.png)")
    for stem in sorted(masks.keys() - originals.keys()):
        problems.append(f"{masks[stem]}: no original (expected original/{stem}.jpg)")
    for stem in sorted(originals.keys() | masks.keys()):
        if not stem.startswith("o_") or len(stem) <= 2 or "." in stem:
            problems.append(f"{originals.get(stem) or masks[stem]}: name is not o_<id>")

    paired = sorted(originals.keys() & masks.keys())
    to_read = [originals[s] for s in paired] + [masks[s] for s in paired]
    to_read += [trimaps[s] for s in paired if s in trimaps]
    bg_files = [p for p in sorted(bg_dir.iterdir()) if p.is_file() and not p.name.startswith(".")]
    backgrounds = [p for p in bg_files if p.suffix.lower() in IMAGE_SUFFIXES]
    ignored = tuple(p.name for p in bg_files if p.suffix.lower() not in IMAGE_SUFFIXES)
    with ThreadPoolExecutor(threads) as pool:
        sizes = dict(zip(to_read, pool.map(_header_size, to_read), strict=True))
        sniffed = list(pool.map(_sniff, backgrounds))

    foregrounds = []
    for stem in paired:
        o_size, m_size = sizes[originals[stem]], sizes[masks[stem]]
        t_path = trimaps.get(stem)
        t_size = sizes[t_path] if t_path else None
        for path, size in ((originals[stem], o_size), (masks[stem], m_size), (t_path, t_size)):
            if isinstance(size, str):
                problems.append(f"{path}: {size}")
        if isinstance(o_size, str) or isinstance(m_size, str):
            continue
        if o_size != m_size:
            problems.append(
                f"{masks[stem]}: mask is {m_size[1]}x{m_size[0]} but original is "
                f"{o_size[1]}x{o_size[0]}"
            )
        if isinstance(t_size, tuple) and t_size != o_size:
            problems.append(
                f"{t_path}: trimap is {t_size[1]}x{t_size[0]} but original is "
                f"{o_size[1]}x{o_size[0]}"
            )
        foregrounds.append(
            Foreground(
                id=stem[2:],
                original=str(originals[stem]),
                mask=str(masks[stem]),
                trimap=str(t_path) if t_path else None,
                height=o_size[0],
                width=o_size[1],
            )
        )
    problems += [f"{path}: {why}" for path, why in zip(backgrounds, sniffed, strict=True) if why]
    if not paired and not problems:
        problems.append(f"{data_dir / 'original'}: no foregrounds found")
    if not backgrounds:
        problems.append(f"{bg_dir}: no background images (.jpg, .jpeg, .png) found")
    if problems:
        raise InputError(
            f"{len(problems)} problem(s) with the inputs; nothing was written", problems
        )
    return Inputs(
        data_dir=data_dir,
        bg_dir=bg_dir,
        foregrounds=tuple(foregrounds),
        backgrounds=tuple(p.name for p in backgrounds),
        ignored=ignored,
    )
