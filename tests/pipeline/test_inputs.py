"""Input validation of ``pipeline build``: every offender named, all at once, nothing written.

Each test breaks a private copy of the sample data (``sample_copy``) and checks that the error
names the offending file(s) and that ``--out`` was never created. The CLI answers bad inputs
with exit code 2.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from configs import load_config
from indexnet_cli import app
from pipeline.build import build, default_out, prepare
from pipeline.inputs import Conversion, InputError, scan_inputs
from pipeline.plan import split_foregrounds
from shards.cluster import ClusterOptions
from shards.codec import decode_color, decode_grey
from shards.index import read_index
from shards.info import describe
from shards.reader import raw_samples, read_samples
from shards.verify import verify

runner = CliRunner()
SMALL = ["data.bgs_per_train_fg=6", "data.bgs_per_val_fg=4", "data.samples_per_shard=8"]
NEEDED = 5 * 6 + 1 * 4  # backgrounds the small config needs for the sample data's seeded split


def _cfg(*extra: str):
    return load_config(None, [*SMALL, *extra])


def _ids(data_dir: Path) -> list[str]:
    return sorted(p.stem[2:] for p in (data_dir / "original").iterdir())


def _validation_ids(data_dir: Path, val_count: int | None = None) -> tuple[str, ...]:
    data = _cfg().data
    split = split_foregrounds(
        _ids(data_dir), data.validation_ids, data.seed, data.val_fraction, val_count
    )
    assert split.rule == "seeded"
    return split.validation


def _cli(data_dir: Path, bg_dir: Path, out: Path | None, *extra: str):
    args = ["pipeline", "build", "--data-dir", str(data_dir), "--bg-dir", str(bg_dir)]
    args += ["--out", str(out)] if out is not None else []
    args += ["--bgs-per-train-fg", "6", "--bgs-per-val-fg", "4", "--samples-per-shard", "8"]
    return runner.invoke(app, [*args, "--workers", "1", *extra])


def _build_error(data_dir: Path, bg_dir: Path, out: Path, cfg=None, **kwargs) -> InputError:
    """The InputError of a real ``build`` call, after checking that nothing was written."""
    with pytest.raises(InputError) as info:
        build(data_dir, bg_dir, cfg or _cfg(), out, ClusterOptions(workers=1), **kwargs)
    assert not out.exists()
    assert not default_out(data_dir).exists()
    return info.value


def _nothing_written(result, out: Path, data_dir: Path) -> None:
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "nothing was written" in result.output
    assert not out.exists() and not default_out(data_dir).exists()


def _write_png(path: Path, arr: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    path.write_bytes(buf.tobytes())


def _first(data_dir: Path, sub: str) -> Path:
    return sorted((data_dir / sub).iterdir())[0]


# --- missing folders ------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["data-dir", "original", "mask", "bg-dir"])
def test_missing_folder_is_named(sample_copy, tmp_path, missing):
    data_dir, bg_dir = sample_copy
    target = {
        "data-dir": tmp_path / "nowhere",
        "original": data_dir / "original",
        "mask": data_dir / "mask",
        "bg-dir": tmp_path / "no-backgrounds",
    }[missing]
    if missing in ("original", "mask"):
        for path in target.iterdir():
            path.unlink()
        target.rmdir()
    out = tmp_path / "out"
    use_data = target if missing == "data-dir" else data_dir
    use_bg = target if missing == "bg-dir" else bg_dir
    result = _cli(use_data, use_bg, out)
    assert result.exit_code == 2, result.output
    assert f"{target.resolve()}: missing folder" in result.output
    assert not out.exists() and not default_out(use_data).exists()


def test_missing_folders_are_listed_together(tmp_path):
    data_dir, bg_dir = tmp_path / "data", tmp_path / "bgs"
    data_dir.mkdir()
    with pytest.raises(InputError) as info:
        scan_inputs(data_dir, bg_dir)
    assert info.value.problems == [
        f"{data_dir / 'original'}: missing folder (originals)",
        f"{data_dir / 'mask'}: missing folder (masks)",
        f"{bg_dir}: missing folder (--bg-dir)",
    ]


# --- foreground files -----------------------------------------------------------------------


def test_unpaired_original_and_mask_are_listed_in_one_error(sample_copy, tmp_path):
    data_dir, bg_dir = sample_copy
    ids = _ids(data_dir)
    lonely_original = data_dir / "original" / f"o_{ids[0]}.jpg"
    lonely_mask = data_dir / "mask" / f"o_{ids[1]}.png"
    (data_dir / "mask" / f"o_{ids[0]}.png").unlink()
    (data_dir / "original" / f"o_{ids[1]}.jpg").unlink()
    out = tmp_path / "out"
    result = _cli(data_dir, bg_dir, out)
    _nothing_written(result, out, data_dir)
    assert f"{lonely_original}: no mask (expected mask/o_{ids[0]}.png)" in result.output
    assert f"{lonely_mask}: no original (expected original/o_{ids[1]}.jpg)" in result.output
    assert "2 problem(s)" in result.output


def test_mask_and_original_of_different_sizes(sample_copy, tmp_path):
    data_dir, bg_dir = sample_copy
    original = _first(data_dir, "original")
    h, w = cv2.imread(str(original)).shape[:2]
    mask = data_dir / "mask" / f"{original.stem}.png"
    _write_png(mask, np.zeros((h + 3, w), np.uint8))
    error = _build_error(data_dir, bg_dir, tmp_path / "out")
    assert error.problems == [f"{mask}: mask is {w}x{h + 3} but original is {w}x{h}"]


def test_trimap_of_a_different_size(sample_copy, tmp_path):
    data_dir, bg_dir = sample_copy
    original = _first(data_dir, "original")
    h, w = cv2.imread(str(original)).shape[:2]
    trimap = data_dir / "trimap" / f"{original.stem}.png"
    _write_png(trimap, np.zeros((h, w - 1), np.uint8))
    error = _build_error(data_dir, bg_dir, tmp_path / "out")
    assert error.problems == [f"{trimap}: trimap is {w - 1}x{h} but original is {w}x{h}"]


def test_non_image_file_in_original(sample_copy, tmp_path):
    data_dir, bg_dir = sample_copy
    notes = data_dir / "original" / "notes.txt"
    notes.write_text("shot on a Tuesday\n")
    out = tmp_path / "out"
    result = _cli(data_dir, bg_dir, out)
    _nothing_written(result, out, data_dir)
    assert f"{notes}: not an image file" in result.output


def test_badly_named_and_duplicate_foregrounds(sample_copy, tmp_path):
    data_dir, bg_dir = sample_copy
    original = _first(data_dir, "original")
    twin = original.with_suffix(".png")
    twin.write_bytes(b"\x89PNG\r\n\x1a\n")
    for sub, ext in (("original", ".jpg"), ("mask", ".png")):
        src = data_dir / sub / f"{original.stem}{ext}"
        (data_dir / sub / f"x_odd{ext}").write_bytes(src.read_bytes())
    error = _build_error(data_dir, bg_dir, tmp_path / "out")
    assert any(str(twin) in p and "a second file" in p for p in error.problems)
    assert f"{data_dir / 'original' / 'x_odd.jpg'}: name is not o_<id>" in error.problems


def test_garbage_jpgs_in_original_and_bg_dir_are_listed(sample_copy, tmp_path):
    data_dir, bg_dir = sample_copy
    original = _first(data_dir, "original")
    original.write_bytes(b"this is not a JPEG at all")
    bad_bgs = [bg_dir / "bg_garbage.jpg", sorted(bg_dir.iterdir())[5]]
    for path in bad_bgs:
        path.write_bytes(b"GIF89a, or anything but a JPEG")
    out = tmp_path / "out"
    result = _cli(data_dir, bg_dir, out)
    _nothing_written(result, out, data_dir)
    assert f"{original}: not a readable image" in result.output
    for path in bad_bgs:
        assert f"{path}: not a JPEG or PNG (bad magic bytes)" in result.output
    assert "3 problem(s)" in result.output


def test_several_problems_are_all_listed_in_one_error(sample_copy, tmp_path):
    data_dir, bg_dir = sample_copy
    ids = _ids(data_dir)
    (data_dir / "mask" / f"o_{ids[0]}.png").unlink()  # original without mask
    mask = data_dir / "mask" / f"o_{ids[1]}.png"
    _write_png(mask, np.zeros((7, 9), np.uint8))  # size mismatch
    (data_dir / "original" / "notes.txt").write_text("x")  # not an image
    garbage_original = data_dir / "original" / f"o_{ids[2]}.jpg"
    garbage_original.write_bytes(b"garbage")  # unreadable
    garbage_bg = bg_dir / "bg_000007.jpg"
    garbage_bg.write_bytes(b"garbage")  # bad magic
    error = _build_error(data_dir, bg_dir, tmp_path / "out")
    assert len(error.problems) == 5, error.problems
    message = str(error)
    assert message.startswith("5 problem(s) with the inputs; nothing was written")
    for path in (data_dir / "original" / f"o_{ids[0]}.jpg", mask,
                 data_dir / "original" / "notes.txt", garbage_original, garbage_bg):  # fmt: skip
        assert str(path) in message


def test_problems_of_every_stage_are_listed_together(sample_copy, tmp_path):
    data_dir, bg_dir = sample_copy
    (fid,) = _validation_ids(data_dir)
    trimap = data_dir / "trimap" / f"o_{fid}.png"
    _write_png(trimap, np.full(cv2.imread(str(trimap), 0).shape, 64, np.uint8))
    for extra in sorted(bg_dir.iterdir())[10:]:
        extra.unlink()
    error = _build_error(data_dir, bg_dir, tmp_path / "out")
    assert any(str(trimap) in p for p in error.problems)
    assert any("unique backgrounds needed" in p for p in error.problems)


# --- validation trimaps ---------------------------------------------------------------------


def test_validation_foreground_without_trimap(sample_copy, tmp_path):
    data_dir, bg_dir = sample_copy
    validation = _validation_ids(data_dir, val_count=2)
    assert len(validation) == 2
    missing = data_dir / "trimap" / f"o_{validation[1]}.png"
    missing.unlink()
    out = tmp_path / "out"
    result = _cli(data_dir, bg_dir, out, "--val-count", "2")
    _nothing_written(result, out, data_dir)
    assert f"{missing}: missing (validation foregrounds are scored" in result.output


def test_train_foreground_needs_no_trimap(sample_copy):
    data_dir, bg_dir = sample_copy
    validation = _validation_ids(data_dir)
    train_id = next(i for i in _ids(data_dir) if i not in validation)
    (data_dir / "trimap" / f"o_{train_id}.png").unlink()
    _, plan = prepare(data_dir, bg_dir, _cfg())
    assert train_id in plan.split.train


def test_validation_trimap_with_other_values(sample_copy, tmp_path):
    data_dir, bg_dir = sample_copy
    (fid,) = _validation_ids(data_dir)
    trimap = data_dir / "trimap" / f"o_{fid}.png"
    values = cv2.imread(str(trimap), cv2.IMREAD_GRAYSCALE)
    values[:4, :4] = 64
    values[-1, -1] = 200
    _write_png(trimap, values)
    error = _build_error(data_dir, bg_dir, tmp_path / "out")
    assert error.problems == [f"{trimap}: trimap values must be 0/128/255, found [64, 200]"]


# --- backgrounds ----------------------------------------------------------------------------


def test_too_few_backgrounds_then_allow_bg_reuse_succeeds(sample_copy, tmp_path):
    data_dir, bg_dir = sample_copy
    for extra in sorted(bg_dir.iterdir())[10:]:
        extra.unlink()
    (bg_dir / "README").write_text("not a background; ignored")
    out = tmp_path / "out"
    result = _cli(data_dir, bg_dir, out)
    _nothing_written(result, out, data_dir)
    assert f"{bg_dir}: {NEEDED} unique backgrounds needed" in result.output
    assert "10 found" in result.output and "pass --allow-bg-reuse" in result.output

    result = _cli(data_dir, bg_dir, out, "--allow-bg-reuse")
    assert result.exit_code == 0, result.output
    index = read_index(out)
    assert index.meta["composition"]["bg_reuse"] is True
    assert index.meta["counts"]["written"] == index.samples() == NEEDED


def test_a_single_background_is_too_few_even_with_reuse(sample_copy, tmp_path):
    data_dir, bg_dir = sample_copy
    for extra in sorted(bg_dir.iterdir())[1:]:
        extra.unlink()
    error = _build_error(data_dir, bg_dir, tmp_path / "out", allow_bg_reuse=True)
    assert len(error.problems) == 1
    assert error.problems[0].startswith(f"{bg_dir}: {NEEDED} unique backgrounds needed")
    assert "1 found" in error.problems[0] and "at least 2 with --allow-bg-reuse" in str(error)


def test_no_backgrounds_at_all(sample_copy, tmp_path):
    data_dir, bg_dir = sample_copy
    for path in bg_dir.iterdir():
        path.unlink()
    error = _build_error(data_dir, bg_dir, tmp_path / "out")
    assert error.problems == [f"{bg_dir}: no background images (.jpg, .jpeg, .png) found"]


# --- the split ------------------------------------------------------------------------------


IDS = [f"{i:02d}aa" for i in range(10)]


def test_split_uses_the_reference_list_when_listed_ids_are_present():
    split = split_foregrounds(IDS, ["03aa", "07aa", "zzzz"], seed=5, val_fraction=0.5,
                              val_count=4)  # fmt: skip
    assert split.rule == "reference-list"
    assert split.validation == ("03aa", "07aa") and split.listed_missing == ("zzzz",)
    assert split.train == tuple(i for i in IDS if i not in ("03aa", "07aa"))


def test_split_is_seeded_and_deterministic_otherwise():
    first = split_foregrounds(IDS, ["zzzz"], seed=3, val_fraction=0.2, val_count=None)
    assert first.rule == "seeded" and first.listed_missing == ()
    assert len(first.validation) == 2 and not set(first.validation) & set(first.train)
    assert sorted(first.train + first.validation) == IDS
    assert split_foregrounds(list(reversed(IDS)), [], 3, 0.2, None) == first
    assert len(split_foregrounds(IDS, [], 3, 0.2, 7).validation) == 7
    others = {split_foregrounds(IDS, [], seed, 0.2, None).validation for seed in range(8)}
    assert len(others) > 1


@pytest.mark.parametrize("count", [0, -1, 10, 11])
def test_split_val_count_out_of_range(count):
    with pytest.raises(InputError) as info:
        split_foregrounds(IDS, [], 0, 0.1, count)
    (problem,) = info.value.problems
    assert re.fullmatch(rf"--val-count {count} must be (in 1\.\.9|between 1 and 9) .*", problem)
    assert problem.endswith("for 10 foregrounds")


def test_split_with_every_foreground_listed():
    with pytest.raises(InputError, match="every foreground is a validation id"):
        split_foregrounds(IDS[:3], IDS[:3], 0, 0.1, None)


@pytest.mark.parametrize("count", ["0", "6"])
def test_cli_val_count_out_of_range_exits_2(sample_copy, tmp_path, count):
    data_dir, bg_dir = sample_copy
    out = tmp_path / "out"
    result = _cli(data_dir, bg_dir, out, "--val-count", count)
    assert result.exit_code == 2, result.output
    assert re.search(
        rf"--val-count {count} must be (in 1\.\.5|between 1 and 5) for 6 fore", result.output
    )
    assert not out.exists()


def test_a_single_foreground_cannot_be_split(sample_copy, tmp_path):
    data_dir, bg_dir = sample_copy
    for stem in _ids(data_dir)[1:]:
        for sub, ext in (("original", "jpg"), ("mask", "png"), ("trimap", "png")):
            (data_dir / sub / f"o_{stem}.{ext}").unlink()
    error = _build_error(data_dir, bg_dir, tmp_path / "out")
    assert error.problems == [f"{data_dir}: 2 or more foregrounds needed, found 1"]


# --- unusual masks and originals: converted (and recorded), or refused by name --------------


def _save(path: Path, img: Image.Image, **kwargs) -> None:
    buf = io.BytesIO()
    img.save(buf, "PNG" if path.suffix == ".png" else "JPEG", **kwargs)
    path.write_bytes(buf.getvalue())


def _mask(data_dir: Path, fid: str) -> tuple[Path, np.ndarray]:
    path = data_dir / "mask" / f"o_{fid}.png"
    return path, cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)


def _grey_palette(index_to_grey) -> list[int]:
    return [g for i in range(256) for g in (index_to_grey(i),) * 3]


def _mask_16bit(path: Path, m: np.ndarray) -> np.ndarray:
    """Write ``m`` as 16-bit values v with round(v/257) == m that keep another high byte."""
    rng = np.random.default_rng(7)
    v = m.astype(np.int64) * 257 + rng.integers(-128, 129, m.shape)
    v = np.clip(v, 0, 65535).astype(np.uint16)
    _write_png(path, v)
    assert not np.array_equal(v >> 8, m)  # so the old 8-bit decode would get it wrong
    return v


def _palette_mask(path: Path, m: np.ndarray) -> None:
    """``m`` as a palette PNG whose indices are not its greys: index 255 - g has grey g."""
    img = Image.fromarray(255 - m, "P")
    img.putpalette(_grey_palette(lambda i: 255 - i))
    _save(path, img)


MASK_CASES = {  # how each mask is written -> how the scan says it is converted
    "16-bit grey": (_mask_16bit, "16-bit: read at 16 bits, round(v/257) to 8 bits"),
    "palette of greys": (
        _palette_mask,
        "palette PNG with grey entries: alpha = each pixel's palette grey, not its index",
    ),
    "RGB with R = G = B": (
        lambda p, m: _write_png(p, np.dstack([m] * 3)),
        "RGB PNG with R = G = B: alpha = that grey",
    ),
    "RGBA, opaque": (
        lambda p, m: _write_png(p, np.dstack([m] * 3 + [np.full_like(m, 255)])),
        "RGBA PNG with R = G = B: alpha = that grey; its fully opaque alpha is dropped",
    ),
    "LA, opaque": (
        lambda p, m: _save(p, Image.fromarray(np.dstack([m, np.full_like(m, 255)]), "LA")),
        "grey+alpha (LA) PNG: fully opaque alpha is dropped",
    ),
    "16-bit RGBA, opaque": (
        lambda p, m: _write_png(
            p, np.dstack([m.astype(np.uint16) * 257] * 3 + [np.full(m.shape, 65535, np.uint16)])
        ),
        "16-bit: read at 16 bits, round(v/257) to 8 bits; RGBA PNG with R = G = B: alpha = "
        "that grey; its fully opaque alpha is dropped",
    ),  # fmt: skip
}


@pytest.mark.parametrize("case", MASK_CASES)
def test_a_mask_whose_matte_is_unambiguous_is_converted_and_listed(sample_copy, case):
    data_dir, bg_dir = sample_copy
    fid = _ids(data_dir)[2]
    path, m = _mask(data_dir, fid)
    write, how = MASK_CASES[case]
    write(path, m)
    assert Image.open(path).mode != "L"
    inputs = scan_inputs(data_dir, bg_dir)
    assert inputs.conversions == (Conversion(f"mask/o_{fid}.png", how),)
    assert np.array_equal(decode_grey(path.read_bytes()), m)  # what compositing reads


def test_plain_8_bit_inputs_list_no_conversion(sample_copy):
    assert scan_inputs(*sample_copy).conversions == ()


def test_masks_that_hide_their_matte_are_refused_by_name_before_any_work(sample_copy, tmp_path):
    data_dir, bg_dir = sample_copy
    ids = _ids(data_dir)
    paths, masks = zip(*(_mask(data_dir, fid) for fid in ids[:5]), strict=True)
    m = masks[0]  # LA whose alpha varies: the greys or the alpha?
    _save(paths[0], Image.fromarray(np.dstack([m, 255 - m]), "LA"))
    m = masks[1]  # RGBA, grey, with a transparent hole
    alpha = np.full_like(m, 255)
    alpha[:3, :4] = 0
    _write_png(paths[1], np.dstack([m] * 3 + [alpha]))
    m = masks[2]  # palette with one colour entry in use
    used = int(m[0, 0])
    img = Image.fromarray(m, "P")
    img.putpalette([c for i in range(256) for c in ((255, 0, 0) if i == used else (i, i, i))])
    _save(paths[2], img)
    m = masks[3]  # RGB with one coloured pixel
    rgb = np.dstack([m] * 3)
    rgb[5, 7] = (30, 20, 10)  # B, G, R for OpenCV
    _write_png(paths[3], rgb)
    m = masks[4]  # palette of greys with a transparent entry in use
    img = Image.fromarray(m, "P")
    img.putpalette(_grey_palette(lambda i: i))
    _save(paths[4], img, transparency=int(m[-1, -1]))

    error = _build_error(data_dir, bg_dir, tmp_path / "out")
    assert str(error).startswith("5 problem(s) with the inputs; nothing was written")
    ambiguous = ("alpha channel is not fully opaque ({n} pixels): it is ambiguous whether the "
                 "matte is its grey values or its alpha; save the matte alone as a "
                 "single-channel greyscale PNG (mode L)")  # fmt: skip
    red = int((masks[2] == used).sum())
    colours = ("with colours that are not grey ({n} pixels, e.g. RGB {rgb} at x={x}, y={y}): "
               "a matte is grey; save it as a single-channel greyscale PNG (mode L)")  # fmt: skip
    y, x = (int(i[0]) for i in np.nonzero(masks[2] == used))
    assert error.problems == [
        f"{paths[0]}: mask is a grey+alpha (LA) PNG whose "
        + ambiguous.format(n=int((masks[0] != 0).sum())),
        f"{paths[1]}: mask is an RGBA PNG whose " + ambiguous.format(n=12),
        f"{paths[2]}: mask is a palette PNG " + colours.format(n=red, rgb=(255, 0, 0), x=x, y=y),
        f"{paths[3]}: mask is an RGB PNG " + colours.format(n=1, rgb=(10, 20, 30), x=7, y=5),
        f"{paths[4]}: mask is a palette PNG whose "
        + ambiguous.format(n=int((masks[4] == masks[4][-1, -1]).sum())),
    ]


ORIGINAL_CASES = {
    "greyscale JPEG": ("jpg", lambda rgb: (Image.fromarray(rgb).convert("L"), {}),
                       "greyscale JPEG: decoded as RGB with R = G = B"),
    "CMYK JPEG": ("jpg", lambda rgb: (Image.fromarray(rgb).convert("CMYK"), {}),
                  "CMYK JPEG: read as Adobe-inverted CMYK, RGB = (255-C)(255-K)/255 (naive, no "
                  "colour management)"),
    "CMYK JPEG with an ICC profile": (
        "jpg", lambda rgb: (Image.fromarray(rgb).convert("CMYK"), {"icc_profile": b"\0" * 128}),
        "CMYK JPEG: read as Adobe-inverted CMYK, RGB = (255-C)(255-K)/255 (naive, no colour "
        "management; its ICC profile is not applied)"),
    "16-bit PNG": ("png", None, "16-bit: read at 16 bits, round(v/257) to 8 bits"),
}  # fmt: skip


def _write_original(data_dir: Path, fid: str, case: str) -> tuple[Path, np.ndarray]:
    """Replace o_<fid>'s original as ``case``; returns its path and the RGB it must decode to."""
    ext, make, _ = ORIGINAL_CASES[case]
    old = data_dir / "original" / f"o_{fid}.jpg"
    rgb = np.asarray(Image.open(old).convert("RGB"))
    old.unlink()
    path = old.with_suffix(f".{ext}")
    if make is None:  # 16-bit: values whose round(v/257) is rgb, keeping another high byte
        v = rgb.astype(np.int64) * 257 + np.random.default_rng(3).integers(-128, 129, rgb.shape)
        v = np.clip(v, 0, 65535).astype(np.uint16)
        _write_png(path, v[..., ::-1])
        assert not np.array_equal(v >> 8, rgb)
        return path, rgb
    img, kwargs = make(rgb)
    _save(path, img, quality=95, **kwargs)
    return path, np.asarray(Image.open(path).convert("RGB"))  # Pillow's reading of it


