"""Scan and validate a build's inputs before any work: every offender is listed at once.

``scan_inputs(data_dir, bg_dir)`` reads the AIM-500 layout (``original/o_<id>.jpg``,
``mask/o_<id>.png``, ``trimap/o_<id>.png``) and a folder of background photos, checks headers
(sizes from the image header; backgrounds by their magic bytes), and returns sorted ``Inputs``.
Pixels are not decoded here, with one exception: a mask that is not plain grey (a palette, RGB,
or an alpha channel) is decoded to check that its colours are grey and its alpha opaque, the
only masks whose matte is unambiguous. A background whose body is corrupt is found while
compositing.

Either folder may be a local path or a store URL (``s3://bucket/AIM-500``, any fsspec URL
``shards.store`` reaches): folders are listed, headers read with ranged GETs, and every message
names the file's URL (``shards.store.redact``). Foreground paths are kept as strings, local
absolute paths or URLs, for the workers that read them.

Inputs that decode to 8-bit RGB / grey only by a conversion (16-bit, palette, greyscale or CMYK,
an opaque alpha dropped: see ``shards.codec``) are listed in ``Inputs.conversions``, which the
build records in ``index.json``; the stored ``fg`` keeps the original's bytes, and every reader
decodes them through ``shards.codec`` the same way.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from shards import store
from shards.codec import decode_unchanged, image_kind
from shards.store import Options

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# what ``--layout folders`` also accepts: OpenCV (``shards.codec``) decodes TIFF and WebP too
ANY_IMAGE_SUFFIXES = (*IMAGE_SUFFIXES, ".tif", ".tiff", ".webp")
_FORMATS = {IMAGE_SUFFIXES: ("JPEG", "PNG"), ANY_IMAGE_SUFFIXES: ("JPEG", "PNG", "TIFF", "WEBP")}

Location = Path | str  # a local path (a Path) or a store URL (a str)


def location(where: str | Path) -> Location:
    """A local folder as an absolute ``Path``; a URL as a string without a trailing slash."""
    if store.is_remote(where):
        return str(where).rstrip("/")
    return store.local_path(where).resolve()


def child(root: Location, *parts: str) -> Location:
    """``root/part/...``: a ``Path`` under a local folder, a URL under a URL."""
    return store.join(root, *parts) if isinstance(root, str) else Path(root, *parts)


def shown(where: Location) -> str:
    """A location as messages and the index name it: a URL without any credentials in it."""
    return store.redact(str(where))


def read_input(where: str | Path, options: Options | None = None) -> bytes:
    """The bytes of an input file at a local path or a URL.

    Raises:
        OSError: it cannot be read, locally or on a store (missing, refused, the store failing):
            the environment's fault, never the data's (``pipeline.compose`` retries it).
    """
    if not store.is_remote(where):
        return Path(where).read_bytes()
    try:
        return store.read_bytes(str(where), options)
    except store.StoreError as exc:
        raise OSError(str(exc)) from None


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
    """One foreground: its files and size, and what its layout prescribes for it."""

    id: str  # AIM-500: the <id> of o_<id>; other layouts: the sample key's stem (``safe_key``)
    original: str  # absolute paths or URLs, as strings so tasks pickle small
    mask: str
    trimap: str | None  # None when the data set has no trimap for it
    height: int
    width: int
    key: str | None = None  # the sample keys' stem (``<key>-<k>``); None: AIM-500's o_<id>
    backgrounds: tuple[str, ...] = ()  # the layout's pairing (Adobe's lists), k-th is k's
    trimap_source: str = "aim500"  # what a validation sample's json names its trimap's source

    @property
    def stem(self) -> str:
        """The stem of its samples' keys: ``o_<id>`` for AIM-500."""
        return self.key or f"o_{self.id}"


@dataclass(frozen=True)
class Conversion:
    """An input that becomes 8-bit RGB (original) or grey (mask, trimap) only by converting."""

    file: str  # relative to the data dir, e.g. mask/o_x.png
    how: str  # what the decoder does to it, e.g. "16-bit grey PNG: round(v/257) to 8 bits"


