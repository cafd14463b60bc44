"""evaluation.score and ``indexnet evaluate score``: folders in, per-image csv and means out."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from evaluation.cli import evaluate_app
from evaluation.score import ScoreError, default_out, score_folder
from shards.metrics import METRICS, all_metrics
from tests.conftest import load_golden

runner = CliRunner()


CASES = [("soft", 0, 48, 64), ("blobs", 2, 40, 40), ("cells", 7, 30, 50), ("twins", 9, 45, 60)]


def _write(path: Path, arr: np.ndarray) -> None:
    ok, buf = cv2.imencode(path.suffix, arr)
    assert ok
    path.write_bytes(buf.tobytes())


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path, Path, dict]:
    """pred/, gt/, trimap/ with four images (trimaps as .png and .bmp) and a stray text file."""
    golden = load_golden("make_metrics_golden")
    dirs = [tmp_path / name for name in ("pred", "gt", "trimap")]
    for folder in dirs:
        folder.mkdir()
    arrays = {}
    for i, (kind, seed, h, w) in enumerate(CASES):
        name = f"o_{kind}{seed:02d}"
        pred, gt, trimap = golden.make_case(kind, seed, h, w)
        arrays[name] = (pred, gt, trimap)
        _write(dirs[0] / f"{name}.png", pred)
        _write(dirs[1] / f"{name}.png", gt)
        _write(dirs[2] / f"{name}{'.bmp' if i % 2 else '.png'}", trimap)  # any image type
    (dirs[0] / "notes.txt").write_text("not an image: ignored")
    return *dirs, arrays


def test_scores_equal_direct_computation(folders, tmp_path):
    pred_dir, gt_dir, trimap_dir, arrays = folders
    out = tmp_path / "scores"
    result = score_folder(pred_dir, gt_dir, trimap_dir, out)
    assert [image.name for image in result.images] == sorted(arrays)
    for image in result.images:
        expected = all_metrics(*arrays[image.name])
        assert {m: getattr(image, m) for m in METRICS} == expected
        assert image.unknown_pixels == np.count_nonzero(arrays[image.name][2] == 128)
    means = {
        m: math.fsum(all_metrics(*arrays[n])[m] for n in arrays) / len(arrays) for m in METRICS
    }
    assert result.means == means and result.count == 4 and result.without_unknown == []

    with open(out / "per_image.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["name"] for row in rows] == sorted(arrays)
    for row, image in zip(rows, result.images, strict=True):
        assert {m: float(row[m]) for m in METRICS} == {m: getattr(image, m) for m in METRICS}
        assert int(row["unknown_pixels"]) == image.unknown_pixels
    summary = json.loads((out / "summary.json").read_text())
    assert summary["count"] == 4 and summary["images_without_unknown"] == 0
    assert {m: summary[m] for m in METRICS} == means
    assert summary["pred_dir"] == str(pred_dir)
    assert not list(out.glob("*.tmp"))


def test_workers_give_identical_outputs(folders, tmp_path):
    pred_dir, gt_dir, trimap_dir, _ = folders
    one = score_folder(pred_dir, gt_dir, trimap_dir, tmp_path / "one", workers=1)
    two = score_folder(pred_dir, gt_dir, trimap_dir, tmp_path / "two", workers=2)
    assert one.images == two.images and one.means == two.means
    for name in ("per_image.csv", "summary.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_missing_and_extra_files_are_listed(folders, tmp_path):
    pred_dir, gt_dir, trimap_dir, _ = folders
    (pred_dir / "o_soft00.png").unlink()
    (pred_dir / "o_blobs02.png").unlink()
    _write(pred_dir / "o_stray.png", np.zeros((4, 4), np.uint8))
    (trimap_dir / "o_cells07.png").rename(trimap_dir / "o_cells7.png")
    with pytest.raises(ScoreError) as info:
        score_folder(pred_dir, gt_dir, trimap_dir, tmp_path / "out")
    message = str(info.value)
    assert f"--pred-dir {pred_dir}: 2 missing: o_blobs02, o_soft00" in message
    assert f"--pred-dir {pred_dir}: 1 extra: o_stray.png" in message
    assert f"--trimap-dir {trimap_dir}: 1 missing: o_cells07" in message
    assert f"--trimap-dir {trimap_dir}: 1 extra: o_cells7.png" in message
    assert not (tmp_path / "out").exists()


def test_bad_images_are_all_listed_and_nothing_is_written(folders, tmp_path):
    pred_dir, gt_dir, trimap_dir, arrays = folders
    (pred_dir / "o_soft00.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    _write(pred_dir / "o_blobs02.png", np.zeros((10, 10), np.uint8))  # wrong size
    trimap = arrays["o_cells07"][2].copy()
    trimap[0, 0] = 7
    _write(trimap_dir / "o_cells07.png", trimap)
    with pytest.raises(ScoreError) as info:
        score_folder(pred_dir, gt_dir, trimap_dir, tmp_path / "out", workers=1)
    message = str(info.value)
    assert message.startswith("3 of 4 image(s) cannot be scored")
    assert f"{pred_dir / 'o_soft00.png'}: not a decodable image" in message
    assert "o_blobs02" in message and "shapes differ: pred (10, 10), gt (40, 40)" in message
    assert "o_cells07" in message and "other value(s): 7" in message
    assert not (tmp_path / "out").exists()


def test_folder_problems(folders, tmp_path):
    pred_dir, gt_dir, trimap_dir, _ = folders
    with pytest.raises(ScoreError, match="--gt-dir .*nope is not a folder"):
        score_folder(pred_dir, tmp_path / "nope", trimap_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ScoreError, match="--pred-dir .*empty holds no images"):
        score_folder(empty, gt_dir, trimap_dir)
    _write(pred_dir / "o_soft00.jpg", np.zeros((4, 4), np.uint8))
    with pytest.raises(ScoreError, match="more than one image.*o_soft00.jpg and o_soft00.png"):
        score_folder(pred_dir, gt_dir, trimap_dir)
    with pytest.raises(ValueError, match="--workers must be >= 1"):
        score_folder(pred_dir, gt_dir, trimap_dir, workers=0)


def test_images_without_unknown_pixels_are_counted(folders, tmp_path):
    pred_dir, gt_dir, trimap_dir, arrays = folders
    trimap = np.where(arrays["o_soft00"][2] == 128, 255, arrays["o_soft00"][2]).astype(np.uint8)
    _write(trimap_dir / "o_soft00.png", trimap)
    result = score_folder(pred_dir, gt_dir, trimap_dir, tmp_path / "out")
    assert result.without_unknown == ["o_soft00"]
    assert result.images[-1].name == "o_twins09"
    assert [i.sad for i in result.images if i.name == "o_soft00"] == [0.0]
    assert (
        json.loads((tmp_path / "out" / "summary.json").read_text())["images_without_unknown"] == 1
    )


def test_default_out_is_beside_the_predictions(tmp_path):
    assert default_out(tmp_path / "method_a") == (tmp_path / "method_a-scores").resolve()


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_scores_and_prints_the_means(folders, tmp_path):
    pred_dir, gt_dir, trimap_dir, _ = folders
    out = tmp_path / "cli"
    args = ["score", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir),
            "--trimap-dir", str(trimap_dir), "--out", str(out), "--workers", "1"]  # fmt: skip
    result = runner.invoke(evaluate_app, args)
    assert result.exit_code == 0, result.output
    means = score_folder(pred_dir, gt_dir, trimap_dir).means
    for header in ("SAD", "MSE", "Grad", "Conn"):
        assert header in result.stdout
    assert f"{means['sad']:.4f}" in result.stdout and f"{means['mse']:.6f}" in result.stdout
    assert "4 images" in result.stdout and str(out / "per_image.csv") in result.stdout
    assert (out / "summary.json").exists()


def test_cli_errors_exit_2(folders, tmp_path):
    pred_dir, gt_dir, trimap_dir, _ = folders
    (pred_dir / "o_soft00.png").unlink()
    base = ["score", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir),
            "--trimap-dir", str(trimap_dir), "--out", str(tmp_path / "o")]  # fmt: skip
    result = runner.invoke(evaluate_app, base)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: the folders do not hold the same images")
    assert "1 missing: o_soft00" in result.stderr
    assert not (tmp_path / "o").exists()
    assert runner.invoke(evaluate_app, [*base, "--workers", "0"]).exit_code == 2
    assert runner.invoke(evaluate_app, ["score", "--pred-dir", str(pred_dir)]).exit_code == 2


def test_cli_help():
    result = runner.invoke(evaluate_app, ["--help"])
    assert result.exit_code == 0 and "score" in result.output
    result = runner.invoke(evaluate_app, ["score", "--help"])
    assert result.exit_code == 0
    for option in ("--pred-dir", "--gt-dir", "--trimap-dir", "--out", "--workers"):
        assert option in result.output
