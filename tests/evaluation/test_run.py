"""evaluation.run and ``indexnet evaluate run``: a checkpoint scored on the sample shards."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from evaluation.run import EvalOptions, evaluate
from indexnet_cli import app
from shards.codec import decode_grey
from shards.index import read_samples
from shards.metrics import METRICS, all_metrics
from shards.reader import resolve_shards, scored_samples
from training.checkpoint import save_checkpoint
from training.models.indexnet.network import IndexNet


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple:
    """A seeded random model saved as our checkpoint and as the official release's file."""
    torch.manual_seed(0)
    model = IndexNet().eval()
    root = tmp_path_factory.mktemp("ckpt")
    ours = save_checkpoint(root / "model.pt", model)
    official = root / "indexnet_matting.pth.tar"
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 30}, official)
    return ours, official


def _rows(out) -> list[dict]:
    with open(out / "per_image.csv") as f:
        return list(csv.DictReader(f))


def test_every_sample_predicted_and_scored_as_written(shard_set, checkpoint, tmp_path):
    out = tmp_path / "eval"
    result = evaluate(EvalOptions(checkpoint[0], str(shard_set / "validation"), out, workers=2))
    samples = read_samples(shard_set).to_pylist()
    keys = [row["key"] for row in samples if row["split"] == "validation"]
    assert sorted(p.stem for p in (out / "predictions").glob("*.png")) == sorted(keys)
    assert [r["name"] for r in _rows(out)] == [s.name for s in result.scores.images]
    # metrics.json is the mean of the metrics recomputed from the written PNGs
    recomputed = {m: [] for m in METRICS}
    for key, _rgb, trimap, alpha in scored_samples(
        resolve_shards(str(shard_set), "validation").urls
    ):
        pred = decode_grey((out / "predictions" / f"{key}.png").read_bytes())
        assert (pred[trimap == 0] == 0).all() and (pred[trimap == 255] == 255).all()
        for name, value in all_metrics(pred, alpha, trimap).items():
            recomputed[name].append(value)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["count"] == len(keys) == 4
    for m in METRICS:
        assert saved[m] == pytest.approx(np.mean(recomputed[m]), rel=1e-12)
    log = (out / "eval.log").read_text().splitlines()
    assert log[0].startswith("indexnet evaluate run") and log[-2].startswith("mean sad")
    assert sum(line.split()[0] in keys for line in log) == len(keys)
    sheet = out / "contact_sheet.png"
    assert result.contact_sheet == sheet and decode_grey(sheet.read_bytes()).shape[1] > 500


def test_scoring_in_process_or_in_workers_and_the_official_file_agree(
    shard_set, checkpoint, tmp_path
):
    ours, official = checkpoint
    a = evaluate(EvalOptions(ours, str(shard_set), tmp_path / "a", workers=0, contact_samples=0))
    b = evaluate(EvalOptions(official, str(shard_set), tmp_path / "b", workers=1, limit=3))
    assert a.contact_sheet is None and not (tmp_path / "a" / "contact_sheet.png").exists()
    assert _rows(tmp_path / "a")[:3] == _rows(tmp_path / "b")
    for key in [r["name"] for r in _rows(tmp_path / "b")]:
        assert (tmp_path / "a" / "predictions" / f"{key}.png").read_bytes() == (
            tmp_path / "b" / "predictions" / f"{key}.png"
        ).read_bytes()
    assert a.scores.count == 4 and b.scores.count == 3


def test_cli_prints_the_means_and_names_bad_inputs(shard_set, checkpoint, tmp_path):
    runner = CliRunner()
    args = [
        "evaluate",
        "run",
        "--checkpoint",
        str(checkpoint[0]),
        "--shards",
        str(shard_set / "validation"),
        "--out",
        str(tmp_path / "e"),
        "--workers",
        "1",
    ]
    result = runner.invoke(app, [*args, "--baseline"])
    assert result.exit_code == 0, result.output
    assert "SAD" in result.output and "contact sheet:" in result.output
    assert "model" in result.output and "alpha 0.5" in result.output  # the baseline's row
    assert "metrics:" in result.output

    def fails(change: dict, message: str) -> None:
        argv = list(args)
        for option, value in change.items():
            if option in argv:
                argv[argv.index(option) + 1] = value
            else:
                argv += [option, value]
        result = runner.invoke(app, argv)
        assert result.exit_code == 2 and message in result.output, result.output

    fails({"--checkpoint": str(tmp_path / "nope.pt")}, "no such checkpoint file")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    fails({"--checkpoint": str(junk)}, "not a PyTorch checkpoint file")
    fails({"--shards": str(tmp_path)}, "index.json is missing")
    fails({"--device": "tpu"}, "--device must be cpu or cuda")
    fails({"--workers": "-1"}, "--workers must be >= 0")


