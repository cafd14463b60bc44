"""The ``indexnet`` command: mounts each package's command group on one root app.

Every command is mounted here, explicitly: no module registers a command by being imported.
"""

from __future__ import annotations

from configs.cli import app as config_app
from configs.cli import group
from evaluation.cli import evaluate_app, export_command, predict_command, serve_command
from pipeline.cli import app as pipeline_app
from pipeline.cli import repair_command
from shards.cli import app as shards_app
from training.cli import model_app, report_command, train_command

app = group(
    "indexnet",
    "IndexNet matting: composite shards on Dask, train with DDP, evaluate.",
)
app.add_typer(pipeline_app, name="pipeline")
# repair lives in pipeline (it needs the compositor) but belongs, for users, beside verify
shards_app.command("repair")(repair_command)
app.add_typer(shards_app, name="shards")
app.add_typer(evaluate_app, name="evaluate")
app.add_typer(config_app, name="config")
app.add_typer(model_app, name="model")
app.command("train")(train_command)
app.command("report")(report_command)
app.command("predict")(predict_command)
app.command("export")(export_command)
app.command("serve")(serve_command)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="indexnet")


if __name__ == "__main__":
    main()