@dataclass(frozen=True)
class Inputs:
    """Validated inputs, sorted by name (never directory order).

    A layout (``pipeline.layouts``) may prescribe the split (``split``: ``(train ids,
    validation ids, rule)``) and the pairing (every foreground's ``backgrounds``, drawn from
    ``bg_dir`` for train and ``val_bg_dir`` for validation); AIM-500 prescribes neither.
    """

    data_dir: Location  # an absolute local Path or a URL
    bg_dir: Location
    foregrounds: tuple[Foreground, ...]
    backgrounds: tuple[str, ...]  # file names in bg_dir
    ignored: tuple[str, ...]  # files in bg_dir that are not images by name (e.g. README)
    conversions: tuple[Conversion, ...] = ()  # converted originals, masks, trimaps, by file
    layout: str = "aim500"
    sources: tuple[tuple[str, str], ...] = ()  # (option, shown location) as index.json names them
    val_bg_dir: Location | None = None  # validation's backgrounds when not bg_dir (Adobe: VOC)
    split: tuple[tuple[str, ...], tuple[str, ...], str] | None = None  # the layout's own split
    paired: bool = False  # the layout pairs backgrounds itself (``Foreground.backgrounds``)

    def bg_dir_of(self, split: str) -> Location:
        """The folder ``split``'s backgrounds are read from."""
        return self.val_bg_dir if split == "validation" and self.val_bg_dir else self.bg_dir


def relative(root: Location, path: str | Path) -> str:
    """``path`` under ``root`` as index.json names converted inputs (``mask/o_x.png``); a path
    outside ``root`` as itself, shown (no credentials)."""
    text, base = str(path), str(root)
    if text.startswith(base) and text[len(base) : len(base) + 1] in ("/", "\\"):
        return text[len(base) :].lstrip("/\\")
    return shown(text)


def _files(folder: Location, options: Options | None) -> list[Location]:
    """The files directly in ``folder`` (hidden ones left out), sorted by name."""
    return [child(folder, name) for name, is_dir in store.listdir(folder, options)
            if not is_dir and not name.startswith(".")]  # fmt: skip


def _name(where: Location) -> PurePosixPath:
    """The file name of a path or URL, for its ``suffix`` and ``stem``."""
    return PurePosixPath(str(where).rsplit("/", 1)[-1])


def _listing(
    folder: Location,
    problems: list[str],
    options: Options | None,
    suffixes: tuple[str, ...] = IMAGE_SUFFIXES,
) -> dict[str, Location]:
    """Image files of ``folder`` by stem; non-image files become problems."""
    found: dict[str, Location] = {}
    for path in _files(folder, options):
        name = _name(path)
        if name.suffix.lower() not in suffixes:
            problems.append(f"{shown(path)}: not an image file (expected {', '.join(suffixes)})")
        elif name.stem in found:
            problems.append(f"{shown(path)}: a second file for {name.stem} "
                            f"(also {_name(found[name.stem]).name})")  # fmt: skip
        else:
            found[name.stem] = path
    return found


@dataclass(frozen=True)
class _Header:
    """What an image's header says (no pixels decoded)."""

    height: int
    width: int
    format: str  # JPEG or PNG
    mode: str  # Pillow's mode: L, RGB, CMYK, P, LA, RGBA, I;16 ...
    bit_depth: int  # bits per sample (PNG's IHDR; 8 for JPEG)
    color_type: int | None  # PNG's IHDR colour type: 0 grey, 2 RGB, 3 palette, 4 LA, 6 RGBA
    transparency: bool  # a PNG tRNS chunk
    icc: bool  # an embedded ICC profile


_PNG_TYPES = {0: "grey", 2: "RGB", 3: "palette", 4: "grey+alpha (LA)", 6: "RGBA"}


def _header(
    path: Location, options: Options | None = None, formats: tuple[str, ...] = ("JPEG", "PNG")
) -> _Header | str:
    """The image's header, or the reason it cannot be read (on a store: the first ranged GETs
    of the object, never all of it)."""
    try:
        with contextlib.ExitStack() as stack:
            source = path if isinstance(path, Path) else stack.enter_context(
                store.open_read(path, options))  # fmt: skip
            img = stack.enter_context(Image.open(source))
            if img.format not in formats:
                return f"is {img.format}, expected {' or '.join(formats)}"
            if img.format in ("TIFF", "WEBP") and img.mode not in ("L", "RGB", "RGBA"):
                return (f"is a {img.format} of mode {img.mode}; 8-bit grey, RGB or RGBA "
                        "expected: save it as a PNG")  # fmt: skip
            width, height = img.size
            depth, color_type = 8, None
            if img.format == "PNG":
                img.fp.seek(24)  # IHDR follows the 8-byte signature and its 8-byte chunk header
                depth, color_type = img.fp.read(2)
            icc = bool(img.info.get("icc_profile"))
            return _Header(
                height,
                width,
                img.format,
                img.mode,
                depth,
                color_type,
                "transparency" in img.info,
                icc,
            )
    except UnidentifiedImageError:
        return "not a readable image (unknown format or corrupt header)"
    except (OSError, ValueError) as exc:  # a store's StoreError is a ValueError
        return f"cannot be read ({getattr(exc, 'strerror', None) or exc})"