def test_a_damaged_validation_shard_is_named_exit_1(shard_set, checkpoint, tmp_path):
    root = shutil.copytree(shard_set, tmp_path / "set")
    shard = root / "validation" / "validation-000000.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size * 3 // 4])  # cut mid-sample
    argv = ["evaluate", "run", "--checkpoint", str(checkpoint[0]), "--shards", str(root),
            "--out", str(tmp_path / "e"), "--workers", "0"]  # fmt: skip
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 1, result.output
    assert "corrupt shard" in result.output and "validation-000000.tar after key" in result.output
    assert "indexnet shards verify" in result.output
    written = list((tmp_path / "e" / "predictions").glob("*.png"))
    assert 0 < len(written) < 4  # the samples before the damage were predicted and kept


def test_baseline_scores_the_trivial_prediction_beside_the_model(shard_set, checkpoint, tmp_path):
    out = tmp_path / "eval"
    options = EvalOptions(checkpoint[0], str(shard_set), out, workers=1, limit=2, baseline=True)
    result = evaluate(options)
    expected = {m: [] for m in METRICS}
    for i, (_key, _rgb, trimap, alpha) in enumerate(
        scored_samples(resolve_shards(str(shard_set), "validation").urls)
    ):
        if i == 2:
            break
        pred = trimap.copy()  # 0.5 in the unknown region rounds to 128; 0 and 1 elsewhere
        for name, value in all_metrics(pred, alpha, trimap).items():
            expected[name].append(value)
    saved = json.loads((out / "metrics.json").read_text())["baseline"]
    for m in METRICS:
        assert saved[m] == result.baseline_means[m] == pytest.approx(np.mean(expected[m]))
    assert result.scores.count == 2 and saved["sad"] != result.scores.means["sad"]
    assert any(
        line.startswith("baseline sad") for line in (out / "eval.log").read_text().split("\n")
    )
    plain = evaluate(EvalOptions(checkpoint[0], str(shard_set), tmp_path / "plain", limit=1))
    assert plain.baseline_means is None
    assert "baseline" not in json.loads((tmp_path / "plain" / "metrics.json").read_text())


def test_a_set_on_a_store_scores_as_the_folder_and_a_refusal_exits_2(
    shard_set, checkpoint, tmp_path, s3
):
    from shards import store

    store.upload_folder(shard_set, "s3://test/set")
    local, remote = tmp_path / "local", tmp_path / "remote"
    runner = CliRunner()
    base = ["evaluate", "run", "--checkpoint", str(checkpoint[0]), "--workers", "1"]
    result = runner.invoke(app, [*base, "--shards", str(shard_set / "validation"),
                                 "--out", str(local)])  # fmt: skip
    assert result.exit_code == 0, result.output
    argv = [*base, "--shards", "s3://test/set/validation", "--out", str(remote),
            "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert _rows(remote) == _rows(local)
    assert (tmp_path / "cache" / "shards").is_dir()
    missing = "s3://test/nothing/index.json is missing"
    for bad, message in (("s3://no-such-bucket/set", "s3://no-such-bucket"),
                         ("s3://test/nothing", missing)):  # fmt: skip
        result = runner.invoke(app, [*base, "--shards", bad, "--out", str(tmp_path / "x")])
        assert result.exit_code == 2 and message in result.output, result.output
    s3.fault("deny", "GET /test/set/index.json")
    result = runner.invoke(app, [*base, "--shards", "s3://test/set", "--out", str(tmp_path / "y")])
    assert result.exit_code == 2 and "access denied" in result.output, result.output
    assert "testing-secret-key" not in result.output
