"""``indexnet model ...``: import the official weights, describe a model variant.

torch is imported inside the commands, so that the root ``indexnet`` app (which mounts this
group) starts fast for commands that never touch a model.
"""

from __future__ import annotations

from pathlib import Path

import typer

from configs import ConfigError, load_config

model_app = typer.Typer(
    name="model",
    help="IndexNet weights: import the official release's checkpoint, describe a variant.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)

ConfigOption = typer.Option(
    None, "--config", "-c", help="YAML file merged over configs/default.yaml (any subset)."
)
SetOption = typer.Option(
    [], "--set", "-s", help="Override one value: section.key=value (repeatable)."
)


def _fail(exc: Exception, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


@model_app.callback()
def _group() -> None:
    """IndexNet weights: import the official release's checkpoint, describe a variant."""


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
    from training.checkpoint import import_official, save_checkpoint
    from training.model import count_parameters

    try:
        cfg = load_config(config, overrides)
        model, report = import_official(checkpoint, cfg.model)
        if not out.parent.is_dir():
            raise ValueError(f"{out.parent}: no such folder for --out")
        save_checkpoint(out, model, cfg, source=str(checkpoint))
    except (ConfigError, ValueError) as exc:
        raise _fail(exc) from None
    typer.echo(report.summary())
    typer.echo(
        f"Wrote {out} ({model.describe()}, {count_parameters(model):,} parameters); load it "
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
        help="ImageNet MobileNetV2 weights (torchvision or official layout) to try loading.",
    ),
) -> None:
    """Print the variant, parameter counts and state-dict size of a model.

    The variant comes from the config's model section, or from --checkpoint. With --backbone
    the encoder is loaded from that file and the report says what went where.
    """
    from training.checkpoint import load_backbone, load_checkpoint, model_config_from
    from training.model import IndexNet, count_parameters

    try:
        if checkpoint is not None:
            ckpt = load_checkpoint(checkpoint)
            model = IndexNet(model_config_from(ckpt["model_config"], str(checkpoint)))
        else:
            model = IndexNet(load_config(config, overrides).model)
        report = load_backbone(model, backbone) if backbone is not None else None
    except (ConfigError, ValueError) as exc:
        raise _fail(exc) from None
    encoder = sum(p.numel() for p in model.encoder_parameters())
    typer.echo(f"variant:     {model.describe()}")
    typer.echo(f"parameters:  {count_parameters(model):,}")
    typer.echo(f"  encoder:   {encoder:,} (layer0 .. layer7)")
    typer.echo(
        f"  decoder:   {count_parameters(model) - encoder:,} (index blocks, ASPP, decoder, head)"
    )
    typer.echo(f"state_dict:  {len(model.state_dict())} entries")
    typer.echo(f"input:       (B, 4, H, W), H and W multiples of {model.cfg.output_stride}")
    if report is not None:
        typer.echo(report.summary())
