"""The ``indexnet`` command: mounts each package's command group on one root app."""

from __future__ import annotations

import typer

from configs.cli import app as config_app
from evaluation.cli import evaluate_app, export_command, predict_command
from pipeline.cli import app as pipeline_app
from shards.cli import app as shards_app
from training.cli import model_app, train_command

app = typer.Typer(
    name="indexnet",
    help="IndexNet matting: composite shards on Dask, train with DDP, evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(shards_app, name="shards")
app.add_typer(evaluate_app, name="evaluate")
app.add_typer(config_app, name="config")
app.add_typer(model_app, name="model")
app.command("train")(train_command)
app.command("predict")(predict_command)
app.command("export")(export_command)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="indexnet")


if __name__ == "__main__":
    main()
