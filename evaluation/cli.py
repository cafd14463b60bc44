"""``indexnet evaluate ...``: score predicted alpha mattes with the benchmark's metrics."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from evaluation.score import PER_IMAGE_CSV, SUMMARY_JSON, default_out, score_folder

evaluate_app = typer.Typer(
    name="evaluate",
    help="Score predicted alpha mattes against ground truth: SAD, MSE, Grad, Conn.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)
out_console = Console()
err = Console(stderr=True)


def _fail(exc: Exception, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


@evaluate_app.callback()
def _group() -> None:
    """Score predicted alpha mattes against ground truth: SAD, MSE, Grad, Conn."""


@evaluate_app.command("score")
def score_command(
    pred_dir: Path = typer.Option(..., "--pred-dir", help="Predicted alphas (8-bit grey)."),
    gt_dir: Path = typer.Option(..., "--gt-dir", help="Ground-truth alphas, named as pred."),
    trimap_dir: Path = typer.Option(..., "--trimap-dir", help="Trimaps (0/128/255), same names."),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Folder for per_image.csv and summary.json [default: <pred-dir>-scores].",
    ),
    workers: int | None = typer.Option(
        None, "--workers", help="Processes scoring images in parallel [default: CPU count]."
    ),
) -> None:
    """Score a folder of predicted alphas against ground truth, matched by file name.

    Computes SAD, MSE, Grad and Conn on each trimap's unknown region exactly as the benchmark's
    MATLAB code defines them (SAD, Grad and Conn divided by 1000), writes one row per image to
    OUT/per_image.csv and the mean of each metric over images to OUT/summary.json, and prints
    the means. Missing or extra files, unreadable images, sizes that differ and trimap values
    other than 0/128/255 are all listed at once; then the exit code is 2 and nothing is written.
    """
    target = out if out is not None else default_out(pred_dir)
    workers = workers if workers is not None else os.cpu_count() or 1
    bar = Progress(TextColumn("[bold]scoring"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn(), console=err, transient=True,
                   disable=not err.is_terminal)  # fmt: skip
    task = bar.add_task("images", total=None)
    try:
        with bar:
            result = score_folder(
                pred_dir, gt_dir, trimap_dir, target, workers,
                on_image=lambda done, total: bar.update(task, completed=done, total=total),
            )  # fmt: skip
    except ValueError as exc:  # ScoreError included: every offender is in the message
        raise _fail(exc) from None
    table = Table(title=f"{result.count} images: mean over images")
    for column in ("SAD", "MSE", "Grad", "Conn"):
        table.add_column(column, justify="right")
    means = result.means
    table.add_row(f"{means['sad']:.4f}", f"{means['mse']:.6f}", f"{means['grad']:.4f}",
                  f"{means['conn']:.4f}")  # fmt: skip
    out_console.print(table)
    if result.without_unknown:
        err.print(
            f"[yellow]{len(result.without_unknown)} image(s) have no unknown pixel (trimap 128) "
            f"and score 0.0: {escape(', '.join(result.without_unknown[:10]))}[/yellow]"
        )
    typer.echo(
        f"per-image results: {target / PER_IMAGE_CSV}\nsummary: {target / SUMMARY_JSON}\n"
        f"{result.seconds:.1f} s ({result.count / max(result.seconds, 1e-9):.1f} images/s)"
    )