def _bits(h: _Header) -> list[str]:
    """The conversions a PNG's bit depth needs."""
    if h.bit_depth == 16:
        return ["16-bit: read at 16 bits, round(v/257) to 8 bits"]
    if h.bit_depth < 8 and h.color_type == 0:
        return [f"{h.bit_depth}-bit grey: scaled to 0..255 (v*255/{2**h.bit_depth - 1})"]
    return []


def _original_conversion(h: _Header) -> str | None:
    """How an original becomes 8-bit RGB, or None when it is 8-bit RGB already."""
    if h.format in ("TIFF", "WEBP"):  # 8-bit L, RGB or RGBA (``_header``)
        return {"L": f"greyscale {h.format}: decoded as RGB with R = G = B",
                "RGBA": f"{h.format} with alpha: its transparency is ignored (the matte is the "
                "mask)"}.get(h.mode)  # fmt: skip
    if h.format == "JPEG":
        if h.mode == "L":
            return "greyscale JPEG: decoded as RGB with R = G = B"
        if h.mode == "CMYK":
            icc = "; its ICC profile is not applied" if h.icc else ""
            return ("CMYK JPEG: read as Adobe-inverted CMYK, RGB = (255-C)(255-K)/255 "
                    f"(naive, no colour management{icc})")  # fmt: skip
        return None
    parts = _bits(h)
    if h.color_type in (0, 4):
        parts.append("greyscale PNG: decoded as RGB with R = G = B")
    elif h.color_type == 3:
        parts.append("palette PNG: decoded to its palette's colours")
    if h.color_type in (4, 6) or h.transparency:
        parts.append("its transparency is ignored (the matte is the mask)")
    return "; ".join(parts) or None


def _mask_header(h: _Header) -> tuple[bool, list[str]]:
    """``(needs a pixel check, conversions)`` of a mask (or trimap) from its header."""
    parts = _bits(h)
    if h.format in ("TIFF", "WEBP"):
        return h.mode != "L", parts  # RGB(A): are its colours grey, is its alpha opaque?
    if h.format == "JPEG" or h.color_type == 0:
        if h.transparency:  # one grey value marked transparent: the grey values are the matte
            parts.append("its tRNS transparency is ignored: the grey values are the matte")
        return False, parts
    return True, parts  # palette, RGB, LA, RGBA: are its colours grey, is its alpha opaque?


def _trimap_conversion(h: _Header) -> list[str]:
    """How a trimap becomes 8-bit grey (its values are checked after decoding, in the build)."""
    parts = _bits(h)
    if h.format in ("TIFF", "WEBP") and h.mode != "L":
        parts.append(f"{h.mode} {h.format}: decoded to grey, transparency ignored")
    elif h.color_type == 3:
        parts.append("palette PNG: decoded to its palette's greys")
    elif h.color_type in (2, 4, 6):
        parts.append(f"{_PNG_TYPES[h.color_type]} PNG: decoded to grey, transparency ignored")
    return parts


def _mask_pixels(
    path: Location, h: _Header, options: Options | None = None
) -> tuple[str | None, str | None]:
    """``(problem, conversion)`` of a mask that is not plain grey, from its pixels.

    The matte is unambiguous when every pixel is grey (R = G = B) and any alpha is fully
    opaque: then it is that grey. A varying alpha could be the matte as well as the greys, and
    colours are no matte at all; both are refused.
    """
    kind = _PNG_TYPES.get(h.color_type, h.mode)
    a_kind = f"{'an' if kind.startswith('R') else 'a'} {kind}"
    try:
        arr = decode_unchanged(read_input(path, options))
    except (OSError, ValueError) as exc:
        return f"cannot be decoded ({exc})", None
    if arr.ndim == 2:  # decoded plain grey after all: nothing to choose
        return None, None
    opaque = np.iinfo(arr.dtype).max
    if arr.shape[2] == 4 and (transparent := int((arr[..., 3] != opaque).sum())):
        return (
            f"mask is {a_kind} {h.format} whose alpha channel is not fully opaque ({transparent} "
            "pixels): it is ambiguous whether the matte is its grey values or its alpha; "
            "save the matte alone as a single-channel greyscale PNG (mode L)",
            None,
        )
    rgb = arr[..., :3]
    colour = (rgb[..., 0] != rgb[..., 1]) | (rgb[..., 1] != rgb[..., 2])
    if colour.any():
        y, x = (int(i[0]) for i in np.nonzero(colour))
        return (
            f"mask is {a_kind} {h.format} with colours that are not grey "
            f"({int(colour.sum())} pixels, e.g. RGB {tuple(int(c) for c in rgb[y, x])} "
            f"at x={x}, y={y}): a matte is grey; "
            "save it as a single-channel greyscale PNG (mode L)",
            None,
        )
    parts = []
    if h.color_type == 3:
        parts.append("palette PNG with grey entries: alpha = each pixel's palette grey, "
                     "not its index")  # fmt: skip
    elif h.color_type in (2, 6) or h.format != "PNG":
        parts.append(f"{kind} {h.format} with R = G = B: alpha = that grey")
    if arr.shape[2] == 4:
        parts.append(f"{'its' if parts else kind + ' PNG:'} fully opaque alpha is dropped")
    return None, "; ".join(parts)


