"""Lean training shards (``pipeline build --lean-train``): train samples hold only what training
reads, validation samples are a full build's byte for byte, and every command works on the set.

One lean build of the sample data (the session's ``shard_set`` settings) is made per module and
compared with ``shard_set``, the full build of the same inputs and config.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from configs import load_config
from indexnet_cli import app
from shards.index import read_index, read_samples
from shards.reader import read_samples as read_shard_samples
from shards.reader import resolve_shards
from shards.schema import SCORED_MEMBERS, TRAIN_MEMBERS, MissingMembers, members_of
from shards.verify import verify
from shards.writer import sha256_file

runner = CliRunner()
SMALL = ["--bgs-per-train-fg", "6", "--bgs-per-val-fg", "4", "--samples-per-shard", "8"]


@pytest.fixture(scope="module")
def lean_set(sample_data, tmp_path_factory) -> Path:
    """The lean build of ``shard_set``'s inputs and config, through the CLI (read-only)."""
    out = tmp_path_factory.mktemp("lean") / "shards"
    result = runner.invoke(app, ["pipeline", "build", "--data-dir", str(sample_data.data_dir),
                                 "--bg-dir", str(sample_data.bg_dir), "--out", str(out),
                                 "--workers", "1", "--lean-train", *SMALL])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def _members_by_key(tar: Path) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(tar) as t:
        for m in t.getmembers():
            key, file = m.name.split(".", 1)
            out.setdefault(key, {})[file] = t.extractfile(m).read()
    return out


def test_a_lean_set_holds_the_train_members_and_a_full_validation_split(lean_set, shard_set):
    """Validation shards are the full build's byte for byte; every train sample holds exactly
    fg, bg, alpha and json, each the full build's bytes; index.json and info say so."""
    lean, full = read_index(lean_set), read_index(shard_set)
    assert [(s.path, s.sha256) for s in lean.split("validation")] == [
        (s.path, s.sha256) for s in full.split("validation")
    ]
    assert lean.meta["lean_train"] is True and full.meta["lean_train"] is False
    assert lean.meta["members"]["train"] == list(TRAIN_MEMBERS) == ["alpha", "fg", "bg", "json"]
    assert lean.meta["members"]["validation"] == [m.name for m in members_of("validation")]
    for info in lean.split("train"):
        lean_samples = _members_by_key(lean_set / info.path)
        full_samples = _members_by_key(shard_set / info.path)
        assert list(lean_samples) == list(full_samples)  # same keys, same order
        for key, files in lean_samples.items():
            assert sorted(f.split(".")[0] for f in files) == sorted(TRAIN_MEMBERS)
            assert files == {f: b for f, b in full_samples[key].items() if f in files}
    assert sum(s.bytes for s in lean.split("train")) < sum(s.bytes for s in full.split("train"))

    shown = runner.invoke(app, ["shards", "info", str(lean_set), "--json"])
    assert shown.exit_code == 0, shown.output
    info = json.loads(shown.output)
    assert info["lean_train"] is True
    train = info["splits"]["train"]
    assert train["members"] == list(TRAIN_MEMBERS)
    assert set(train["member_bytes_per_sample"]) == set(TRAIN_MEMBERS)
    assert train["bytes_per_sample"] == round(train["bytes"] / train["samples"])
    text = runner.invoke(app, ["shards", "info", str(lean_set)])
    assert text.exit_code == 0 and "lean train (--lean-train): yes" in text.output, text.output
    assert "train bytes/sample:" in text.output


