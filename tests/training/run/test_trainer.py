"""training.run.trainer and ``indexnet train``: real runs on the sample shards, single process and
2 gloo ranks under a real ``torchrun``, streaming over HTTP, with resume, restarts and faults."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
import torch
from typer.testing import CliRunner

from benchmarks.http_server import serve_directory
from configs import RenamedKeyWarning, load_config
from indexnet_cli import app
from tests.conftest import REPO
from tests.training.test_checkpoint import as_version_2
from training.checkpoint import load_checkpoint, load_model
from training.models.build import parameter_groups
from training.models.indexnet.network import IndexNet
from training.run.optim import build_optimizer, learning_rates, lr_factor
from training.run.trainer import RunOptions, TrainingError, TrainProgress, train

# a tiny network input so that a CPU step takes milliseconds; everything else is the recipe
TINY = [
    "augment.input_size=32",
    "augment.crop_sizes=[32]",
    "augment.small_image_min_side=64",
    "train.batch_size=2",
    "runtime.log_every=1",
    "validation.max_samples=2",
    "loader.shuffle_window=4",
]


def _cfg(*extra: str):
    return load_config(overrides=[*TINY, *extra])


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train.jsonl").read_text().splitlines()]


def _steps(run: Path) -> list[int]:
    return [r["step"] for r in _records(run) if "loss" in r]


def test_optimizer_groups_are_the_reference_recipe():
    """The registry's groups give Adam exactly the groups it had before families existed."""
    cfg = load_config(overrides=["optim.learning_rate=0.0123", "optim.backbone_lr_mult=7"])
    t, model = cfg.optim, IndexNet()
    optimizer = build_optimizer(model, t)
    encoder, decoder = optimizer.param_groups
    assert (encoder["name"], decoder["name"]) == ("encoder", "decoder")
    assert encoder["lr"] == t.learning_rate / t.backbone_lr_mult  # exactly: divided, as before
    assert decoder["lr"] == t.learning_rate
    assert [id(p) for p in encoder["params"]] == [id(p) for p in model.encoder_parameters()]
    assert [id(p) for p in decoder["params"]] == [id(p) for p in model.decoder_parameters()]
    for group in (encoder, decoder):
        assert group["betas"] == tuple(t.adam_betas) and group["eps"] == t.adam_eps
        assert group["weight_decay"] == t.weight_decay
    rates = learning_rates(optimizer, parameter_groups(model))
    assert list(rates.items()) == [("lr", decoder["lr"]), ("lr_encoder", encoder["lr"])]


def test_single_process_run_checkpoints_validates_and_resumes(shard_set, tmp_path):
    run = tmp_path / "run"
    cfg = _cfg("runtime.checkpoint_every=3")
    # 30 samples / batch 2 = 15 steps per epoch: 17 steps end epoch 0 and go 2 into epoch 1
    summary = train(cfg, RunOptions(str(shard_set), run, max_steps=17, loader_workers=0))
    assert summary.step == 17 and summary.epochs == 1 and summary.resumed_from is None
    assert torch.isfinite(torch.tensor(summary.last_loss))
    records = _records(run)
    assert _steps(run) == list(range(1, 18))
    first = records[0]
    assert {
        "loss",
        "loss_alpha",
        "loss_comp",
        "lr",
        "lr_encoder",
        "ms_per_step",
        "data_wait_ms",
        "samples_per_s",
    } <= first.keys()
    assert first["lr"] == 0.01 and first["lr_encoder"] == pytest.approx(1e-4)
    validation = [r for r in records if "validation" in r]
    assert len(validation) == 1 and validation[0]["step"] == 15
    assert set(validation[0]["validation"]) == {"sad", "mse", "grad", "conn", "samples"}
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert best["step"] == 15 and best["epoch"] == 1 and last["step"] == 17
    # one numbering of epochs: the first epoch's steps and validation, and best.pt, say 1
    assert validation[0]["epoch"] == best["epoch"] == 1 and first["epoch"] == 1
    assert best["best_grad"] == validation[0]["validation"]["grad"] == summary.best_grad
    assert last["config"]["augment"]["input_size"] == 32
    assert {"optimizer", "rng"} <= last.keys()
    assert load_config(run / "config.yaml") == cfg

    again = train(cfg, RunOptions(str(shard_set), run, resume=True, max_steps=20, loader_workers=0))
    assert again.resumed_from == 17 and again.step == 20
    assert _steps(run) == list(range(1, 21))
    assert {"resume": 17, "restarts": "0"} in _records(run)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 20
    assert load_model(run / "checkpoints" / "last.pt").cfg == cfg.model


