"""evaluation.predict, evaluation.images and ``indexnet predict``: photos and trimaps in,
alpha PNGs out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from evaluation.images import TRIMAP_RULE, quantise_trimap, read_image, read_trimap
from evaluation.predict import predict_folder
from indexnet_cli import app
from training.checkpoint import load_for_inference, save_checkpoint
from training.inference import predict_alpha
from training.models.indexnet.network import IndexNet

runner = CliRunner()


def _photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 RGB whose values follow from the pixel index."""
    y, x = np.mgrid[:height, :width]
    planes = [(x * 5 + y * 3 + seed * 40) % 256, (x * 2 + 80) % 256, (y * 4 + seed * 90) % 256]
    return np.stack(planes, axis=2).astype(np.uint8)


def _trimap(height: int, width: int) -> np.ndarray:
    """Columns: background on the left third, unknown in the middle, foreground on the right."""
    trimap = np.full((height, width), 128, np.uint8)
    trimap[:, : width // 3] = 0
    trimap[:, 2 * width // 3 :] = 255
    return trimap


def _save(path: Path, pixels: np.ndarray, **options) -> Path:
    Image.fromarray(pixels).save(path, **options)
    return path


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight IndexNet checkpoint (deterministic)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    return save_checkpoint(path, IndexNet())


@pytest.fixture(scope="module")
def model(checkpoint: Path) -> torch.nn.Module:
    return load_for_inference(checkpoint)


@pytest.fixture
def pair(tmp_path: Path):
    """Write a photo and its trimap of a given size; returns their paths and pixels."""

    def write(height: int = 64, width: int = 96, name: str = "photo"):
        rgb, trimap = _photo(height, width), _trimap(height, width)
        image = _save(tmp_path / f"{name}.png", rgb)
        marks = _save(tmp_path / f"{name}_trimap.png", trimap)
        return image, marks, rgb, trimap

    return write


def _predict(checkpoint: Path, *args: str):
    return runner.invoke(app, ["predict", "--checkpoint", str(checkpoint), *map(str, args)])


# -- single mode ------------------------------------------------------------------------------


@pytest.mark.parametrize(("height", "width"), [(64, 96), (50, 70)])
def test_single_mode_writes_the_alpha_png(checkpoint, model, pair, tmp_path, height, width):
    image, marks, rgb, trimap = pair(height, width)
    out = tmp_path / "result" / "alpha.png"  # its folder is created
    result = _predict(checkpoint, image, marks, "-o", out, "--max-pixels", 2000)
    assert result.exit_code == 0, result.output
    assert str(out) in result.output and "warning" not in result.output
    with Image.open(out) as written:
        assert written.format == "PNG" and written.mode == "L"
        alpha = np.asarray(written)
    assert alpha.shape == (height, width)
    assert (alpha[trimap == 0] == 0).all() and (alpha[trimap == 255] == 255).all()
    np.testing.assert_array_equal(alpha, predict_alpha(model, rgb, trimap, max_pixels=2000))
    assert _files(tmp_path / "result") == ["alpha.png"]  # no cutout, no temp file


def test_cutout_is_the_photo_with_the_alpha(checkpoint, pair, tmp_path):
    image, marks, rgb, _ = pair()
    out = tmp_path / "alpha.png"
    result = _predict(checkpoint, image, marks, "-o", out, "--cutout")
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "alpha_cutout.png") in result.output
    alpha = np.asarray(Image.open(out))
    with Image.open(tmp_path / "alpha_cutout.png") as written:
        assert written.mode == "RGBA"
        rgba = np.asarray(written)
    np.testing.assert_array_equal(rgba[..., :3], rgb)
    np.testing.assert_array_equal(rgba[..., 3], alpha)


def test_exif_rotated_jpeg_is_turned_upright(checkpoint, tmp_path):
    upright = _photo(64, 96)
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # as a phone stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "phone.jpg"
    stored.save(path, quality=95, exif=exif)
    assert Image.open(path).size == (64, 96)  # stored sideways

    rgb = read_image(path)
    assert rgb.shape == (64, 96, 3)
    assert np.abs(rgb.astype(int) - upright).mean() < 4  # JPEG loss only: same orientation

    marks = _save(tmp_path / "trimap.png", _trimap(64, 96))  # drawn on the upright picture
    out = tmp_path / "alpha.png"
    result = _predict(checkpoint, path, marks, "-o", out)
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (96, 64)


def test_grey_trimap_values_are_quantised_and_counted(checkpoint, model, pair, tmp_path):
    image, _, rgb, trimap = pair()
    soft = trimap.copy()
    soft[:4, :] = 30  # -> 0
    soft[4:8, :] = 100  # -> 128
    soft[8:10, :] = 200  # -> 255
    marks = _save(tmp_path / "soft.png", soft)
    out = tmp_path / "alpha.png"
    result = _predict(checkpoint, image, marks, "-o", out)
    assert result.exit_code == 0, result.output
    assert (
        f"{10 * 96} pixel(s) were not 0/128/255" in result.output and TRIMAP_RULE in result.output
    )
    expected, count = quantise_trimap(soft)
    assert count == 10 * 96
    np.testing.assert_array_equal(np.asarray(Image.open(out)), predict_alpha(model, rgb, expected))


def test_quantisation_rule():
    grey = np.array([[0, 84, 85, 128, 170, 171, 255, 1]], np.uint8)
    trimap, count = quantise_trimap(grey)
    assert trimap.tolist() == [[0, 0, 128, 128, 128, 255, 255, 0]]
    assert count == 5
    assert "below 85 -> 0" in TRIMAP_RULE and "above 170 -> 255" in TRIMAP_RULE


def test_image_and_trimap_formats(tmp_path):
    rgb = _photo(32, 48)
    grey = rgb[..., 0]
    np.testing.assert_array_equal(
        read_image(_save(tmp_path / "g.png", grey)), np.dstack([grey] * 3)
    )
    rgba = np.dstack([rgb, np.full(grey.shape, 7, np.uint8)])
    np.testing.assert_array_equal(read_image(_save(tmp_path / "a.png", rgba)), rgb)  # A dropped
    wide = grey.astype(np.uint16) * 257  # 16-bit grey
    np.testing.assert_array_equal(
        read_image(_save(tmp_path / "w.png", wide)), np.dstack([grey] * 3)
    )

    trimap = _trimap(32, 48)
    np.testing.assert_array_equal(
        read_trimap(_save(tmp_path / "t16.png", trimap.astype(np.uint16) * 257))[0], trimap
    )
    palette = Image.fromarray(trimap).convert("P")
    palette.save(tmp_path / "p.png")
    from_palette, count = read_trimap(tmp_path / "p.png")
    np.testing.assert_array_equal(from_palette, trimap)
    assert count == 0
    coloured = Image.fromarray(np.dstack([trimap, trimap // 2, trimap])).convert("P")
    coloured.save(tmp_path / "c.png")
    with pytest.raises(ValueError, match="palette image with coloured entries"):
        read_trimap(tmp_path / "c.png")
    with pytest.raises(ValueError, match="single-channel.*LA \\(2 channels\\)"):
        read_trimap(_save(tmp_path / "la.png", np.dstack([trimap, trimap])))


# -- folder mode ------------------------------------------------------------------------------


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path, dict]:
    """images/ (png, jpg, png of odd size) and trimaps/ (png, bmp) of the same names."""
    images, trimaps = tmp_path / "images", tmp_path / "trimaps"
    images.mkdir()
    trimaps.mkdir()
    sizes = {"a": (64, 96, ".png"), "b": (40, 72, ".jpg"), "c": (50, 70, ".png")}
    for i, (name, (height, width, suffix)) in enumerate(sizes.items()):
        _save(images / f"{name}{suffix}", _photo(height, width, seed=i))
        _save(trimaps / f"{name}{'.bmp' if i % 2 else '.png'}", _trimap(height, width))
    (images / "notes.txt").write_text("not an image: ignored")
    return images, trimaps, sizes


def test_folder_mode_predicts_every_image(checkpoint, model, folders, tmp_path):
    images, trimaps, sizes = folders
    out = tmp_path / "out" / "alphas"  # created
    result = _predict(checkpoint, "--images", images, "--trimaps", trimaps, "-o", out, "--cutout")
    assert result.exit_code == 0, result.output
    assert "[3/3]" in result.output and "3 alpha(s) written" in result.output
    assert _files(out) == [
        "a.png",
        "a_cutout.png",
        "b.png",
        "b_cutout.png",
        "c.png",
        "c_cutout.png",
    ]
    for name, (height, width, suffix) in sizes.items():
        rgb = read_image(images / f"{name}{suffix}")
        alpha = np.asarray(Image.open(out / f"{name}.png"))
        assert alpha.shape == (height, width)
        np.testing.assert_array_equal(alpha, predict_alpha(model, rgb, _trimap(height, width)))
        np.testing.assert_array_equal(
            np.asarray(Image.open(out / f"{name}_cutout.png"))[..., 3], alpha
        )


def test_predict_folder_calls_back_per_image(model, folders, tmp_path):
    images, trimaps, sizes = folders
    seen = []
    predictions = predict_folder(
        model, images, trimaps, tmp_path / "out", on_image=lambda d, t, p: seen.append((d, t))
    )
    assert [p.name for p in predictions] == sorted(sizes) and seen == [(1, 3), (2, 3), (3, 3)]
    assert all(p.cutout is None and p.quantised == 0 for p in predictions)
    assert [p.size for p in predictions] == [s[:2] for s in sizes.values()]


def test_missing_and_extra_trimaps_are_listed(checkpoint, folders, tmp_path):
    images, trimaps, _ = folders
    (trimaps / "c.png").unlink()
    _save(trimaps / "d.png", _trimap(8, 8))
    out = tmp_path / "out"
    result = _predict(checkpoint, "--images", images, "--trimaps", trimaps, "-o", out)
    assert result.exit_code == 2
    assert "1 missing: c" in result.output and "1 extra: d.png" in result.output
    assert not out.exists()


def test_bad_pairs_are_all_listed_before_anything_is_written(checkpoint, folders, tmp_path):
    images, trimaps, _ = folders
    _save(trimaps / "a.png", _trimap(64, 90))  # wrong size
    _save(trimaps / "c.png", np.dstack([_trimap(50, 70)] * 3))  # RGB
    out = tmp_path / "out"
    result = _predict(checkpoint, "--images", images, "--trimaps", trimaps, "-o", out)
    assert result.exit_code == 2
    assert "2 of 3 pair(s) cannot be predicted" in result.output
    assert "96x64" in result.output and "90x64" in result.output
    assert str(trimaps / "c.png") in result.output and "single-channel" in result.output
    assert not out.exists()


# -- errors -----------------------------------------------------------------------------------


def test_sizes_that_differ_name_both(checkpoint, pair, tmp_path):
    image, _, _, _ = pair(64, 96)
    marks = _save(tmp_path / "small.png", _trimap(50, 70))
    result = _predict(checkpoint, image, marks, "-o", tmp_path / "out" / "alpha.png")
    assert result.exit_code == 2
    assert "96x64" in result.output and "70x50" in result.output
    assert str(image) in result.output and str(marks) in result.output
    assert not (tmp_path / "out").exists()


def test_swapped_sides_hint_at_exif(checkpoint, pair, tmp_path):
    image, _, _, _ = pair(64, 96)
    marks = _save(tmp_path / "sideways.png", _trimap(96, 64))
    result = _predict(checkpoint, image, marks, "-o", tmp_path / "alpha.png")
    assert result.exit_code == 2 and "EXIF" in result.output


def test_rgb_trimap_is_refused_with_the_rule(checkpoint, pair, tmp_path):
    image, _, _, trimap = pair()
    marks = _save(tmp_path / "rgb.png", np.dstack([trimap] * 3))
    result = _predict(checkpoint, image, marks, "-o", tmp_path / "alpha.png")
    assert result.exit_code == 2
    assert str(marks) in result.output and "single-channel" in result.output
    assert "RGB (3 channels)" in result.output and TRIMAP_RULE in result.output
    assert not (tmp_path / "alpha.png").exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncated", "cannot read the image"),
        ("text", "not an image Pillow can read"),
        ("absent", "no such image file"),
    ],
)
def test_unreadable_image_is_named(checkpoint, pair, tmp_path, damage, message):
    image, marks, _, _ = pair()
    if damage == "truncated":
        image.write_bytes(image.read_bytes()[:200])
    elif damage == "text":
        image.write_text("this is not a PNG")
    else:
        image.unlink()
    result = _predict(checkpoint, image, marks, "-o", tmp_path / "out" / "alpha.png")
    assert result.exit_code == 2
    assert str(image) in result.output and message in result.output
    assert not (tmp_path / "out").exists()


def test_missing_checkpoint(pair, tmp_path):
    image, marks, _, _ = pair()
    missing = tmp_path / "nope.pt"
    result = _predict(missing, image, marks, "-o", tmp_path / "alpha.png")
    assert result.exit_code == 2 and f"{missing}: no such checkpoint file" in result.output
    assert not (tmp_path / "alpha.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "one of the two"),
        (["IMAGE", "TRIMAP", "--images", "DIR", "--trimaps", "DIR"], "not both"),
        (["IMAGE"], "missing TRIMAP"),
        (["--images", "DIR"], "needs both --images and --trimaps"),
        (["IMAGE", "TRIMAP", "--device", "nonsense"], "not a device"),
        (["IMAGE", "TRIMAP", "--max-pixels", "0"], "--max-pixels must be >= 1"),
    ],
)
def test_bad_options_exit_2_and_write_nothing(checkpoint, pair, tmp_path, args, message):
    image, marks, _, _ = pair()
    paths = {"IMAGE": str(image), "TRIMAP": str(marks), "DIR": str(tmp_path)}
    out = tmp_path / "out.png"
    result = _predict(checkpoint, *[paths.get(a, a) for a in args], "-o", out)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not out.exists()


def test_output_must_be_a_png_that_is_not_an_input(checkpoint, pair, tmp_path):
    image, marks, _, _ = pair()
    jpeg = _predict(checkpoint, image, marks, "-o", tmp_path / "alpha.jpg")
    assert jpeg.exit_code == 2 and "name a .png file" in jpeg.output
    before = image.read_bytes()
    clash = _predict(checkpoint, image, marks, "-o", image)
    assert clash.exit_code == 2 and "is an input" in clash.output
    assert image.read_bytes() == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_a_gpu_is_refused(checkpoint, pair, tmp_path):
    image, marks, _, _ = pair()
    result = _predict(checkpoint, image, marks, "-o", tmp_path / "a.png", "--device", "cuda")
    assert result.exit_code == 2 and "CUDA is not available" in result.output


def test_help_states_the_trimap_rule():
    result = runner.invoke(app, ["predict", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "below 85 -> 0, above 170 -> 255" in text and "EXIF" in text and "--cutout" in text