@pytest.mark.parametrize("case", ORIGINAL_CASES)
def test_an_unusual_original_is_converted_and_listed(sample_copy, case):
    data_dir, bg_dir = sample_copy
    fid = _ids(data_dir)[1]
    path, want = _write_original(data_dir, fid, case)
    inputs = scan_inputs(data_dir, bg_dir)
    how = ORIGINAL_CASES[case][2]
    assert inputs.conversions == (Conversion(f"original/{path.name}", how),)
    rgb = decode_color(path.read_bytes())
    assert np.abs(rgb.astype(np.int16) - want).max() <= (2 if "CMYK" in case else 0)
    if case == "greyscale JPEG":
        assert (rgb == rgb[..., :1]).all()


def test_a_build_converts_unusual_inputs_records_them_and_stays_deterministic(
    sample_copy, tmp_path
):
    """A real build (Dask LocalCluster): a 16-bit mask's alpha member holds round(v/257); the
    fg member keeps each unusual original's bytes and every reader decodes them the same way;
    index.json and ``shards info`` list what was converted; two builds are byte-identical."""
    data_dir, bg_dir = sample_copy
    ids = _ids(data_dir)
    mask16, m16 = _mask(data_dir, ids[0])
    _mask_16bit(mask16, m16)
    palette, m_pal = _mask(data_dir, ids[1])
    _palette_mask(palette, m_pal)
    (val_id,) = _validation_ids(data_dir)
    train_id = next(fid for fid in ids if fid != val_id)
    for fid in (val_id, train_id):  # 16-bit trimaps: only the validation one is ever read
        trimap = data_dir / "trimap" / f"o_{fid}.png"
        _write_png(trimap, cv2.imread(str(trimap), cv2.IMREAD_GRAYSCALE).astype(np.uint16) * 257)
    cases = dict(zip(ids[2:], ORIGINAL_CASES, strict=False))
    originals = {fid: _write_original(data_dir, fid, case) for fid, case in cases.items()}
    out = tmp_path / "out"
    summary = build(data_dir, bg_dir, _cfg(), out, ClusterOptions(workers=2))
    assert summary.complete

    index = read_index(out)
    listed = {c["file"]: c["how"] for c in index.meta["inputs"]["conversions"]}
    assert listed == {
        f"mask/o_{ids[0]}.png": MASK_CASES["16-bit grey"][1],
        f"mask/o_{ids[1]}.png": MASK_CASES["palette of greys"][1],
        f"trimap/o_{val_id}.png": "16-bit: read at 16 bits, round(v/257) to 8 bits",
        **{f"original/{originals[fid][0].name}": ORIGINAL_CASES[c][2] for fid, c in cases.items()},
    }  # fmt: skip
    seen = set()
    urls = [str(out / s.path) for s in index.shards]
    for key, sample in read_samples(urls, ("alpha", "fg", "trimap")):
        fid = key[2:].split("-")[0]
        seen.add(fid)
        if fid == val_id:
            assert np.array_equal(sample["trimap"], cv2.imread(str(data_dir / "trimap" /
                                  f"o_{fid}.png"), cv2.IMREAD_UNCHANGED) // 257)  # fmt: skip
        if fid in (ids[0], ids[1]):
            assert np.array_equal(sample["alpha"], m16 if fid == ids[0] else m_pal)
        if fid in originals:
            path, want = originals[fid]
            tolerance = 2 if "CMYK" in cases[fid] else 0  # vs Pillow's conversion
            assert np.abs(sample["fg"].astype(np.int16) - want).max() <= tolerance
    assert seen == set(ids)
    stored = {raw.key.split("-")[0]: raw.files for url in urls for raw in raw_samples(url, ["fg"])}
    for fid, (path, _) in originals.items():  # the fg member is the original's bytes, untouched
        assert stored[f"o_{fid}"] == {f"fg{path.suffix}": path.read_bytes()}
    assert verify(out, deep=True).ok  # merged == blend(decoded fg, fit(bg), decoded alpha)

    shown = runner.invoke(app, ["shards", "info", str(out)])
    assert shown.exit_code == 0, shown.output
    assert "converted inputs: 7" in shown.output
    assert f"mask/o_{ids[0]}.png: 16-bit: read at 16 bits, round(v/257)" in shown.output

    again = build(data_dir, bg_dir, _cfg(), tmp_path / "again", ClusterOptions(workers=1))
    assert again.complete
    assert [s.sha256 for s in read_index(tmp_path / "again").shards] == [
        s.sha256 for s in index.shards
    ]

    body = json.loads((out / "index.json").read_text())  # a set built before the record
    del body["inputs"]["conversions"]
    (out / "index.json").write_text(json.dumps(body))
    assert describe(out)["inputs"]["conversions"] is None
    shown = runner.invoke(app, ["shards", "info", str(out)])
    assert shown.exit_code == 0 and "converted inputs: not recorded" in shown.output
