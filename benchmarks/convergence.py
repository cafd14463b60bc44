"""It learns: train a model from scratch on the sample data on the CPU, score the validation split.

In one run: make sample data (``--foregrounds``, seeded), build shards on a 2-worker Dask
cluster (``--bgs-per-train-fg`` train and ``--bgs-per-val-fg`` validation composites per
foreground, ``--val-count`` validation foregrounds), train with ``training.run.trainer.train`` for
``--steps`` steps at a small crop, then score every validation composite at full resolution
with the benchmark's metrics (``training.run.validate.validate``, as the trainer does after each
epoch) against a trivial baseline that predicts alpha 0.5 in the unknown region (and the
trimap's 0 and 1 elsewhere). Prints one JSON object: the settings, the loss curve (first and
last logged losses, per-epoch validation), the final metrics, the baseline's, and their ratios.

``--family indexnet`` (default) trains configs/default.yaml's IndexNet; from scratch means no
ImageNet backbone, so the encoder learns at the full rate (``backbone_lr_mult`` 1) and its
BatchNorm statistics update (``freeze_encoder_bn`` false): the reference's lower encoder rate
and frozen statistics assume pretrained weights. ``--family vitmatte`` trains ViTMatte-S with
configs/vitmatte.yaml's recipe (AdamW, weight decay 0.1, layer-wise decay 0.65, its loss), its
warmup shortened to ``--warmup-iters`` (15: 5% of 300 steps), without DINO weights. Both take
``--learning-rate`` and the same single x0.1 step (``--decay-at``), so that two runs differ
only in the family.

``--time-budget-s S`` stops at the first 25-step boundary at which S seconds of training
(the trainer's own time per chunk, its start-up included) are spent, if that comes before
``--steps``: the run goes in chunks of 25 steps, each resuming from the last (resume is
exact: the same batches and state as one run), so two families can be compared at the same
wall-clock budget.

    python benchmarks/convergence.py [--family vitmatte] [--steps 800] [--time-budget-s 300]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from configs import load_config  # noqa: E402
from evaluation.run import trivial_alpha  # noqa: E402
from pipeline.build import build  # noqa: E402
from pipeline.sample_data import make_sample_data  # noqa: E402
from shards.cluster import ClusterOptions  # noqa: E402
from shards.metrics import METRICS, all_metrics  # noqa: E402
from shards.reader import resolve_shards, scored_samples  # noqa: E402
from training.checkpoint import load_model  # noqa: E402
from training.run.trainer import RunOptions, train  # noqa: E402
from training.run.validate import validate  # noqa: E402


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def baseline(set_root: str) -> dict[str, float]:
    """Mean metrics of alpha 0.5 in the unknown region, the trimap's 0 and 1 elsewhere."""
    sums = dict.fromkeys(METRICS, 0.0)
    count = 0
    for _key, _rgb, trimap, alpha in scored_samples(resolve_shards(set_root, "validation").urls):
        for name, value in all_metrics(trivial_alpha(trimap), alpha, trimap).items():
            sums[name] += value
        count += 1
    return {name: value / count for name, value in sums.items()} | {"samples": count}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--family", choices=["indexnet", "vitmatte"], default="indexnet")
    parser.add_argument("--time-budget-s", type=float, default=None, help="training seconds")
    parser.add_argument("--warmup-iters", type=int, default=15, help="vitmatte's linear warmup")
    parser.add_argument("--foregrounds", type=int, default=12)
    parser.add_argument("--val-count", type=int, default=3, help="validation foregrounds")
    parser.add_argument("--bgs-per-train-fg", type=int, default=24)
    parser.add_argument("--bgs-per-val-fg", type=int, default=8)
    parser.add_argument("--steps", type=int, default=800, help="optimiser steps")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--input-size", type=int, default=64, help="network input side")
    parser.add_argument("--crop-sizes", default="[64, 96, 128]", help="crop sides (YAML)")
    parser.add_argument("--learning-rate", type=float, default=0.002)
    parser.add_argument(
        "--decay-at", type=float, default=0.7, help="share of the epochs before lr x0.1"
    )
    parser.add_argument("--loader-workers", type=int, default=1)
    parser.add_argument("--validate-every", type=int, default=3, help="epochs between scores")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="keep the data, shards and run here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        log(f"sample data and shards in {root}")
        backgrounds = args.foregrounds * (args.bgs_per_train_fg + args.bgs_per_val_fg)
        data = make_sample_data(
            root / "data", args.foregrounds, backgrounds, args.seed, overwrite=True
        )
        shards = root / "shards"
        data_cfg = load_config(
            overrides=[
                f"data.bgs_per_train_fg={args.bgs_per_train_fg}",
                f"data.bgs_per_val_fg={args.bgs_per_val_fg}",
                "data.samples_per_shard=16",
                f"data.seed={args.seed}",
            ]
        )
        built = build(
            data.data_dir,
            data.bg_dir,
            data_cfg,
            shards,
            ClusterOptions(workers=2),
            val_count=args.val_count,
            overwrite=True,
        )
        assert built.complete, built
        log(f"built {built.written} samples in {built.seconds:.1f} s")

        per_epoch = (built.written - args.val_count * args.bgs_per_val_fg) // args.batch_size
        epochs = -(-args.steps // per_epoch)
        milestone = max(1, round(args.decay_at * epochs))  # anneal once, late in the run
        recipe = ROOT / "configs" / "vitmatte.yaml" if args.family == "vitmatte" else None
        family_sets = (
            [f"optim.warmup_iters={args.warmup_iters}"]
            if args.family == "vitmatte"
            else ["optim.backbone_lr_mult=1", "model.indexnet.freeze_encoder_bn=false"]
        )
        cfg = load_config(
            recipe,
            [
                *family_sets,
                f"train.seed={args.seed}",
                f"train.batch_size={args.batch_size}",
                f"augment.input_size={args.input_size}",
                f"augment.crop_sizes={args.crop_sizes}",
                f"optim.learning_rate={args.learning_rate}",
                "optim.lr_factors=[]",
                "runtime.log_every=10",
                "runtime.checkpoint_every=0",
                f"optim.milestones=[{milestone}]",
                f"train.epochs={epochs}",
                "loader.shuffle_window=16",
                f"validation.every={args.validate_every}",
            ],
        )
        run = root / "run"
        shutil.rmtree(run, ignore_errors=True)  # a kept folder's earlier run
        log(f"training {args.steps} steps at {args.input_size}x{args.input_size}")
        chunk = args.steps if args.time_budget_s is None else 25
        spent, summary = 0.0, None
        while summary is None or summary.step < args.steps:
            target = min(args.steps, (summary.step if summary else 0) + chunk)
            options = RunOptions(
                str(shards),
                run,
                resume=summary is not None,
                max_steps=target,
                loader_workers=args.loader_workers,
            )
            summary = train(cfg, options)
            spent += summary.seconds
            if args.time_budget_s is not None and spent >= args.time_budget_s:
                break
        records = [json.loads(line) for line in (run / "train.jsonl").read_text().splitlines()]
        losses = [r for r in records if "loss" in r]
        log("scoring the validation split")
        model = load_model(run / "checkpoints" / "last.pt").eval()
        start = time.perf_counter()
        final = validate(model, str(shards), torch.device("cpu"))
        score_s = time.perf_counter() - start
        base = baseline(str(shards))

    return {
        "machine": {"nproc": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "data": {
            "train_samples": built.written - base["samples"],
            "validation_samples": base["samples"],
            "foregrounds": args.foregrounds,
            "validation_foregrounds": args.val_count,
        },
        "family": args.family,
        "train": {
            "steps": summary.step,
            "time_budget_s": args.time_budget_s,
            "epochs": summary.epochs,
            "batch": args.batch_size,
            "input_size": args.input_size,
            "crop_sizes": json.loads(args.crop_sizes),
            "learning_rate": args.learning_rate,
            "lr_x0.1_at_epoch": milestone,
            "optimizer": cfg.optim.optimizer,
            "warmup_iters": cfg.optim.warmup_iters,
            "weight_decay": cfg.optim.weight_decay,
            "seconds": round(spent, 1),
            "ms_per_step": round(1000 * spent / max(summary.step, 1), 1),
        },
        "loss": {
            "first": losses[0]["loss"],
            "last": losses[-1]["loss"],
            "curve": [(r["step"], round(r["loss"], 4)) for r in losses],
        },
        "validation_per_epoch": [
            {"epoch": r["epoch"], **{k: round(v, 4) for k, v in r["validation"].items()}}
            for r in records
            if "validation" in r
        ],
        "final": {k: round(v, 5) for k, v in final.items()},
        "baseline_alpha_0_5": {k: round(v, 5) for k, v in base.items()},
        "baseline_over_final": {m: round(base[m] / max(final[m], 1e-12), 2) for m in METRICS},
        "validation_scoring_s": round(score_s, 1),
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
