"""``pipeline build --check-determinism`` (``pipeline.determinism``) on real shard sets: a second
process rebuilds shards and every byte is compared; damage and changed bytes are named."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from pathlib import Path

import cv2
import pytest
from typer.testing import CliRunner

from configs import load_config
from indexnet_cli import app
from pipeline.build import prepare
from pipeline.determinism import DETERMINISM_DIR, check_determinism, pick_shards
from shards.codec import decode_color
from shards.index import read_index

runner = CliRunner()
SMALL = ["--bgs-per-train-fg", "6", "--bgs-per-val-fg", "4", "--samples-per-shard", "8"]


def _args(sample_data, out: Path, *extra: str) -> list[str]:
    return ["pipeline", "build", "--data-dir", str(sample_data.data_dir), "--bg-dir",
            str(sample_data.bg_dir), "--out", str(out), *SMALL, *extra]  # fmt: skip


def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """(sha256, mtime_ns) of every file under ``root``."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def set_copy(shard_set: Path, tmp_path: Path) -> Path:
    """A writable copy of the session's finished set (built with the options of ``SMALL``)."""
    return Path(shutil.copytree(shard_set, tmp_path / "shards"))


def test_pick_shards_spreads_evenly_and_includes_both_ends():
    names = [f"s{i}" for i in range(10)]
    assert pick_shards(names, 1) == ["s0"]
    assert pick_shards(names, 2) == ["s0", "s9"]
    assert pick_shards(names, 3) == ["s0", "s4", "s9"]
    assert pick_shards(names, 4) == ["s0", "s3", "s6", "s9"]
    assert pick_shards(names, 10) == pick_shards(names, 99) == names


def test_check_on_a_finished_set_passes_and_changes_nothing(sample_data, set_copy):
    before = _snapshot(set_copy)
    result = runner.invoke(app, _args(sample_data, set_copy, "--check-determinism"))
    assert result.exit_code == 0, result.output
    assert "rebuilt 3 of 5 shards in a second process" in result.output
    assert "train/train-000000.tar, train/train-000002.tar, validation/validation-000000.tar" in (
        result.output
    )
    assert "every rebuilt shard is byte-identical" in result.output
    assert _snapshot(set_copy) == before  # nothing built, rewritten or left behind
    assert not (set_copy / DETERMINISM_DIR).exists()


def test_build_then_check(sample_data, tmp_path):
    out = tmp_path / "shards"
    extra = ("--workers", "1", "--check-determinism", "--check-shards", "2")
    result = runner.invoke(app, _args(sample_data, out, *extra))
    assert result.exit_code == 0, result.output
    assert "samples 34/34" in result.output and "rebuilt 2 of 5 shards" in result.output
    assert "every rebuilt shard is byte-identical" in result.output
    assert read_index(out).samples() == 34 and not (out / DETERMINISM_DIR).exists()


def _first_member(tar_path: Path, suffix: str) -> tuple[str, int]:
    """(name, data offset) of the first member whose name ends with ``suffix``."""
    with tarfile.open(tar_path) as tar:
        info = next(m for m in tar.getmembers() if m.name.endswith(suffix))
        return info.name, info.offset_data


def test_check_names_a_shard_damaged_on_disk_and_leaves_it(sample_data, set_copy):
    shard = set_copy / "train" / "train-000000.tar"
    member, offset = _first_member(shard, ".merged.png")
    data = bytearray(shard.read_bytes())
    data[offset + 100] ^= 0xFF  # one byte of the PNG's compressed pixels
    shard.write_bytes(bytes(data))
    before = _snapshot(set_copy)
    result = runner.invoke(app, _args(sample_data, set_copy, "--check-determinism"))
    assert result.exit_code == 4, result.output
    assert f"differs: train/train-000000.tar: 1 member(s) differ: {member} " in result.output
    assert "no longer has index.json's sha256" in result.output
    assert result.output.count("differs:") == 1  # the other two rebuilt shards are equal
    assert _snapshot(set_copy) == before  # the damaged shard is left as it was


def test_check_names_bytes_a_rebuild_does_not_reproduce(sample_data, set_copy, tmp_path):
    """What a nondeterministic compositor would look like: the second process makes other
    bytes for a shard whose copy on disk is intact (here one background, re-encoded after the
    build at the same size, so the plan is the same and only its samples change)."""
    bg_dir = Path(shutil.copytree(sample_data.bg_dir, tmp_path / "bgs"))
    cfg = load_config(None, ["data.bgs_per_train_fg=6", "data.bgs_per_val_fg=4",
                             "data.samples_per_shard=8"])  # fmt: skip
    _, plan = prepare(sample_data.data_dir, bg_dir, cfg)
    victim = next(s for s in plan.samples if s.shard == "train/train-000000.tar")
    path = bg_dir / victim.background
    pixels = decode_color(path.read_bytes())[..., ::-1]  # BGR for cv2.imencode
    path.write_bytes(cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 50])[1].tobytes())
    report = check_determinism(sample_data.data_dir, bg_dir, cfg, set_copy, shards=1, threads=3)
    assert report.checked == ["train/train-000000.tar"] and not report.ok
    assert report.environment["opencv_threads"] == "3" and report.second_plan_equal
    (diff,) = report.differing
    assert diff.on_disk_matches_index and "the build is not deterministic" in str(diff)
    assert set(diff.members) == {f"{victim.key}.bg.jpg", f"{victim.key}.merged.png"}


def test_check_refuses_what_it_cannot_compare(sample_data, set_copy, tmp_path):
    cfg = load_config(None, ["data.bgs_per_train_fg=6", "data.bgs_per_val_fg=4",
                             "data.samples_per_shard=8"])  # fmt: skip
    with pytest.raises(
        ValueError, match="no finished build in .*empty to check: .*index.json is missing"
    ):
        check_determinism(sample_data.data_dir, sample_data.bg_dir, cfg, tmp_path / "empty")
    result = runner.invoke(app, _args(sample_data, set_copy, "--check-determinism",
                                      "--check-shards", "0"))  # fmt: skip
    assert result.exit_code == 2 and "--check-shards must be >= 1, got 0" in result.output
    other = _args(sample_data, set_copy, "--check-determinism")
    other[other.index("--samples-per-shard") + 1] = "4"
    result = runner.invoke(app, other)
    assert result.exit_code == 2 and "built from a different plan" in result.output
    assert not (set_copy / DETERMINISM_DIR).exists()