def test_resume_continues_the_optimizer_state(shard_set, tmp_path):
    """A run resumed at step 4 goes on from the saved weights, Adam moments and schedule."""
    cfg = _cfg("validation.enabled=false", "runtime.checkpoint_every=4")
    run = tmp_path / "run"
    train(cfg, RunOptions(str(shard_set), run, max_steps=4, loader_workers=0))
    saved = load_checkpoint(run / "checkpoints" / "last.pt")
    model = load_model(run / "checkpoints" / "last.pt")
    # the optimizer state came back: one more resumed step moves from exactly these weights
    train(cfg, RunOptions(str(shard_set), run, resume=True, max_steps=5, loader_workers=0))
    after = load_checkpoint(run / "checkpoints" / "last.pt")
    assert after["step"] == 5
    state = after["optimizer"]["state"]
    assert all(int(s["step"]) == 5 for s in state.values())  # Adam's count went on from 4
    moved = [k for k, v in model.state_dict().items() if not torch.equal(v, after["model"][k])]
    assert moved and saved["optimizer"]["param_groups"] == after["optimizer"]["param_groups"]


def _same(a, b) -> bool:
    """Nested checkpoint values equal, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_a_resume_restores_every_piece_of_state_a_checkpoint_saves(shard_set, tmp_path):
    """Stopped at step 3 and resumed, a run ends at step 5 with exactly the uninterrupted
    run's weights, Adam state, schedule and counters (the decoder's dropout makes this hold
    only if the RNG state comes back, untouched by the loader); and the RNG state and best
    Grad a checkpoint holds are the ones a resumed run starts from."""
    cfg = _cfg("validation.enabled=false", "runtime.checkpoint_every=3")
    straight, split, crafted = tmp_path / "straight", tmp_path / "split", tmp_path / "crafted"
    train(cfg, RunOptions(str(shard_set), straight, max_steps=5, loader_workers=0))
    train(cfg, RunOptions(str(shard_set), split, max_steps=3, loader_workers=0))
    shutil.copytree(split, crafted)
    train(cfg, RunOptions(str(shard_set), split, resume=True, max_steps=5, loader_workers=0))
    a, b = (load_checkpoint(run / "checkpoints" / "last.pt") for run in (straight, split))
    for key in ("model", "optimizer", "rng", "epoch", "step", "step_in_epoch",
                "global_batch", "best_grad", "config"):  # fmt: skip
        assert _same(a[key], b[key]), key
    assert set(a) - {"format", "family", "model_config", "version"} <= {
        "model", "optimizer", "rng", "epoch", "step", "step_in_epoch",
        "global_batch", "best_grad", "config",
    }, "a new checkpoint entry must be restored by _resume and checked here"  # fmt: skip

    path = crafted / "checkpoints" / "last.pt"  # values a fresh start would not recreate
    state = torch.load(path, weights_only=True)
    generator = torch.Generator().manual_seed(1234)
    torch.rand(7, generator=generator)
    state["rng"]["torch"] = generator.get_state()
    state["best_grad"] = 1.25
    torch.save(state, path)

    class Seen(TrainProgress):
        def start(self, total_steps: int, first_step: int, steps_per_epoch: int) -> None:
            self.rng, self.first = torch.get_rng_state(), first_step

    seen = Seen()
    options = RunOptions(str(shard_set), crafted, resume=True, max_steps=4, loader_workers=0)
    summary = train(cfg, options, seen)
    assert seen.first == 3 and torch.equal(seen.rng, state["rng"]["torch"])
    assert summary.best_grad == 1.25
    assert load_checkpoint(path)["best_grad"] == 1.25


def test_init_fine_tunes_from_a_checkpoint_with_a_fresh_optimizer(shard_set, tmp_path):
    """--init copies every weight (a learning rate of 1e-30 leaves them as loaded: the params
    after one step are the source's to 1e-12), and starts Adam and the schedule afresh."""
    cfg = _cfg("validation.enabled=false")
    source = tmp_path / "source"
    train(cfg, RunOptions(str(shard_set), source, max_steps=3, loader_workers=0))
    ckpt = source / "checkpoints" / "last.pt"
    tuned = tmp_path / "tuned"
    still = replace(cfg, optim=replace(cfg.optim, learning_rate=1e-30))
    train(still, RunOptions(str(shard_set), tuned, max_steps=1, loader_workers=0, init=ckpt))
    a, b = load_checkpoint(ckpt), load_checkpoint(tuned / "checkpoints" / "last.pt")
    params = {n for n, _ in IndexNet().named_parameters()}
    # (a zero bias moves to -1e-30, nothing else moves: a fresh init would differ by ~1e-2)
    assert max(float((a["model"][n] - b["model"][n]).abs().max()) for n in params) < 1e-12
    assert b["step"] == 1  # and the schedule starts afresh:
    assert [g["lr"] for g in b["optimizer"]["param_groups"]] == pytest.approx([1e-32, 1e-30])
    assert {int(s["step"]) for s in b["optimizer"]["state"].values()} == {1}  # fresh Adam
    assert {"init": str(ckpt)} in _records(tuned)

    def refused(run_cfg, message: str, **options) -> None:
        with pytest.raises(ValueError, match=message):
            train(run_cfg, RunOptions(str(shard_set), tmp_path / "x", loader_workers=0, **options))

    o2o = replace(
        cfg, model=replace(cfg.model, indexnet=replace(cfg.model.indexnet, index_block="o2o"))
    )
    refused(o2o, r"another IndexNet variant than this run's: model.indexnet.index_block: 'm2o' "
                 r"there, 'o2o' here", init=ckpt)  # fmt: skip
    vit = replace(cfg, model=replace(cfg.model, family="vitmatte"))
    refused(vit, r"holds a IndexNet model, and this run trains ViTMatte", init=ckpt)
    refused(cfg, "--init starts a new run.*--resume continues a run", init=ckpt, resume=True)
    refused(cfg, "missing.pt: no such checkpoint file", init=tmp_path / "missing.pt")


def test_cli_train_and_its_errors(shard_set, tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    args = [
        "train",
        "--shards",
        str(shard_set),
        "--out",
        str(run),
        "--loader-workers",
        "0",
        "--input-size",
        "32",
        "--batch-size",
        "2",
        "--max-steps",
        "2",
        "--set",
        "crop_sizes=[32]",
        "--set",
        "augment.small_image_min_side=64",
        "--set",
        "validate=false",  # a bare key is train.<key> as before: an old name, mapped
    ]
    with pytest.warns(RenamedKeyWarning, match="--set: train.validate is now validation.enabled"):
        result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "steps 2" in result.output and "checkpoint:" in result.output
    args[args.index("validate=false")] = "validation.enabled=false"  # the new name from here on
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2

    # --data-only: the same data path, timed, in a run directory of its own
    data_run = tmp_path / "data-only"
    only = [a if a != str(run) else str(data_run) for a in args]
    only[only.index("--max-steps") + 1] = "5"
    only[only.index("--loader-workers") + 1] = "2"
    # a GPU this slow needs 0.02 samples/s: one loader process, whatever this machine's speed
    result = runner.invoke(app, [*only, "--data-only", "--set", "target_step_ms=100000"])
    assert result.exit_code == 0, result.output
    report = json.loads((data_run / "data_only.json").read_text())
    assert report["samples"] == 4 * 2 and report["steps"] == 5  # timed after the first batch
    assert report["loader_workers"] == 2 and report["samples_per_s"] > 0
    assert report["per_process_samples_per_s"] == pytest.approx(report["samples_per_s"] / 2, 0.01)
    assert report["samples_per_s_needed"] == 0.02  # batch 2 every 100 s
    assert report["loader_processes_needed"] == report["suggested_loader_workers"] == 1
    assert 0 < report["cache_hit_rate"] < 1
    assert "--loader-workers 1" in result.output, result.output
    assert "samples/s per loader process" in result.output
    assert not (data_run / "checkpoints").exists()  # no model, no checkpoint

    def fails(extra: list[str], message: str, out: Path = tmp_path / "other") -> None:
        argv = [a if a != str(run) else str(out) for a in args] + extra
        result = runner.invoke(app, argv)
        assert result.exit_code == 2, result.output
        assert message in result.output, result.output

    fails(["--resume"], "--resume: no checkpoint at")
    fails([], "holds a run already", out=run)  # a finished run is never overwritten
    fails(["--device", "tpu"], "--device must be cpu or cuda")
    fails(["--batch-size", "1"], "train.batch_size: must be >= 2")
    fails(["--set", "train.epochz=1"], "train.epochz: unknown key")
    fails(["--set", "sync_bn=true"], "runtime.sync_bn needs --device cuda")
    fails(
        ["--loader-workers", "9"],
        "--loader-workers 9 must divide the per-rank batch (--batch-size 2)",
    )
    fails(["--shards", str(tmp_path)], "index.json is missing")
    fails(["--data-only", "--max-steps", "1"], "--data-only times from the first batch")
    only_train = shutil.copytree(shard_set, tmp_path / "only-train")
    index = json.loads((only_train / "index.json").read_text())
    index["shards"] = [s for s in index["shards"] if s["split"] == "train"]
    (only_train / "index.json").write_text(json.dumps(index))
    result = runner.invoke(
        app,
        [
            "train",
            "--shards",
            str(only_train),
            "--out",
            str(tmp_path / "x"),
            "--loader-workers",
            "0",
        ],
    )
    assert result.exit_code == 2 and "no validation shards" in result.output, result.output


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(shard_set, tmp_path, capsys):
    run = tmp_path / "run"
    # a learning rate this large sends the weights to +-1e30 in one step (still finite: that
    # checkpoint is written); the next loss overflows, and the run stops before the update
    wild = _cfg(
        "validation.enabled=false",
        "runtime.checkpoint_every=1",
        "optim.learning_rate=1e30",
        "optim.backbone_lr_mult=1",
    )
    with pytest.raises(
        TrainingError,
        match=r"loss is not finite at epoch 1 step 2 .*before the "
        r"update.*last good checkpoint is .*last\.pt",
    ):
        train(wild, RunOptions(str(shard_set), run, max_steps=10, loader_workers=0))
    last = run / "checkpoints" / "last.pt"
    assert load_checkpoint(last)["step"] == 1
    assert not list(run.rglob("*.tmp"))
    # resuming with another learning rate says that the saved schedule wins
    tame = _cfg(
        "validation.enabled=false", "runtime.checkpoint_every=0", "optim.backbone_lr_mult=1"
    )
    with pytest.raises(TrainingError, match="loss is not finite at epoch 1 step 2"):
        train(tame, RunOptions(str(shard_set), run, resume=True, max_steps=10, loader_workers=0))
    assert "optim.learning_rate: 1e+30 -> 0.01" in capsys.readouterr().err
    assert load_checkpoint(last)["step"] == 1


def test_resuming_a_version_2_checkpoint_compares_configs_by_the_new_names(
    shard_set, tmp_path, capsys
):
    """A version-2 last.pt records its config under the old names (train.learning_rate,
    loss.*, a flat model section); a resume maps them before comparing, so the same settings
    are no change, and a changed one is named by its new name."""
    run = tmp_path / "run"
    cfg = _cfg("validation.enabled=false", "runtime.checkpoint_every=0")
    train(cfg, RunOptions(str(shard_set), run, max_steps=2, loader_workers=0))
    last = run / "checkpoints" / "last.pt"

    def to_version_2() -> None:
        torch.save(as_version_2(torch.load(last, weights_only=True)), last)

    to_version_2()
    assert "learning_rate" in torch.load(last, weights_only=True)["config"]["train"]
    capsys.readouterr()
    summary = train(
        cfg, RunOptions(str(shard_set), run, resume=True, max_steps=3, loader_workers=0)
    )
    assert summary.resumed_from == 2 and summary.step == 3
    assert "differs from its own" not in capsys.readouterr().err
    to_version_2()
    other = replace(
        cfg,
        optim=replace(cfg.optim, learning_rate=0.02),
        model=replace(
            cfg.model,
            indexnet=replace(cfg.model.indexnet, loss=replace(cfg.model.indexnet.loss, eps=0.5)),
        ),
    )
    train(other, RunOptions(str(shard_set), run, resume=True, max_steps=4, loader_workers=0))
    err = capsys.readouterr().err
    changes = "model.indexnet.loss.eps: 1e-06 -> 0.5, optim.learning_rate: 0.01 -> 0.02;"
    assert f"differs from its own in {changes}" in err and "train.learning_rate" not in err


def _truncated_copy(shard_set: Path, tmp_path: Path) -> Path:
    root = shutil.copytree(shard_set, tmp_path / "damaged")
    for name in ("train-000000.tar", "train-000001.tar", "train-000002.tar", "train-000003.tar"):
        path = root / "train" / name
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 2 // 3])  # cut inside a member
    return root


def test_corrupt_shard_stops_naming_it_or_is_skipped_and_counted(shard_set, tmp_path):
    damaged = _truncated_copy(shard_set, tmp_path)
    args = [
        "train",
        "--shards",
        str(damaged),
        "--loader-workers",
        "0",
        "--input-size",
        "32",
        "--batch-size",
        "2",
        "--max-steps",
        "12",
        "--set",
        "crop_sizes=[32]",
        "--set",
        "small_image_min_side=64",
        "--set",
        "validation.enabled=false",
    ]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "stop")])
    assert result.exit_code == 1, result.output
    assert "corrupt shard" in result.output and "train-00000" in result.output
    assert "from key o_" in result.output and "loader.corrupt=skip" in result.output

    result = CliRunner().invoke(
        app, [*args, "--out", str(tmp_path / "skip"), "--set", "loader.corrupt=skip"]
    )
    assert result.exit_code == 0, result.output
    assert re.search(r"replaced \d+ corrupt sample\(s\)", result.output), result.output


