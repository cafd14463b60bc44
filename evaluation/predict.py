"""``indexnet predict``: alpha mattes for your own photos, one image or a folder at a time.

An image and its trimap go in; an 8-bit grey alpha PNG comes out and, on request, the cut-out
foreground as an RGBA PNG beside it (the image's RGB, the predicted alpha as A).

- Images and trimaps are read by ``evaluation.images`` (EXIF-upright; a trimap is
  single-channel and quantised to 0/128/255).
- Folder mode pairs files by name without extension (as ``evaluation.score`` does) and reads
  every pair before predicting any: missing and extra trimaps, unreadable files, sizes that
  differ and colour trimaps are all listed at once, and nothing is written.
- Every output is written atomically (``shards.atomic``): an interrupted run leaves
  whole files or none.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from evaluation.images import read_pair
from evaluation.score import list_images, shorten, unmatched
from shards.atomic import atomic_file
from training.checkpoint import load_for_inference
from training.inference import predict_alpha

CUTOUT_SUFFIX = "_cutout"  # alpha.png -> alpha_cutout.png
_LIST_LIMIT = 20  # bad pairs shown before "... and N more"


@dataclass(frozen=True)
class Prediction:
    """One image's prediction and where it was written.

    Attributes:
        name: the image's file name without extension.
        image: the image read.
        trimap: its trimap.
        alpha: the 8-bit grey alpha PNG written.
        cutout: the RGBA cutout PNG written, or None.
        size: (height, width) of the upright image.
        quantised: trimap pixels that were not 0/128/255 and were quantised (``TRIMAP_RULE``).
        seconds: wall time for this image: reading, the network, writing.
    """

    name: str
    image: Path
    trimap: Path
    alpha: Path
    cutout: Path | None
    size: tuple[int, int]
    quantised: int
    seconds: float


# -- writing ----------------------------------------------------------------------------------


def cutout(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The foreground cut out: the image's colours with the alpha as a fourth channel.

    Args:
        rgb: (H, W, 3) uint8 RGB.
        alpha: (H, W) uint8 alpha.

    Returns:
        (H, W, 4) uint8 RGBA.
    """
    if rgb.shape[:2] != alpha.shape or rgb.shape[2:] != (3,):
        raise ValueError(
            f"cutout takes (H, W, 3) RGB and (H, W) alpha, got {rgb.shape} and {alpha.shape}"
        )
    return np.dstack([rgb, alpha])


def cutout_path(alpha_path: Path) -> Path:
    """Where the cutout of ``dir/name.png`` goes: ``dir/name_cutout.png``."""
    return alpha_path.with_name(f"{alpha_path.stem}{CUTOUT_SUFFIX}.png")