def test_verify_deep_passes_on_a_lean_set_and_repair_restores_damage(
    lean_set, sample_data, tmp_path
):
    """verify --deep passes (no composite to recompute in train samples); a byte flipped in a
    train shard's fg is named; repair rebuilds the lean shard to the recorded bytes."""
    assert verify(lean_set, deep=True).ok
    told_full = Path(shutil.copytree(lean_set, tmp_path / "told-full"))
    index = json.loads((told_full / "index.json").read_text())
    del index["members"], index["lean_train"]  # as a set built before lean sets
    (told_full / "index.json").write_text(json.dumps(index))
    members = [p for p in verify(told_full).problems if p.check == "members"]
    assert [p.shard for p in members] == [s.path for s in read_index(lean_set).split("train")]
    assert "says train samples hold alpha, bg, fg, json, merged, trimap" in members[0].detail
    out = Path(shutil.copytree(lean_set, tmp_path / "set"))
    shard = read_index(out).split("train")[1]
    row = next(r for r in read_samples(out).to_pylist() if r["shard"] == shard.path)
    fg = next(m for m in row["members"] if m.startswith("fg."))
    data = bytearray((out / shard.path).read_bytes())
    at = data.index(f"{row['key']}.{fg}".encode()) + 512 + 100  # inside the member's bytes
    data[at] ^= 0xFF
    (out / shard.path).write_bytes(bytes(data))
    report = verify(out, deep=True)
    assert not report.ok and report.bad_shards == [shard.path]
    assert any(p.check == "member_sha256" and p.key == row["key"] and fg in p.detail
               for p in report.problems), report.problems  # fmt: skip
    fixed = runner.invoke(app, ["shards", "repair", str(out), "--workers", "1"])
    assert fixed.exit_code == 0, fixed.output
    assert f"rebuilt {shard.path}" in fixed.output
    assert sha256_file(out / shard.path) == (shard.bytes, shard.sha256)


def test_what_needs_a_member_a_lean_set_lacks_says_what_it_holds(lean_set, tmp_path):
    """Reading the scored members of lean train samples stops before any read, naming what
    they hold and how to rebuild; `evaluate run` on the train split exits 2 writing nothing."""
    shards = resolve_shards(str(lean_set), "train")
    with pytest.raises(MissingMembers, match="hold only alpha, fg, bg, json.*needs merged, "
                       "trimap.*without --lean-train"):  # fmt: skip
        next(read_shard_samples(shards, SCORED_MEMBERS))
    assert next(read_shard_samples(resolve_shards(str(lean_set), "validation"), SCORED_MEMBERS))
    cfg = load_config(overrides=["model.indexnet.output_stride=32"])
    assert cfg.data.lean_train is False  # the default build is full
    result = runner.invoke(app, ["evaluate", "run", "--checkpoint", str(tmp_path / "none.pt"),
                                 "--shards", str(lean_set / "train"),
                                 "--out", str(tmp_path / "eval")])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "--lean-train" in result.output and "merged" in result.output
    assert not (tmp_path / "eval").exists()


TINY = ["augment.input_size=32", "augment.crop_sizes=[32]", "augment.small_image_min_side=64",
        "train.batch_size=2", "loader.shuffle_window=4", "runtime.log_batches=true",
        "validation.enabled=false"]  # fmt: skip


def _batches(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "batches.jsonl").read_text().splitlines()]


@pytest.mark.slow  # two short training runs and two --data-only runs
def test_training_on_a_lean_set_takes_the_full_sets_batches_and_reads_fewer_bytes(
    lean_set, shard_set, tmp_path
):
    """Keys and input digests of every global batch (runtime.log_batches) are the same on the
    lean and the full set; --data-only reports fewer bytes read per sample on the lean one."""
    from training.run.trainer import RunOptions, train

    cfg = load_config(overrides=TINY)
    runs = {}
    for name, root in (("lean", lean_set), ("full", shard_set)):
        runs[name] = tmp_path / name
        train(cfg, RunOptions(str(root), runs[name], max_steps=6, loader_workers=0))
    assert len(_batches(runs["lean"])) == 6
    assert _batches(runs["lean"]) == _batches(runs["full"])

    reports = {}
    for name, root in (("lean", lean_set), ("full", shard_set)):
        run = tmp_path / f"{name}-data"
        result = runner.invoke(app, ["train", "--shards", str(root), "--out", str(run),
                                     "--max-steps", "3", "--loader-workers", "1", "--data-only",
                                     *[x for s in TINY for x in ("--set", s)]])  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "bytes read per sample" in result.output and "8-GPU node" in result.output
        reports[name] = json.loads((run / "data_only.json").read_text())
    lean, full = reports["lean"], reports["full"]
    assert lean["lean_train"] and not full["lean_train"]
    assert 0 < lean["bytes_per_sample"] < full["bytes_per_sample"]
    assert lean["node_mb_per_s_needed"] == pytest.approx(8 * lean["mb_per_s_needed"], 0.01)
    assert lean["mb_per_s_needed"] == pytest.approx(
        lean["samples_per_s_needed"] * lean["bytes_per_sample"] / 1e6, 0.01
    )
