"""``indexnet config ...`` (show the resolved configuration), and what every command group shares.

The shared pieces live here, at the base of the package graph, so that each package's ``cli.py``
uses them without importing another stage: ``group()`` makes a command group with the project's
typer settings, ``fail()`` prints an error and gives the exit to raise, ``ConfigOption`` /
``SetOption`` are the ``--config`` / ``--set`` options, and ``StorageOption``, ``CacheDirOption``
and ``CacheLimitOption`` those of the commands that read shards from a store.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import typer
import yaml

from configs.schema import ConfigError, RenamedKeyWarning, load_config

EXIT_USAGE = 2  # bad options, config, inputs: nothing was done (or written)

_format_warning = warnings.formatwarning


def _plain_renamed(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    line: str | None = None,
) -> str:
    """A config's old key name (``RenamedKeyWarning``) as ``warning: <file or --set>: <old> is
    now <new>`` on stderr, without the source line Python's format adds; others as before."""
    if issubclass(category, RenamedKeyWarning):
        return f"warning: {message}\n"
    return _format_warning(message, category, filename, lineno, line)


# every command group imports this module, so every command's warnings read so
warnings.formatwarning = _plain_renamed


def group(name: str, help: str | None = None, no_args_is_help: bool = True) -> typer.Typer:
    """A command group (or single-command app) with the settings every ``indexnet`` app uses:
    plain tracebacks for bugs, no rich markup in help, no shell-completion options."""
    return typer.Typer(
        name=name,
        help=help,
        no_args_is_help=no_args_is_help,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        add_completion=False,
    )


def fail(exc: BaseException | str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print ``error: <exc>`` in red on stderr; return the ``typer.Exit(code)`` to raise.

    Use as ``raise fail(exc) from None``: the message (which names the file, shard or key and
    what to do) is all the user sees, never a traceback.
    """
    typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


app = group(
    "config", "Show the configuration that commands resolve from defaults, --config and --set."
)

ConfigOption = typer.Option(
    None, "--config", "-c", help="YAML file merged over configs/default.yaml (any subset)."
)
SetOption = typer.Option(
    [],
    "--set",
    "-s",
    help="Override one value: section.key=value (repeatable), e.g. train.epochs=5 or "
    "model.indexnet.output_stride=16.",
)

StorageOption = typer.Option(
    [],
    "--storage-option",
    help="KEY=VALUE for the store's client (repeatable; dotted keys nest, e.g. "
    "client_kwargs.region_name=eu-west-1), over the config's storage.options where the command "
    "reads a config. Credentials come from the provider's own chain; never printed or recorded.",
)
CacheDirOption = typer.Option(
    None,
    "--cache-dir",
    help="Keep each shard read from a store in this local folder (checked against the index's "
    "sha256), and the set's index: later epochs and runs read them from here "
    "[default: storage.cache_dir].",
)
CacheLimitOption = typer.Option(
    None,
    "--cache-limit-gb",
    help="GB of shards --cache-dir keeps, the least recently used evicted beyond it (0: no "
    "limit) [default: storage.cache_limit_gb, 0].",
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
        raise fail(exc) from None
    typer.echo(
        yaml.safe_dump(resolved.to_dict(), sort_keys=False, default_flow_style=None), nl=False
    )
