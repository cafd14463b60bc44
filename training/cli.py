"""``indexnet model ...`` (import the official weights, describe a variant), ``indexnet train``
and ``indexnet report`` (a run's curves and best validation).

torch is imported inside the commands, so that the root ``indexnet`` app (which mounts this
group) starts fast for commands that never touch a model.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import typer

from configs import ConfigError, load_config
from configs.cli import (
    CacheDirOption,
    CacheLimitOption,
    ConfigOption,
    SetOption,
    StorageOption,
    fail,
    group,
)
from configs.schema import all_keys

model_app = group(
    "model",
    "Model weights: import released checkpoints (IndexNet, ViTMatte), describe a variant.",
)


@model_app.callback()
def _group() -> None:
    """Model weights: import released checkpoints (IndexNet, ViTMatte), describe a variant."""


@model_app.command("import-hf")
def import_hf_command(
    folder: Path = typer.Argument(
        ..., help="A transformers-format folder: config.json + model.safetensors (ViTMatte)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Our checkpoint file to write."),
) -> None:
    """Convert a transformers-format ViTMatte folder (as the released checkpoints come, or as
    save_pretrained writes) into our checkpoint, recording its family and size.

    The config must be ViTMatte-S or -B as docs/reference.md section 5 defines them (each differing
    entry is named); the weights are read from the folder only (nothing is downloaded) and must
    fit exactly. Nothing is written on any error. `evaluate run`, `predict` and `export` also
    take the folder itself as --checkpoint.
    """
    from dataclasses import replace

    from training.checkpoint import save_checkpoint
    from training.models.build import count_parameters, describe, import_folder

    try:
        model = import_folder(folder)
        if not out.parent.is_dir():
            raise ValueError(f"{out.parent}: no such folder for --out")
        save_checkpoint(out, model, replace(load_config(), model=model.cfg), source=str(folder))
    except (ConfigError, ValueError) as exc:
        raise fail(exc) from None
    typer.echo(
        f"Wrote {out} ({describe(model)}, {count_parameters(model):,} parameters); load it "
        "with training.checkpoint.load_model, or use it as --checkpoint."
    )


@model_app.command("import-official")
def import_official_command(
    checkpoint: Path = typer.Argument(..., help="The official indexnet_matting.pth.tar."),
    out: Path = typer.Option(..., "--out", "-o", help="Our checkpoint file to write."),
    config: Path | None = ConfigOption,
    overrides: list[str] = SetOption,
) -> None:
    """Convert the official PyTorch checkpoint into ours (names and shapes checked strictly).

    The file is a dict whose state_dict keys carry nn.DataParallel's `module.` prefix; it is
    read with torch.load(weights_only=True). Any tensor missing, unexpected or of the wrong shape
    is listed and nothing is written. The model section of the config (--config/--set) names the
    variant; the default is the released one.
    """
    from training.checkpoint import save_checkpoint
    from training.models.build import count_parameters, describe, import_official

    try:
        cfg = load_config(config, overrides)
        model, report = import_official(checkpoint, cfg.model)
        if not out.parent.is_dir():
            raise ValueError(f"{out.parent}: no such folder for --out")
        save_checkpoint(out, model, cfg, source=str(checkpoint))
    except (ConfigError, ValueError) as exc:
        raise fail(exc) from None
    typer.echo(report.summary())
    typer.echo(
        f"Wrote {out} ({describe(model)}, {count_parameters(model):,} parameters); load it "
        "with training.checkpoint.load_model."
    )


@model_app.command("summary")
def summary(
    config: Path | None = ConfigOption,
    overrides: list[str] = SetOption,
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", help="Describe the model in one of our checkpoints instead."
    ),
    backbone: Path | None = typer.Option(
        None,
        "--backbone",
        help="Pretrained backbone weights to try loading: IndexNet, an ImageNet MobileNetV2 "
        "(torchvision or official layout); ViTMatte, a ViT/16 (timm or DINO names).",
    ),
) -> None:
    """Print the variant, parameter counts and state-dict size of a model.

    The variant comes from the config's model section, or from --checkpoint. With --backbone
    the encoder is loaded from that file and the report says what went where.
    """
    from training.checkpoint import load_checkpoint, model_config_from
    from training.models.build import count_parameters, load_backbone, parameter_groups
    from training.models.registry import get_family

    try:
        if checkpoint is not None:
            ckpt = load_checkpoint(checkpoint)
            cfg = model_config_from(ckpt["model_config"], str(checkpoint))
        else:
            cfg = load_config(config, overrides).model
        family = get_family(cfg.family)
        model = family.build(cfg)
        report = load_backbone(model, backbone) if backbone is not None else None
        groups = parameter_groups(model)
    except (ConfigError, ValueError) as exc:
        raise fail(exc) from None
    typer.echo(f"variant:     {family.describe(model)}")
    typer.echo(f"parameters:  {count_parameters(model):,}")
    width = max(len(part.name) for part in groups) + 2
    for part in groups:  # IndexNet: encoder, decoder; ViTMatte: embeddings, block0..11, decoder
        size = sum(p.numel() for p in part.params)
        scale = "" if part.lr_scale == 1 else f", lr x{part.lr_scale:.3g}"
        pretrained = ", lr / backbone_lr_mult" if part.backbone else ""
        what = f" ({part.what}{scale}{pretrained})" if part.what or scale or pretrained else ""
        typer.echo(f"  {part.name + ':':<{width}}{size:>11,}{what}")
    typer.echo(f"state_dict:  {len(model.state_dict())} entries")
    typer.echo(
        f"input:       (B, {family.in_channels}, H, W), H and W multiples of {family.stride(cfg)}"
    )
    if report is not None:
        typer.echo(report.summary())


# -- indexnet train ---------------------------------------------------------------------------


# the sections a bare --set key=value of `indexnet train` may name a key of
BARE_SECTIONS = ("train", "optim", "augment", "loader", "runtime")


def _train_overrides(
    overrides: list[str],
    epochs: int | None,
    batch_size: int | None,
    input_size: int | None,
) -> list[str]:
    """``--set`` values plus the shortcut options. A bare ``key=value`` names the key of
    ``BARE_SECTIONS`` that has it, else ``train.key`` (what a bare key meant before issue 24's
    sections: an old name is mapped, and warned about, as ``configs.schema.RENAMED`` says)."""
    known = all_keys()
    sets = []
    for text in overrides:
        key = text.partition("=")[0].strip()
        if "." not in key:
            section = next((s for s in BARE_SECTIONS if f"{s}.{key}" in known), "train")
            text = f"{section}.{text.strip()}"
        sets.append(text)
    shortcuts = (
        ("train.epochs", epochs),
        ("train.batch_size", batch_size),
        ("augment.input_size", input_size),
    )
    sets += [f"{key}={value}" for key, value in shortcuts if value is not None]
    return sets


class _RichTrainProgress:
    """A progress bar (loss, lr, samples/s, ETA) on a terminal; a line per log record otherwise."""

    def __init__(self, log_every: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(stderr=True)
        self.log_every = log_every
        self.bar = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            disable=not self.console.is_terminal,
        )
        self.task = None

    def start(self, total_steps: int, first_step: int, steps_per_epoch: int) -> None:
        self.console.print(
            f"Training {total_steps - first_step} steps ({steps_per_epoch} per epoch)"
            + (f", resuming at step {first_step}" if first_step else "")
        )
        self.bar.start()
        self.task = self.bar.add_task(
            "train",
            total=total_steps,
            completed=first_step,
            epoch=first_step // steps_per_epoch + 1,
            loss="-",
            lr="-",
            rate="- samples/s",
        )

    def step(self, record: dict) -> None:
        fields = {
            "epoch": record["epoch"],
            "loss": f"{record['loss']:.4f}",
            "lr": f"{record['lr']:.2g}",
            "rate": f"{record['samples_per_s']:.1f} samples/s",
        }
        self.bar.update(self.task, completed=record["step"], **fields)
        if not self.console.is_terminal and record["step"] % self.log_every == 0:
            terms = ", ".join(
                f"{name[5:]} {value:.4f}" for name, value in record.items()
                if name.startswith("loss_")
            )  # fmt: skip
            self.console.print(
                f"step {record['step']} epoch {record['epoch']} loss {record['loss']:.4f} "
                f"({terms}) "
                f"lr {record['lr']:.2g} {record['ms_per_step']:.0f} ms/step "
                f"(data {record['data_wait_ms']:.0f} ms)"
            )

    def validated(self, epoch: int, metrics: dict) -> None:
        self.console.print(
            f"epoch {epoch} validation ({metrics['samples']} images): SAD {metrics['sad']:.3f} "
            f"MSE {metrics['mse']:.5f} Grad {metrics['grad']:.3f} Conn {metrics['conn']:.3f}"
        )

    def stop(self) -> None:
        self.bar.stop()


def train_command(
    shards: str = typer.Option(
        ...,
        "--shards",
        help="Shard set folder or URL (http://host/path/), a brace pattern of shard files or "
        "URLs, or a pipe: command (then also --index).",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory: checkpoints and logs."),
    config: Path | None = ConfigOption,
    overrides: list[str] = typer.Option(
        [],
        "--set",
        "-s",
        help="Override one value: section.key=value (repeatable), or key=value for a key of "
        "train, optim, augment, loader or runtime.",
    ),
    backbone: Path | None = typer.Option(
        None,
        "--backbone",
        help="Pretrained backbone: IndexNet, an ImageNet MobileNetV2 (torchvision or official "
        "layout); ViTMatte, a ViT/16 such as DINO's dino_deitsmall16_pretrain.pth.",
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from RUN_DIR/checkpoints/last.pt at its step."
    ),
    epochs: int | None = typer.Option(None, "--epochs", help="Epochs [default: train.epochs]."),
    max_steps: int | None = typer.Option(
        None, "--max-steps", help="Stop after N optimiser steps in total (a short run)."
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Batch per device [default: train.batch_size, 16]."
    ),
    input_size: int | None = typer.Option(
        None,
        "--input-size",
        help="Network input side, a multiple of 32 [default: augment.input_size, 320].",
    ),
    loader_workers: int | None = typer.Option(
        None,
        "--loader-workers",
        help="Data loader processes per rank, a divisor of --batch-size (0: in the training "
        "process) [default: the most up to 4 that divide it, and no more than this rank's share "
        "of the CPUs it may use].",
    ),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    index: str | None = typer.Option(
        None, "--index", help="The shard set's folder or URL, for pipe: sources."
    ),
    init: Path | None = typer.Option(
        None,
        "--init",
        help="Fine-tune: start from every weight of this checkpoint (ours, the official "
        "indexnet_matting.pth.tar, an imported or a transformers-format ViTMatte folder), with a "
        "fresh optimizer and schedule; its family and variant must be the run's.",
    ),
    data_only: bool = typer.Option(
        False,
        "--data-only",
        help="Run only the data path (the same order, augmentation and loader processes, "
        "batches moved to --device and composed there), no model, for --max-steps steps "
        "[default: one epoch]; print samples/s per loader process and how many a GPU at "
        "loader.target_step_ms needs; write RUN_DIR/data_only.json.",
    ),
    storage_options: list[str] = StorageOption,
    cache_dir: Path | None = CacheDirOption,
    cache_limit_gb: float | None = CacheLimitOption,
) -> None:
    """Train a matting model on a shard set: IndexNet with the reference recipe
    (configs/default.yaml), or ViTMatte (--config configs/vitmatte.yaml).

    Run it directly for one process, or under torchrun for DDP (NCCL on GPUs, gloo on CPUs):
    torchrun --nproc-per-node 8 -m training --shards ... --out ... (or the path of the
    indexnet script followed by train). Writes RUN_DIR/checkpoints/last.pt (every epoch and
    every runtime.checkpoint_every steps), best.pt (by validation Grad), train.jsonl and
    config.yaml. --resume, or a torchrun restart, continues from last.pt. --data-only times the
    data path alone, to size --loader-workers for a GPU. --shards may be on object storage
    (s3://bucket/set, gs://, az://), read with ranged GETs; every node reads it there, rank 0
    writes RUN_DIR locally; --cache-dir keeps the shards on the node. Exit code 0: done;
    1: training stopped (non-finite loss, corrupt shard); 2: bad options, config or shards.
    """
    from shards.reader import ShardError
    from shards.store import parse_options
    from training.inference import enable_huge_pages
    from training.run.trainer import RunOptions, TrainingError, train

    enable_huge_pages()

    try:
        cfg = load_config(config, _train_overrides(overrides, epochs, batch_size, input_size))
        storage = cfg.storage.override(parse_options(storage_options), cache_dir, cache_limit_gb)
        cfg = dataclasses.replace(cfg, storage=storage)
        if loader_workers is not None and loader_workers < 0:
            raise ValueError(f"--loader-workers must be >= 0, got {loader_workers}")
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"--max-steps must be >= 1, got {max_steps}")
        options = RunOptions(
            shards, out, index, resume, max_steps, loader_workers, device, backbone, init
        )
        rank = int(os.environ.get("RANK", "0"))
        if data_only:
            from training.data.throughput import REPORT_NAME, measure_data

            report = measure_data(cfg, options)
            if rank == 0:
                typer.echo(f"{report.summary()}\nreport: {out / REPORT_NAME}")
            return
        progress = _RichTrainProgress(cfg.runtime.log_every) if rank == 0 else None
        summary = train(cfg, options, progress)
    except (ConfigError, ValueError) as exc:
        raise fail(exc) from None
    except (TrainingError, ShardError) as exc:
        raise fail(exc, 1) from None
    if rank == 0:
        typer.echo(
            f"steps {summary.step} (epochs {summary.epochs})"
            + (f", resumed at {summary.resumed_from}" if summary.resumed_from is not None else "")
            + f"  last loss {summary.last_loss:.4f}  {summary.seconds:.1f} s on "
            f"{summary.world_size} rank(s)"
            + (f"  best validation Grad {summary.best_grad:.3f}" if summary.best_grad else "")
            + (f"  replaced {summary.skipped} corrupt sample(s)" if summary.skipped else "")
        )
        typer.echo(f"checkpoint: {summary.checkpoint}\nlog: {out / 'train.jsonl'}")


# -- indexnet report --------------------------------------------------------------------------


def report_command(
    runs: list[Path] = typer.Argument(
        ..., help="Run folders (the --out of indexnet train), drawn overlaid."
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="The PNG to write [default: RUN/curves.png for one run, ./report.png for several].",
    ),
) -> None:
    """Draw runs' training curves and print each one's best validation.

    One PNG: the loss and its terms, the learning rates (against the step, log scale), and
    validation SAD, MSE, Grad and Conn against the epoch, with the trivial baseline (alpha 0.5
    in the unknown region) dashed; several runs are overlaid, one colour each. The table gives,
    per run, the validation with the lowest Grad (the one best.pt holds), its epoch and step as
    train.jsonl has them, and the baseline's scores under it. Works on a run in progress.
    Exit code 2: a missing folder, no train.jsonl, or a corrupt line (named).
    """
    from training.run.curves import CURVES_NAME, best_table, draw, read_run

    target = out or (runs[0] / CURVES_NAME if len(runs) == 1 else Path("report.png"))
    try:
        logs = [read_run(run) for run in runs]
        if not target.parent.is_dir():
            raise ValueError(f"{target.parent}: no such folder for --out")
        draw(logs, target)
    except ValueError as exc:
        raise fail(exc) from None
    for line in best_table(logs):
        typer.echo(line)
    typer.echo(f"curves: {target}")


train_app = group("train", no_args_is_help=False)
train_app.command()(train_command)  # `python -m training` / `torchrun -m training`