# -- DDP: 2 gloo ranks under a real torchrun ------------------------------------------------


def _torchrun(*args: str, restarts: int = 0) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "--max-restarts",
        str(restarts),
        "-m",
        "training",
        *args,
    ]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("TORCHELASTIC_RESTART_COUNT", None)
    return env


def _kill_tree(proc: subprocess.Popen) -> None:
    """Kill torchrun and every process under it (its ranks run in sessions of their own)."""
    try:
        family = [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]
    except psutil.Error:
        return
    for p in family:
        with contextlib.suppress(psutil.Error):
            p.kill()


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=cwd
    )
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        _kill_tree(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _ddp_args(shards: str, run: Path, steps: int, *extra: str) -> list[str]:
    sets = [x for s in TINY for x in ("--set", s)]
    return ["--shards", shards, "--out", str(run), "--max-steps", str(steps), *sets, *extra]


def test_ddp_two_ranks_stream_uneven_shards_over_http_and_resume(shard_set, tmp_path):
    run = tmp_path / "run"
    with serve_directory(shard_set.parent) as base:
        url = base + shard_set.name + "/"
        # 30 samples in shards of 8, 8, 8 and 6 over 2 ranks x batch 2: 7 steps per epoch on
        # every rank, though the ranks hold different numbers of samples
        first = _run(_torchrun(*_ddp_args(url, run, 8, "--loader-workers", "1")), tmp_path)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "on 2 rank(s)" in first.stdout
        last = load_checkpoint(run / "checkpoints" / "last.pt")
        assert last["step"] == 8
        validation = [r for r in _records(run) if "validation" in r]
        assert len(validation) == 1 and validation[0]["step"] == 7
        assert validation[0]["validation"]["samples"] == 2  # shared by the ranks, then reduced
        assert (run / "checkpoints" / "best.pt").exists()
        assert all(torch.isfinite(torch.tensor(r["loss"])) for r in _records(run) if "loss" in r)

        resumed = _run(
            _torchrun(*_ddp_args(url, run, 10, "--loader-workers", "1", "--resume")), tmp_path
        )
        probe = tmp_path / "data-only"
        timed = _run(
            _torchrun(*_ddp_args(url, probe, 4, "--loader-workers", "1", "--data-only")), tmp_path
        )
    assert timed.returncode == 0, timed.stdout + timed.stderr
    report = json.loads((probe / "data_only.json").read_text())
    assert report["world_size"] == 2 and report["samples"] == 3 * 2 * 2  # after the first step
    assert timed.stdout.count("samples/s per loader process") == 1  # rank 0 reports
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed at 8" in resumed.stdout
    assert _steps(run) == list(range(1, 11))
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 10


def test_ddp_trains_the_second_family_on_two_ranks(shard_set, tmp_path):
    """ViTMatte-S through the same DDP path (2 gloo ranks): its layer-decay groups, AdamW and
    loss, a validation reduced over the ranks, and one checkpoint that loads as ViTMatte."""
    pytest.importorskip("transformers")
    run = tmp_path / "run"
    sets = ["model.family=vitmatte", "optim.optimizer=adamw", "augment.input_size=64",
            "augment.crop_sizes=[64]", "augment.small_image_min_side=100"]  # fmt: skip
    extra = [x for s in sets for x in ("--set", s)]
    done = _run(
        _torchrun(*_ddp_args(str(shard_set), run, 2, "--loader-workers", "0", *extra)), tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "on 2 rank(s)" in done.stdout
    records = [r for r in _records(run) if "loss" in r]
    assert [r["step"] for r in records] == [1, 2] and "loss_laplacian" in records[-1]
    assert records[-1]["lr"] == load_config().optim.learning_rate  # the decoder's, x1
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 2 and ckpt["family"] == "vitmatte"
    assert load_model(run / "checkpoints" / "last.pt").cfg.family == "vitmatte"


def _rank_pids(agent: int) -> list[int]:
    pids = []
    for child in psutil.Process(agent).children(recursive=True):
        try:
            if "training" in child.cmdline():
                pids.append(child.pid)
        except psutil.Error:
            continue
    return pids


@pytest.mark.slow  # a real process killed and brought back: the longest of its file
def test_a_killed_rank_comes_back_from_the_last_checkpoint(shard_set, tmp_path):
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.pt"
    cmd = _torchrun(
        *_ddp_args(
            str(shard_set),
            run,
            60,
            "--loader-workers",
            "0",
            "--set",
            "validation.enabled=false",
            "--set",
            "checkpoint_every=4",
        ),
        restarts=1,
    )
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(), cwd=tmp_path
    )
    try:
        deadline = time.monotonic() + 120
        while not last.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint came"
            time.sleep(0.02)
        ranks = _rank_pids(proc.pid)
        assert len(ranks) == 2, ranks
        os.kill(ranks[1], signal.SIGKILL)
        output, _ = proc.communicate(timeout=300)
    finally:
        _kill_tree(proc)
    assert proc.returncode == 0, output
    resumes = [r for r in _records(run) if "resume" in r]
    assert resumes and resumes[0]["restarts"] == "1" and resumes[0]["resume"] % 4 == 0
    steps = _steps(run)
    assert steps[-1] == 60 and sorted(set(steps)) == list(range(1, 61))
    assert load_checkpoint(last)["step"] == 60


def _batches(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "batches.jsonl").read_text().splitlines()]


