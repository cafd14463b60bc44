"""``indexnet pipeline ...``: make sample data (and, later, build shards)."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline.sample_data import make_sample_data

app = typer.Typer(
    name="pipeline",
    help="Composite AIM-500 foregrounds over backgrounds into WebDataset shards.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)


def _fail(exc: Exception, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


@app.callback()
def _group() -> None:
    """Composite AIM-500 foregrounds over backgrounds into WebDataset shards."""


@app.command("sample-data")
def sample_data(
    out: Path = typer.Argument(..., help="Folder to write AIM-500/ and backgrounds/ into."),
    foregrounds: int = typer.Option(6, "--foregrounds", "-n", help="Foregrounds to make (>= 2)."),
    backgrounds: int = typer.Option(48, "--backgrounds", "-m", help="Background photos to make."),
    seed: int = typer.Option(0, help="Seed: the same seed writes byte-identical files."),
    overwrite: bool = typer.Option(
        False, help="Replace existing AIM-500/ and backgrounds/ in OUT."
    ),
) -> None:
    """Write a small synthetic AIM-500-style data set (no downloads) to try the system on.

    OUT/AIM-500/{original/o_<id>.jpg, mask/o_<id>.png, trimap/o_<id>.png} and
    OUT/backgrounds/*.jpg. The mattes have soft edges, hair-like strands, a semi-transparent
    veil, a hole and a body touching the border; backgrounds are both smaller and larger than
    the foregrounds.
    """
    try:
        summary = make_sample_data(out, foregrounds, backgrounds, seed, overwrite)
    except ValueError as exc:
        raise _fail(exc) from None
    sizes = sorted({f"{w}x{h}" for h, w in summary.foreground_sizes})
    typer.echo(f"Wrote sample data ({summary.bytes_written / 1e6:.1f} MB, seed {seed}):")
    typer.echo(
        f"  {len(summary.foreground_ids):>4} foregrounds  {summary.data_dir}  "
        f"(original/, mask/, trimap/; sizes {', '.join(sizes)})"
    )
    typer.echo(f"  {summary.background_count:>4} backgrounds  {summary.bg_dir}")
