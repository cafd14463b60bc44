"""training.run.curves, .tensorboard_log and ``indexnet report``: a real two-epoch run on the
sample shards (resumed after the first epoch), its curves, event files and best validation."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from configs import load_config
from indexnet_cli import app
from shards.mattes import trivial_alpha
from tests.training.run.test_trainer import TINY as TRAINER_TINY
from training.run.curves import METRIC_FORMATS, draw, read_run
from training.run.trainer import RunOptions, train

TINY = [*TRAINER_TINY, "train.epochs=2"]  # tests/test_trainer.py's: a CPU step takes milliseconds
PER_EPOCH = 15  # 30 train samples / batch 2


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train.jsonl").read_text().splitlines()]


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, f"{path} does not decode"
    return image.shape[1], image.shape[0]


@pytest.fixture(scope="module")
def run(shard_set, tmp_path_factory) -> dict:
    """Epoch 0, then a resume for epoch 1: curves.png's bytes after each part, and the run."""
    run = tmp_path_factory.mktemp("curves") / "run-a"
    cfg = load_config(overrides=TINY)
    train(cfg, RunOptions(str(shard_set), run, max_steps=PER_EPOCH, loader_workers=0))
    first = (run / "curves.png").read_bytes()
    train(cfg, RunOptions(str(shard_set), run, resume=True, loader_workers=0))
    return {"path": run, "first": first, "second": (run / "curves.png").read_bytes()}


def test_training_draws_curves_atomically_and_redraws_them_on_resume(run):
    path = run["path"] / "curves.png"
    width, height = _png_size(path)
    assert 800 <= width <= 2000 and 500 <= height <= 1200
    assert 20_000 < path.stat().st_size < 400_000
    assert run["first"] != run["second"]  # epoch 1's validation and steps are drawn in
    assert not list(run["path"].glob("*.tmp"))  # written through a temporary file, renamed


def test_read_run_parses_steps_validations_and_the_baseline_once(run, shard_set):
    records = _records(run["path"])
    baselines = [r for r in records if "baseline" in r]
    assert len(baselines) == 1 and baselines[0]["step"] == PER_EPOCH  # the first validation
    log = read_run(run["path"])
    assert log.name == "run-a"
    assert [r["step"] for r in log.steps] == list(range(1, 2 * PER_EPOCH + 1))
    assert [(v["epoch"], v["step"]) for v in log.validations] == [(1, 15), (2, 30)]
    assert log.baseline == baselines[0]["baseline"]
    # the baseline is the trivial prediction's scores on the same samples as validation's
    from shards.metrics import all_metrics
    from shards.reader import load_index, scored_samples, shard_urls

    urls = shard_urls(load_index(str(shard_set)), "validation")
    scores = [all_metrics(trivial_alpha(t), a, t) for _, _, t, a in scored_samples(urls, 2)]
    assert log.baseline["samples"] == 2
    for metric in ("sad", "mse", "grad", "conn"):
        expected = sum(s[metric] for s in scores) / 2
        assert log.baseline[metric] == pytest.approx(expected)


def test_read_run_names_the_corrupt_line_and_an_empty_log(tmp_path):
    run = tmp_path / "bad"
    run.mkdir()
    (run / "train.jsonl").write_text('{"step": 1, "epoch": 0, "loss": 1.0}\n{"step": 2, "ep\n')
    with pytest.raises(ValueError, match=r"train\.jsonl, line 2: not JSON"):
        read_run(run)
    (run / "train.jsonl").write_text('{"step": 1, "epoch": 0, "loss": 1.0}\n{"step": 2, "ep')
    assert len(read_run(run).steps) == 1  # an unterminated last line is being written
    (run / "train.jsonl").write_text('{"resume": 3}\n')
    with pytest.raises(ValueError, match="no step or validation record yet"):
        read_run(run)
    with pytest.raises(ValueError, match="no training log"):
        read_run(tmp_path)
    with pytest.raises(ValueError, match="no such run folder"):
        read_run(tmp_path / "missing")


