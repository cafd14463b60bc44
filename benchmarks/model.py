"""Size and speed of a model family: parameters, GFLOPs, training steps, a full-HD forward.

``--family indexnet`` (the released IndexNet, configs/default.yaml) or ``--family vitmatte``
(ViTMatte-S, or ``--variant base``, with configs/vitmatte.yaml's recipe; needs the [vitmatte]
extra). A training step is what the trainer does per batch: ``zero_grad``, forward, the family's
loss (float32), backward, the trainer's optimiser over the family's parameter groups (IndexNet:
Adam, encoder BatchNorm frozen; ViTMatte: AdamW over 14 layer-decay groups). Inputs are random
tensors of the right shapes, made once on the device (no data loading is timed). Forward GFLOPs
are counted at 320x320 (IndexNet's training crop) and 512x512 (ViTMatte's).

- ``--device cpu``: IndexNet in float32, channels_last and contiguous, at ``--batch`` (16) and
  at batch 2 (training needs B >= 2: the ASPP image-pooling branch has a BatchNorm over a 1x1
  map); ViTMatte at batch 2 only (contiguous; ``--batch`` adds a case when it is not 16); then
  the forward pass for one 1080x1920 image (padded to 1088x1920 as the family's inference pads,
  eval, no grad). The first step of each case is untimed (allocation); IndexNet takes about 15
  minutes on 2 cores.
- ``--device cuda``: in the same run, eager float32 (NCHW, default cuDNN settings) against
  bf16 autocast + channels_last + ``torch.compile``; the same two for one 1080x1920 forward.

Prints one JSON object. Target (issue 5): <= 50 ms per training step at batch 16 on one H100
(the reference: ~516 ms on a V100).

    python benchmarks/model.py [--family indexnet|vitmatte] [--variant small|base]
        [--device cpu|cuda] [--steps N] [--batch 16]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import cpu_model  # noqa: E402 - sibling module

from configs import load_config  # noqa: E402
from training.models.build import build_model, count_parameters  # noqa: E402
from training.models.registry import get_family  # noqa: E402
from training.run.optim import build_optimizer  # noqa: E402 - the trainer's own groups and optimiser

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
RECIPES = {"indexnet": None, "vitmatte": CONFIGS / "vitmatte.yaml"}  # None: default.yaml

FULL_HD = (1080, 1920)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=sorted(RECIPES), default="indexnet")
    parser.add_argument(
        "--variant",
        default=None,
        help="model.vitmatte.size of the family (vitmatte: small or base)",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps per case (default: cpu 2, cuda 30)"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed steps after the first (cpu 0, cuda 10)"
    )
    parser.add_argument("--batch", type=int, default=16, help="training batch (default 16)")
    parser.add_argument("--size", type=int, default=320, help="training input side (default 320)")
    parser.add_argument(
        "--compile-mode", default="max-autotune-no-cudagraphs", help="torch.compile mode (cuda)"
    )
    parser.add_argument("--skip-full-hd", action="store_true", help="skip the 1080x1920 forward")
    return parser.parse_args(argv)


def recipe(family: str, variant: str | None):
    """The family's training recipe (configs/), with ``model.vitmatte.size`` when given."""
    sets = [f"model.family={family}"] + ([f"model.vitmatte.size={variant}"] if variant else [])
    return load_config(RECIPES[family], sets)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, warmup: int, steps: int) -> dict:
    """Milliseconds of each of ``steps`` calls after ``warmup`` untimed ones.

    Also the process's CPU seconds per wall second over the timed calls: about the thread count
    when the machine was ours alone, less when other processes took cores (CPU runs only).
    """
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    busy = (time.process_time() - cpu_start) / (time.perf_counter() - wall_start)
    return {"times": times, "cpu_per_wall": round(busy, 2)}


def stats(measured: dict, batch: int) -> dict:
    times = measured["times"]
    mean = statistics.fmean(times)
    result = {
        "ms_per_step": round(mean, 1),
        "min_ms": round(min(times), 1),
        "runs_ms": [round(t, 1) for t in times],
        "images_per_s": round(batch * 1e3 / mean, 2),
    }
    return result | {"cpu_per_wall": measured["cpu_per_wall"]}


def make_batch(batch: int, size: int, device: torch.device, channels_last: bool) -> dict:
    g = torch.Generator().manual_seed(0)
    alpha = torch.rand(batch, 1, size, size, generator=g)
    fg, bg = (
        torch.rand(batch, 3, size, size, generator=g),
        torch.rand(batch, 3, size, size, generator=g),
    )
    data = {
        "image": torch.randn(batch, 4, size, size, generator=g),
        "alpha": alpha,
        "fg": fg,
        "bg": bg,
        "merged": alpha * fg + (1 - alpha) * bg,
        "unknown": torch.rand(batch, 1, size, size, generator=g) > 0.5,
    }
    data = {k: v.to(device) for k, v in data.items()}
    if channels_last:
        data["image"] = data["image"].contiguous(memory_format=torch.channels_last)
    return data


def train_step_case(
    cfg,
    device: torch.device,
    batch: int,
    size: int,
    warmup: int,
    steps: int,
    channels_last: bool,
    bf16: bool,
    compile_mode: str | None,
) -> dict:
    torch.manual_seed(0)
    family = get_family(cfg.model.family)
    model = build_model(cfg.model).to(device).train()
    family.freeze_norm(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg.optim)
    forward = torch.compile(model, mode=compile_mode) if compile_mode else model
    data = make_batch(batch, size, device, channels_last)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            pred = forward(data["image"])
        loss = family.loss(pred.float(), data, cfg.model)["loss"]
        loss.backward()
        optimizer.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    step()  # first step: allocation, cuDNN autotuning, compilation
    sync(device)
    first = time.perf_counter() - start
    result = {
        "batch": batch,
        "size": size,
        "dtype": "bfloat16 autocast" if bf16 else "float32",
        "memory_format": "channels_last" if channels_last else "contiguous",
        "compiled": compile_mode or False,
        "first_step_s": round(first, 2),
        **stats(timed(step, device, warmup, steps), batch),
    }
    if device.type == "cuda":
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return result