def _sniff(path: Location, options: Options | None = None) -> str | None:
    """None when ``path`` starts like a JPEG or PNG, else the reason."""
    try:
        if isinstance(path, Path):
            with open(path, "rb") as f:
                head = f.read(8)
        else:
            head = store.read_range(path, 0, 8, options)
    except (OSError, ValueError) as exc:  # a store's StoreError is a ValueError
        return f"cannot be read ({getattr(exc, 'strerror', None) or exc})"
    return None if image_kind(head) else "not a JPEG or PNG (bad magic bytes)"


def scan_inputs(
    data_dir: str | Path, bg_dir: str | Path, threads: int = 16, options: Options | None = None
) -> Inputs:
    """List and check the foregrounds and backgrounds.

    Args:
        data_dir: AIM-500-style folder with ``original/``, ``mask/`` and optionally ``trimap/``
            (a local path or a store URL).
        bg_dir: folder of background photos (JPEG or PNG), a local path or a store URL.
        threads: header reads run in this many threads (they are I/O bound).
        options: the store's options (``--storage-option``), for URLs.

    Returns:
        ``Inputs`` sorted by file name.

    Raises:
        InputError: listing every missing folder, unpaired or unreadable file, size mismatch,
            and every mask whose matte is ambiguous (an alpha that is not fully opaque) or not
            grey (a palette or RGB mask with colours).
        shards.store.StoreError: a store refuses a folder (403) or its bucket is missing.
        shards.store.StoreUnavailable: a store failed in transit.
    """
    data_dir, bg_dir = location(data_dir), location(bg_dir)
    problems: list[str] = []
    for folder, what in ((data_dir, "--data-dir"), (child(data_dir, "original"), "originals"),
                         (child(data_dir, "mask"), "masks"), (bg_dir, "--bg-dir")):  # fmt: skip
        if not store.is_dir(folder, options):
            problems.append(f"{shown(folder)}: missing folder ({what})")
    if problems:
        raise InputError("inputs are missing", problems)

    originals = _listing(child(data_dir, "original"), problems, options)
    masks = _listing(child(data_dir, "mask"), problems, options)
    trimap_dir = child(data_dir, "trimap")
    trimaps = _listing(trimap_dir, problems, options) if store.is_dir(trimap_dir, options) else {}
    for stem in sorted(originals.keys() - masks.keys()):
        problems.append(f"{shown(originals[stem])}: no mask (expected mask/{stem}.png)")
    for stem in sorted(masks.keys() - originals.keys()):
        problems.append(f"{shown(masks[stem])}: no original (expected original/{stem}.jpg)")
    for stem in sorted(originals.keys() | masks.keys()):
        if not stem.startswith("o_") or len(stem) <= 2 or "." in stem:
            problems.append(f"{shown(originals.get(stem) or masks[stem])}: name is not o_<id>")

    paired = sorted(originals.keys() & masks.keys())
    entries = [Foreground(stem[2:], str(originals[stem]), str(masks[stem]),
                          str(trimaps[stem]) if stem in trimaps else None, 0, 0)
               for stem in paired]  # fmt: skip
    backgrounds, ignored = list_backgrounds(bg_dir, options)
    foregrounds, conversions = examine(entries, data_dir, problems, options, threads)
    problems += background_problems(backgrounds, options, threads)
    if not paired and not problems:
        problems.append(f"{shown(child(data_dir, 'original'))}: no foregrounds found")
    if not backgrounds:
        problems.append(f"{shown(bg_dir)}: no background images (.jpg, .jpeg, .png) found")
    stop_on(problems)
    return Inputs(
        data_dir=data_dir,
        bg_dir=bg_dir,
        foregrounds=tuple(foregrounds),
        backgrounds=tuple(_name(p).name for p in backgrounds),
        ignored=ignored,
        conversions=tuple(conversions),
        sources=(("data_dir", shown(data_dir)), ("bg_dir", shown(bg_dir))),
    )


