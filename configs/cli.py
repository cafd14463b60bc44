"""``indexnet config ...``: show the resolved configuration."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml

from configs.schema import ConfigError, load_config

app = typer.Typer(
    name="config",
    help="Show the configuration that commands resolve from defaults, --config and --set.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)

ConfigOption = typer.Option(
    None, "--config", "-c", help="YAML file merged over configs/default.yaml (any subset)."
)
SetOption = typer.Option(
    [],
    "--set",
    "-s",
    help="Override one value: section.key=value (repeatable), e.g. train.epochs=5.",
)


@app.callback()
def _group() -> None:
    """Show the configuration that commands resolve from defaults, --config and --set."""


@app.command("show")
def show(config: Path | None = ConfigOption, overrides: list[str] = SetOption) -> None:
    """Print the fully resolved configuration as YAML (what outputs record)."""
    try:
        resolved = load_config(config, overrides)
    except ConfigError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    typer.echo(
        yaml.safe_dump(resolved.to_dict(), sort_keys=False, default_flow_style=None), nl=False
    )