@pytest.mark.slow  # a real process killed and brought back: the longest of its file
def test_the_same_global_batches_on_any_cluster_shape_and_across_resumes(shard_set, tmp_path):
    """20 steps (3 epochs of 7, global batch 4), keys and input digests from batches.jsonl:
    1 rank x 2 workers; 1 rank x 0 workers; 1 rank stopped at step 9 and resumed; 2 gloo ranks
    x 1 worker under torchrun over HTTP, stopped at step 9 and resumed on 1 rank."""
    one = _cfg("train.batch_size=4", "runtime.log_batches=true", "validation.enabled=false")
    reference = tmp_path / "reference"
    train(one, RunOptions(str(shard_set), reference, max_steps=20, loader_workers=2))
    expected = _batches(reference)
    assert [b["step"] for b in expected] == list(range(1, 21))
    assert [b["epoch"] for b in expected] == [0] * 7 + [1] * 7 + [2] * 6
    assert all(len(b["keys"]) == len(b["digests"]) == 4 for b in expected)
    epoch0 = [key for b in expected[:7] for key in b["keys"]]
    assert len(set(epoch0)) == 28  # every sample once but the remainder of 2
    assert epoch0 != [key for b in expected[7:14] for key in b["keys"]]

    inline = tmp_path / "inline"
    train(one, RunOptions(str(shard_set), inline, max_steps=20, loader_workers=0))
    assert _batches(inline) == expected

    resumed = tmp_path / "resumed"
    train(one, RunOptions(str(shard_set), resumed, max_steps=9, loader_workers=1))
    train(one, RunOptions(str(shard_set), resumed, resume=True, max_steps=20, loader_workers=2))
    assert _batches(resumed) == expected

    elastic = tmp_path / "elastic"
    log = ["--set", "runtime.log_batches=true", "--set", "validation.enabled=false"]
    with serve_directory(shard_set.parent) as base:
        url = base + shard_set.name + "/"
        first = _run(
            _torchrun(*_ddp_args(url, elastic, 9, "--loader-workers", "1", *log)), tmp_path
        )
    assert first.returncode == 0, first.stdout + first.stderr
    assert _batches(elastic) == expected[:9]
    train(one, RunOptions(str(shard_set), elastic, resume=True, max_steps=20, loader_workers=1))
    assert _batches(elastic) == expected

    other = _cfg("train.batch_size=2", "runtime.log_batches=true", "validation.enabled=false")
    with pytest.raises(ValueError, match="global batch of 4, and this run has 1 rank.* = 2"):
        train(other, RunOptions(str(shard_set), elastic, resume=True, max_steps=30))


def test_logged_learning_rates_follow_the_schedule_across_a_resume(shard_set, tmp_path):
    """Each step's lr is base x lr_factor(step): a warmup over 4 steps, x0.5 from epoch 1 (of
    15 steps); a run resumed at step 3 logs the same rates as one that was not stopped."""
    cfg = _cfg(
        "validation.enabled=false", "runtime.checkpoint_every=3", "optim.warmup_iters=4",
        "optim.milestones=[1]", "optim.lr_factors=[0.5]",
    )  # fmt: skip
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(cfg, RunOptions(str(shard_set), straight, max_steps=17, loader_workers=0))
    train(cfg, RunOptions(str(shard_set), split, max_steps=3, loader_workers=0))
    train(cfg, RunOptions(str(shard_set), split, resume=True, max_steps=17, loader_workers=0))
    want = [0.01 * lr_factor(cfg.optim, step, 15) for step in range(17)]
    assert want[0] == pytest.approx(1e-5) and want[4] == 0.01 and want[15] == 0.005
    for run in (straight, split):
        got = [(r["lr"], r["lr_encoder"]) for r in _records(run) if "loss" in r]
        assert got == [(lr, pytest.approx(lr / 100)) for lr in want]
