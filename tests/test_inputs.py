"""Input validation of ``pipeline build``: every offender named, all at once, nothing written.

Each test breaks a private copy of the sample data (``sample_copy``) and checks that the error
names the offending file(s) and that ``--out`` was never created. The CLI answers bad inputs
with exit code 2.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from configs import load_config
from indexnet_cli import app
from pipeline.build import build, default_out, prepare
from pipeline.inputs import InputError, scan_inputs
from pipeline.plan import split_foregrounds
from shards.cluster import ClusterOptions
from shards.index import read_index

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