def examine(
    entries: list[Foreground],
    data_dir: Location,
    problems: list[str],
    options: Options | None = None,
    threads: int = 16,
    formats: tuple[str, ...] = ("JPEG", "PNG"),
) -> tuple[list[Foreground], list[Conversion]]:
    """Read the headers of paired foregrounds (sizes 0 in ``entries``) and check them.

    Appends to ``problems`` every unreadable file, size mismatch and mask whose matte is
    ambiguous or not grey, in ``entries`` order; returns the foregrounds with their sizes and
    the conversions their files need (``file`` relative to ``data_dir``).
    """
    to_read = [e.original for e in entries] + [e.mask for e in entries]
    to_read += [e.trimap for e in entries if e.trimap]
    with ThreadPoolExecutor(threads) as pool:
        headers = dict(zip(to_read, pool.map(lambda p: _header(_location(p), options, formats),
                                             to_read), strict=True))  # fmt: skip
        looked_at = [e.mask for e in entries if isinstance(h := headers[e.mask], _Header)
                     and _mask_header(h)[0]]  # fmt: skip
        pixels = dict(zip(looked_at, pool.map(lambda m: _mask_pixels(m, headers[m], options),
                                              looked_at), strict=True))  # fmt: skip

    foregrounds, conversions = [], []

    def converted(path: str, parts: list[str | None]) -> None:
        if how := "; ".join(p for p in parts if p):
            conversions.append(Conversion(relative(data_dir, path), how))

    for entry in entries:
        o_path, m_path, t_path = entry.original, entry.mask, entry.trimap
        o_head, m_head = headers[o_path], headers[m_path]
        t_head = headers[t_path] if t_path else None
        for path, head in ((o_path, o_head), (m_path, m_head), (t_path, t_head)):
            if isinstance(head, str):
                problems.append(f"{shown(path)}: {head}")
        if isinstance(o_head, str) or isinstance(m_head, str):
            continue
        size = (o_head.height, o_head.width)
        if (m_head.height, m_head.width) != size:
            problems.append(f"{shown(m_path)}: mask is {m_head.width}x{m_head.height} but "
                            f"original is {size[1]}x{size[0]}")  # fmt: skip
        if isinstance(t_head, _Header) and (t_head.height, t_head.width) != size:
            problems.append(f"{shown(t_path)}: trimap is {t_head.width}x{t_head.height} but "
                            f"original is {size[1]}x{size[0]}")  # fmt: skip
        problem, how = pixels.get(m_path, (None, None))
        if problem:
            problems.append(f"{shown(m_path)}: {problem}")
        converted(o_path, [_original_conversion(o_head)])
        converted(m_path, [*_mask_header(m_head)[1], how])
        if isinstance(t_head, _Header):
            converted(t_path, _trimap_conversion(t_head))
        foregrounds.append(replace(entry, height=size[0], width=size[1]))
    return foregrounds, conversions


def _location(text: str) -> Location:
    """A path string back to a ``Path`` (local) or kept as a URL (for ``_header``)."""
    return text if store.is_remote(text) else Path(text)


def list_backgrounds(
    bg_dir: Location, options: Options | None = None
) -> tuple[list[Location], tuple[str, ...]]:
    """The image files of a backgrounds folder (by suffix), sorted, and the names of the other
    files in it (ignored, e.g. a README)."""
    files = _files(bg_dir, options)
    images = [p for p in files if _name(p).suffix.lower() in IMAGE_SUFFIXES]
    return images, tuple(_name(p).name for p in files if _name(p).suffix.lower()
                         not in IMAGE_SUFFIXES)  # fmt: skip


def stop_on(problems: list[str]) -> None:
    """Raise ``InputError`` listing ``problems`` when there are any: nothing has been written."""
    if problems:
        raise InputError(
            f"{len(problems)} problem(s) with the inputs; nothing was written", problems
        )


def background_problems(
    backgrounds: list[Location], options: Options | None = None, threads: int = 16
) -> list[str]:
    """Every background whose first bytes are not a JPEG's or a PNG's, or that cannot be read."""
    with ThreadPoolExecutor(threads) as pool:
        sniffed = list(pool.map(lambda p: _sniff(p, options), backgrounds))
    return [f"{shown(path)}: {why}" for path, why in zip(backgrounds, sniffed, strict=True) if why]