def full_hd_case(
    cfg,
    device: torch.device,
    warmup: int,
    steps: int,
    channels_last: bool,
    bf16: bool,
    compile_mode,
) -> dict:
    torch.manual_seed(0)
    family = get_family(cfg.model.family)
    model = build_model(cfg.model).to(device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model, mode=compile_mode) if compile_mode else model
    h, w = FULL_HD
    image = torch.randn(1, 4, h, w, device=device)
    pad_h, pad_w = -h % family.pad_multiple, -w % family.pad_multiple
    mode = "constant" if family.pad_mode == "zeros" else "reflect"

    def run() -> None:
        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            x = F.pad(image, (0, pad_w, 0, pad_h), mode=mode)  # (1, 4, 1088, 1920)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            forward(x)[..., :h, :w].float()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    measured = timed(run, device, warmup, steps)
    times = measured["times"]
    result = {
        "image": f"{h}x{w}",
        "padded_to": f"{h + pad_h}x{w + pad_w}",
        "dtype": "bfloat16 autocast" if bf16 else "float32",
        "memory_format": "channels_last" if channels_last else "contiguous",
        "compiled": compile_mode or False,
        "ms": round(statistics.fmean(times), 1),
        "min_ms": round(min(times), 1),
        "runs_ms": [round(t, 1) for t in times],
        "cpu_per_wall": measured["cpu_per_wall"],
    }
    if device.type == "cuda":
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return result


def gflops_per_image(model: torch.nn.Module, size: int) -> dict:
    """Forward FLOPs of one size x size image (FlopCounterMode: 2 per multiply-add)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 4, size, size))
    return {f"forward_gflops_{size}": round(counter.get_total_flops() / 1e9, 2)}


def describe(cfg) -> dict:
    family = get_family(cfg.model.family)
    model = build_model(cfg.model).eval()
    flops = {k: v for size in (320, 512) for k, v in gflops_per_image(model, size).items()}
    return {
        "family": family.name,
        "variant": family.describe(model),
        "parameters": count_parameters(model),
        **flops,
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    on_gpu = device.type == "cuda"
    cfg = recipe(args.family, args.variant)
    try:
        model_facts = describe(cfg)
    except ImportError as exc:  # the vitmatte extra is not installed
        hint = "pip install 'indexnet-matting[vitmatte]'"
        return {"family": args.family, "skipped": f"{exc}: {hint}"}
    steps = args.steps or (30 if on_gpu else 2)
    warmup = args.warmup if args.warmup is not None else (10 if on_gpu else 0)
    report: dict = {
        "machine": {
            "cpu": cpu_model(),
            "nproc": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(device) if on_gpu else None,
        },
        "torch": torch.__version__,
        "model": model_facts,
        "step": "zero_grad + forward + the family's loss + backward + its optimiser's step",
        "optimizer": cfg.optim.optimizer,
        "steps": steps,
        "warmup": warmup,
    }
    if not on_gpu:
        # IndexNet in float32 in both memory formats: channels_last is what GPUs want, but on a
        # CPU the depthwise convolutions of the stride-1 encoder run slower in it
        # (docs/benchmarks.md); ViTMatte (a ViT: no depthwise convolutions) contiguous, at batch 2
        vit = args.family == "vitmatte"
        batches = sorted({2} | ({args.batch} if not vit or args.batch != 16 else set()))
        formats = (False,) if vit else (True, False)
        for batch in reversed(batches):
            for channels_last in formats:
                fmt = "channels_last" if channels_last else "contiguous"
                log(f"train step: batch {batch}, {args.size}x{args.size}, float32, {fmt}")
                report[f"train_batch{batch}_{fmt}"] = train_step_case(
                    cfg, device, batch, args.size, warmup, steps, channels_last, False, None
                )
        if not args.skip_full_hd:
            for channels_last in formats:
                fmt = "channels_last" if channels_last else "contiguous"
                log(f"forward: one 1080x1920 image, {fmt}")
                report[f"forward_full_hd_{fmt}"] = full_hd_case(
                    cfg, device, 1, 2, channels_last, False, None
                )
        return report

    torch.backends.cudnn.benchmark = True
    mode = args.compile_mode
    log(f"train step: eager float32, batch {args.batch}")
    eager = train_step_case(cfg, device, args.batch, args.size, warmup, steps, False, False, None)
    log("train step: bf16 autocast + channels_last + torch.compile")
    fast = train_step_case(cfg, device, args.batch, args.size, warmup, steps, True, True, mode)
    report["train_eager_fp32"] = eager
    report["train_bf16_compiled"] = fast
    report["train_speedup"] = round(eager["ms_per_step"] / fast["ms_per_step"], 2)
    if args.family == "indexnet":  # issue 5's goal is IndexNet's
        report["train_target_50ms_met"] = fast["ms_per_step"] <= 50.0
    if not args.skip_full_hd:
        log("forward 1080x1920: eager float32, then bf16 + channels_last + compile")
        report["forward_full_hd_eager_fp32"] = full_hd_case(cfg, device, 3, 10, False, False, None)
        report["forward_full_hd_bf16_compiled"] = full_hd_case(cfg, device, 3, 10, True, True, mode)
    return report


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