def png_bytes(pixels: np.ndarray) -> bytes:
    """(H, W) grey or (H, W, 4) RGBA uint8 -> the PNG file's bytes (Pillow's encoder): the one
    encoding of predictions, on disk (``write_png``) and over HTTP (``evaluation.serve``)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(path: Path, pixels: np.ndarray) -> None:
    """Write (H, W) grey or (H, W, 4) RGBA uint8 as a PNG, atomically (``shards.atomic``)."""
    with atomic_file(path) as f:  # interrupted or failed: no half-written file is left
        f.write(png_bytes(pixels))


# -- predicting -------------------------------------------------------------------------------


def resolve_device(name: str | torch.device) -> torch.device:
    """``--device``'s value as a torch device, checked to exist here.

    Raises:
        ValueError: not a device name, or CUDA asked for where there is none.
    """
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {name!r}: not a device; use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"--device {name}: CUDA is not available here (torch {torch.__version__}); "
            "use --device cpu"
        )
    return device


def _check_options(model: torch.nn.Module | str | Path, max_pixels: int | None) -> None:
    """Cheap checks before any image is read, so a typo fails at once."""
    if isinstance(model, (str, Path)) and not Path(model).is_file():
        raise ValueError(f"{model}: no such checkpoint file")
    if max_pixels is not None and max_pixels < 1:
        raise ValueError(f"--max-pixels must be >= 1, got {max_pixels}")


def _ready(model: torch.nn.Module | str | Path, device: torch.device) -> torch.nn.Module:
    if isinstance(model, (str, Path)):
        model = load_for_inference(model)
    return model.to(device)


def _check_not_inputs(option: str, outputs: list[Path], inputs: list[Path]) -> None:
    taken = {path.resolve() for path in inputs}
    clash = [str(path) for path in outputs if path.resolve() in taken]
    if clash:
        raise ValueError(f"{option}: {', '.join(clash)} is an input; write the output elsewhere")


def _predict_and_write(
    net: torch.nn.Module,
    pair: tuple[str, Path, Path],
    alpha_path: Path,
    with_cutout: bool,
    device: torch.device,
    max_pixels: int | None,
    pixels: tuple[np.ndarray, np.ndarray, int] | None = None,
) -> Prediction:
    """Predict one ``(name, image, trimap)`` pair (``pixels``: its ``read_pair``, if read)."""
    start = time.perf_counter()
    name, image, trimap = pair
    rgb, marks, quantised = pixels if pixels is not None else read_pair(image, trimap)
    tiling = {} if max_pixels is None else {"max_pixels": max_pixels}
    alpha = predict_alpha(net, rgb, marks, device, **tiling)
    write_png(alpha_path, alpha)
    written = cutout_path(alpha_path) if with_cutout else None
    if written is not None:
        write_png(written, cutout(rgb, alpha))
    seconds = time.perf_counter() - start
    return Prediction(name, image, trimap, alpha_path, written, marks.shape, quantised, seconds)


def predict_file(
    model: torch.nn.Module | str | Path,
    image: str | Path,
    trimap: str | Path,
    out: str | Path,
    with_cutout: bool = False,
    device: str | torch.device = "cpu",
    max_pixels: int | None = None,
) -> Prediction:
    """Predict one image's alpha and write it as an 8-bit grey PNG.

    Args:
        model: a network in eval mode (moved to ``device``), or a checkpoint file (ours or
            the official release's), loaded once the inputs have been read and checked.
        image: the photo (PNG, JPEG, BMP, TIFF, WebP); EXIF orientation applied.
        trimap: its single-channel trimap at the same size (``read_trimap``).
        out: the alpha PNG to write; its folder is created.
        with_cutout: also write the RGBA cutout to ``<out stem>_cutout.png`` beside it.
        device: where to run the network.
        max_pixels: images with more pixels are predicted in tiles (None: ``predict_alpha``'s
            default).

    Returns:
        What was predicted and written.

    Raises:
        ValueError: a bad option, checkpoint, image or trimap, or sizes that differ; nothing
            is written then.
    """
    image, trimap, out = Path(image), Path(trimap), Path(out)
    device = resolve_device(device)
    _check_options(model, max_pixels)
    if out.suffix.lower() != ".png":
        raise ValueError(f"-o {out}: name a .png file (the alpha is written as an 8-bit grey PNG)")
    if out.is_dir():
        raise ValueError(f"-o {out} is a folder; name the alpha PNG to write")
    _check_not_inputs("-o", [out, cutout_path(out)] if with_cutout else [out], [image, trimap])
    pixels = read_pair(image, trimap)  # before the model loads: a bad input fails at once
    net = _ready(model, device)
    out.parent.mkdir(parents=True, exist_ok=True)
    pair = (image.stem, image, trimap)
    return _predict_and_write(net, pair, out, with_cutout, device, max_pixels, pixels)


def match_pairs(images: Path, trimaps: Path) -> list[tuple[str, Path, Path]]:
    """``(name, image, trimap)`` for every image, sorted by name, matched without extension.

    Raises:
        ValueError: a folder is missing or holds no image, two files share a name, or an
            image has no trimap or a trimap no image (every one listed).
    """
    found = list_images(images, "--images")
    marks = list_images(trimaps, "--trimaps")
    problems = unmatched(f"--trimaps {trimaps}", marks, found)
    if problems:
        raise ValueError(
            f"every image needs a trimap of the same name (matched without extension; "
            f"--images {images} has {len(found)}):\n  " + "\n  ".join(problems)
        )
    return [(name, found[name], marks[name]) for name in sorted(found)]


def predict_folder(
    model: torch.nn.Module | str | Path,
    images: str | Path,
    trimaps: str | Path,
    out: str | Path,
    with_cutout: bool = False,
    device: str | torch.device = "cpu",
    max_pixels: int | None = None,
    on_image: Callable[[int, int, Prediction], None] | None = None,
) -> list[Prediction]:
    """Predict every image of a folder with its trimap: ``out/<name>.png`` (8-bit grey).

    Every pair is read and checked first; only when all are good is the model loaded and
    anything written.

    Args:
        model: a network in eval mode (moved to ``device``), or a checkpoint file loaded
            once every pair has been checked.
        images: a folder of photos; other files are ignored.
        trimaps: their trimaps, named as the images (any image extension).
        out: the folder to write to (created).
        with_cutout: also write ``out/<name>_cutout.png`` (RGBA).
        device: where to run the network.
        max_pixels: images with more pixels are predicted in tiles (None: ``predict_alpha``'s
            default).
        on_image: called as ``on_image(done, total, prediction)`` after each image.

    Returns:
        One record per image, in name order.

    Raises:
        ValueError: a bad option or checkpoint, missing or extra trimaps, unreadable files,
            sizes that differ, colour trimaps (every bad pair listed); nothing is written then.
    """
    images, trimaps, out = Path(images), Path(trimaps), Path(out)
    device = resolve_device(device)
    _check_options(model, max_pixels)
    pairs = match_pairs(images, trimaps)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; folder mode writes into a folder")
    _check_not_inputs("--out", [out], [images, trimaps])
    names = {name for name, _, _ in pairs}
    clash = sorted(name for name in names if with_cutout and f"{name}{CUTOUT_SUFFIX}" in names)
    if clash:
        raise ValueError(
            f"--cutout would write over the alpha of an image named <name>{CUTOUT_SUFFIX}: "
            f"{shorten(clash)}; rename those images or leave out --cutout"
        )
    problems = []
    for _, image, trimap in pairs:
        try:
            read_pair(image, trimap)
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        more = len(problems) - _LIST_LIMIT
        listed = "\n  ".join(problems[:_LIST_LIMIT]) + (
            f"\n  ... and {more} more" if more > 0 else ""
        )
        raise ValueError(
            f"{len(problems)} of {len(pairs)} pair(s) cannot be predicted; nothing was "
            f"written:\n  {listed}"
        )
    net = _ready(model, device)
    out.mkdir(parents=True, exist_ok=True)
    predictions = []
    for done, pair in enumerate(pairs, 1):
        prediction = _predict_and_write(
            net, pair, out / f"{pair[0]}.png", with_cutout, device, max_pixels
        )
        predictions.append(prediction)
        if on_image is not None:
            on_image(done, len(pairs), prediction)
    return predictions