def test_a_resume_drops_what_the_interrupted_run_logged_after_its_checkpoint(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    lines = [{"step": s, "epoch": 0, "loss": 1.0 / s, "lr": 0.01} for s in (1, 2, 3)]
    lines += [{"resume": 2}, {"step": 3, "epoch": 0, "loss": 0.25, "lr": 0.01}]
    (run / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    log = read_run(run)
    assert [(r["step"], r["loss"]) for r in log.steps] == [(1, 1.0), (2, 0.5), (3, 0.25)]
    draw([log], tmp_path / "one.png")  # no validation, no baseline: panels (a) and (b) only
    assert _png_size(tmp_path / "one.png")[0] > 800


def _fake_run(root: Path, name: str, grads: list[float]) -> Path:
    run = root / name
    run.mkdir()
    lines = []
    for epoch, grad in enumerate(grads):
        step = 10 * (epoch + 1)
        lines.append({"step": step, "epoch": epoch, "loss": 1.0 / step, "loss_alpha": 0.5 / step,
                      "lr": 0.01, "lr_encoder": 0.0001})  # fmt: skip
        metrics = {"sad": 10.0 + epoch, "mse": 0.01 * grad, "grad": grad, "conn": 9.0 - epoch}
        lines.append({"validation": metrics | {"samples": 2}, "epoch": epoch, "step": step})
    (run / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return run


def _expect_row(out: str, name: str, best: dict) -> None:
    row = next(line for line in out.splitlines() if line.startswith(name))
    cells = row.split()
    assert cells[1:3] == [str(best["epoch"]), str(best["step"])], row
    metrics = [format(best[m], METRIC_FORMATS[m]) for m in ("sad", "mse", "grad", "conn")]
    assert cells[3:] == metrics, row


def test_report_overlays_runs_and_prints_each_best_validation(run, tmp_path):
    other = _fake_run(tmp_path, "run-b", [5.0, 3.0, 4.0])  # the best is epoch 1, not the last
    out = tmp_path / "x.png"
    result = CliRunner().invoke(app, ["report", str(run["path"]), str(other), "-o", str(out)])
    assert result.exit_code == 0, result.output
    validations = [r for r in _records(run["path"]) if "validation" in r]
    best = min(validations, key=lambda r: r["validation"]["grad"])
    _expect_row(result.output, "run-a", {"epoch": best["epoch"], "step": best["step"]}
                | best["validation"])  # fmt: skip
    _expect_row(result.output, "run-b", {"epoch": 1, "step": 20, "sad": 11.0, "mse": 0.03,
                                         "grad": 3.0, "conn": 8.0})  # fmt: skip
    assert "baseline" in result.output  # run-a's, under its row
    assert _png_size(out)[0] > 800 and str(out) in result.output
    assert not list(tmp_path.glob("*.tmp"))


def test_report_of_one_run_defaults_to_its_curves_png(tmp_path):
    one = _fake_run(tmp_path, "solo", [2.0])
    result = CliRunner().invoke(app, ["report", str(one)])
    assert result.exit_code == 0, result.output
    assert (one / "curves.png").is_file()


def test_report_errors_exit_2_naming_the_problem(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "no such run folder" in result.output
    bad = _fake_run(tmp_path, "bad", [1.0, 2.0])
    with open(bad / "train.jsonl", "a") as f:
        f.write("{oops\n")
    result = runner.invoke(app, ["report", str(bad), "-o", str(tmp_path / "r.png")])
    assert result.exit_code == 2 and "train.jsonl, line 5" in result.output
    assert not (tmp_path / "r.png").exists()


def test_tensorboard_events_hold_scalars_baseline_and_sample_images(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run["path"] / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    scalars, images = events.Tags()["scalars"], events.Tags()["images"]
    for tag in ("train/loss", "train/loss_alpha", "lr/full", "lr/encoder", "perf/ms_per_step",
                "val/sad", "val/grad", "baseline/sad"):  # fmt: skip
        assert tag in scalars, tag
    assert [e.step for e in events.Scalars("val/sad")] == [15, 30]  # both parts of the run
    assert len(events.Scalars("baseline/sad")) == 1
    assert len(events.Scalars("train/loss")) == 2 * PER_EPOCH
    assert "val/sample_0" in images and "val/sample_1" in images  # val_max_samples=2
    image = events.Images("val/sample_0")[-1]
    assert image.width <= 512 and image.height >= 8


def test_training_without_tensorboard_notes_it_once(shard_set, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # the import fails
    cfg = load_config(overrides=TINY)
    run = tmp_path / "run"
    summary = train(cfg, RunOptions(str(shard_set), run, max_steps=3, loader_workers=0))
    assert summary.step == 3  # no validation: the note comes when the run is set up
    err = capsys.readouterr().err
    assert err.count("no TensorBoard logs") == 1, err
    assert "pip install" in err
    assert not (run / "tensorboard").exists()
    assert (run / "curves.png").is_file()


def test_a_failure_to_draw_warns_once_and_training_goes_on(
    shard_set, tmp_path, monkeypatch, capsys
):
    import training.run.curves

    def broken(runs, path):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(training.run.curves, "draw", broken)
    run = tmp_path / "run"
    cfg = load_config(overrides=[*TINY, "runtime.log_every=5"])
    # drawn after the validation at step 15 and again at the end: both fail, one warning
    summary = train(cfg, RunOptions(str(shard_set), run, max_steps=PER_EPOCH, loader_workers=0))
    assert summary.step == PER_EPOCH and (run / "checkpoints" / "best.pt").is_file()
    err = capsys.readouterr().err
    assert err.count("could not draw") == 1 and "no fonts" in err, err
    assert not (run / "curves.png").exists()
