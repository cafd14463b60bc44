"""``indexnet shards ...``: prove a shard set whole (verify), describe it (info).

Both take a folder or a store URL (``s3://bucket/set``, ``gs://``, ``az://``...) and
``--storage-option KEY=VALUE`` (``shards.store``), which is never printed nor written to a report.

``indexnet shards repair`` is defined in ``pipeline.cli`` (rebuilding needs the compositor,
which this package must not import) and mounted on this group by the root app.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from configs.cli import StorageOption, fail, group
from shards import store
from shards.atomic import atomic_write_bytes
from shards.cluster import ClusterOptions, dask_client, map_bounded
from shards.info import describe
from shards.store import Options, StoreError, StoreUnavailable
from shards.verify import CHECKS, DEEP_CHECKS, VerifyReport, verify

app = group(
    "shards",
    "Check and describe WebDataset shard sets: verify, info, repair.",
)
out = Console()
err = Console(stderr=True)
CONVERSIONS_SHOWN = 20  # converted inputs listed by ``info`` (``--json`` lists them all)

RootArgument = typer.Argument(
    ..., help="The shard set (holding index.json): a folder or a URL such as s3://bucket/set."
)


@app.callback()
def _group() -> None:
    """Check and describe WebDataset shard sets: verify, info, repair."""


def print_report(report: VerifyReport, limit: int = 40) -> None:
    """The problems (first ``limit``) and a summary table of every check."""
    for problem in report.problems[:limit]:
        # one line each, however long, so that a problem can be grepped whole
        err.print(f"[red]FAIL[/red] {escape(str(problem))}", highlight=False, soft_wrap=True)
    if len(report.problems) > limit:
        err.print(f"... and {len(report.problems) - limit} more (see --report)")
    table = Table(title=f"shards verify{' --deep' if report.deep else ''}: {report.root}")
    table.add_column("check")
    table.add_column("failures", justify="right")
    for check in CHECKS + (DEEP_CHECKS if report.deep else ()):
        n = report.checks.get(check, 0)
        table.add_row(check, f"[red]{n}[/red]" if n else "[green]0[/green]")
    out.print(table)
    rate = report.bytes / report.seconds / 1e9 if report.seconds else 0.0
    verdict = "[green]OK[/green]" if report.ok else f"[red]FAILED[/red] ({len(report.problems)})"
    out.print(
        f"{verdict}: {report.shards} shards, {report.samples:,} samples, "
        f"{report.bytes / 1e9:.2f} GB in {report.seconds:.1f} s ({rate:.2f} GB/s)"
    )


def run_verify(
    root: str | Path, deep: bool, cluster: ClusterOptions, options: Options | None = None
) -> VerifyReport:
    """``verify`` on a Dask cluster with a progress bar (also used by ``shards repair``).

    The cluster starts only once the index and the listing are read: a set that cannot be
    checked (``StoreError``: no index.json, a missing bucket, access denied) fails at once.
    """
    bar = Progress(TextColumn("[bold]verifying"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn(), console=err)  # fmt: skip
    with bar:
        task = bar.add_task("shards", total=None)

        def run(fn, items):
            bar.update(task, total=len(items))
            with dask_client(cluster) as client:
                yield from map_bounded(client, fn, items, name="verify", retries=1)

        return verify(root, deep, run=run, on_shard=lambda _: bar.advance(task), options=options)


@app.command("verify")
def verify_command(
    root: str = RootArgument,
    deep: bool = typer.Option(
        False, help="Also decode every member and recompute every composite."
    ),
    workers: int | None = typer.Option(
        None, help="Local Dask worker processes [default: CPU count]."
    ),
    scheduler: str | None = typer.Option(None, help="An existing Dask scheduler address."),
    scheduler_file: Path | None = typer.Option(None, help="An existing scheduler's file."),
    report: Path | None = typer.Option(None, help="Write the full report as JSON here."),
    storage_option: list[str] = StorageOption,
) -> None:
    """Prove a shard set complete and uncorrupted; exit 0 only when every check holds.

    Checks the index and samples.parquet agree; every listed shard exists with its recorded
    size and sha256 and no unlisted tar is present; every tar parses to its end; every sample
    has exactly its recorded members; keys are unique across the set; counts agree. --deep also
    decodes every member, checks sizes and trimap values, recomputes merged from fg, bg and
    alpha, and checks each member's sha256. Shards are checked in parallel on Dask, each read
    by its worker from the folder or the store. A shard the store fails to give is reported
    unreadable (verify again once the store is back). Exit code 2 when nothing could be checked
    (no index.json, a missing bucket, access denied).
    """
    if workers is None and scheduler is None and scheduler_file is None:
        workers = os.cpu_count() or 1
    try:
        options = store.parse_options(storage_option)
        cluster = ClusterOptions(
            workers, scheduler, str(scheduler_file) if scheduler_file else None
        )
        result = run_verify(root, deep, cluster, options)
    except ValueError as exc:  # StoreError included: before any shard was read
        raise fail(exc) from None
    except StoreUnavailable as exc:
        raise fail(f"{exc}; nothing was checked: verify again once the store is back", 1) from None
    print_report(result)
    if result.unreadable_shards:
        err.print(f"[red]the store failed[/red] while {len(result.unreadable_shards)} shard(s) "
                  "were read: they are unchecked, not found corrupt; verify again once the "
                  "store is back", highlight=False, soft_wrap=True)  # fmt: skip
    if report:
        atomic_write_bytes(report, (json.dumps(result.to_json(), indent=1) + "\n").encode())
        out.print(f"report: {report}")
    raise typer.Exit(0 if result.ok else 1)


@app.command("info")
def info_command(
    root: str = RootArgument,
    as_json: bool = typer.Option(False, "--json", help="Print the description as JSON."),
    storage_option: list[str] = StorageOption,
) -> None:
    """Describe a shard set from its index alone (instant, whatever its size).

    Samples, bytes, bytes per sample and members per split (lean or full), image size
    distribution, the build's config, split rule, composition rule, inputs (and which were
    converted to 8 bits, and how) and build time. Reads index.json and samples.parquet, never
    the shards. Exit code 2 when they cannot be read (missing, a missing bucket, access
    denied), 1 when they are damaged.
    """
    try:
        info = describe(root, store.parse_options(storage_option))
    except StoreError as exc:
        raise fail(exc) from None
    except (ValueError, StoreUnavailable) as exc:
        raise fail(exc, 1) from None
    if as_json:
        typer.echo(json.dumps(info, indent=1))
        return
    table = Table(title=f"shard set {info['root']}")
    for column in ("split", "shards", "samples", "failed", "GB", "MB/sample", "members"):
        table.add_column(column, justify="left" if column in ("split", "members") else "right")
    for split, row in info["splits"].items():
        table.add_row(split, str(row["shards"]), f"{row['samples']:,}", str(row["failed"]),
                      f"{row['bytes'] / 1e9:.3f}", f"{row['mb_per_sample']:.3f}",
                      " ".join(row["members"]))  # fmt: skip
    out.print(table)
    lean = "yes: train samples hold only what training reads" if info["lean_train"] else "no"
    out.print(f"lean train (--lean-train): {lean}", highlight=False)
    for split, row in info["splits"].items():
        parts = ", ".join(f"{k} {v / 1e6:.3f}" for k, v in row["member_bytes_per_sample"].items())
        out.print(f"{split} bytes/sample: {row['bytes_per_sample']:,} ({parts} MB; the rest "
                  "tar headers)", highlight=False)  # fmt: skip
    sizes = info["image_sizes"]
    out.print(
        f"image sizes (w x h): min {sizes['min']}, median {sizes['median']}, max {sizes['max']}; "
        f"megapixels: {sizes['megapixels']}"
    )
    config = json.loads(json.dumps(info["config"]))
    ids = config.get("data", {}).get("validation_ids")
    if ids is not None:
        config["data"]["validation_ids"] = f"<{len(ids)} ids>"
    inputs = dict(info["inputs"])
    conversions = inputs.pop("conversions")
    sections = {"split": info["split_rule"], "composition": info["composition"], "inputs": inputs,
                "build": info["build"], "config": config}  # fmt: skip
    for key, value in sections.items():
        out.print(f"{key}: {json.dumps(value)}", highlight=False, markup=False)
    if conversions is None:
        out.print("converted inputs: not recorded (the set predates the record)", highlight=False)
        return
    out.print(f"converted inputs: {len(conversions)}", highlight=False)
    for c in conversions[:CONVERSIONS_SHOWN]:
        out.print(f"  {c['file']}: {c['how']}", highlight=False, markup=False)
    if len(conversions) > CONVERSIONS_SHOWN:
        out.print(f"  ... and {len(conversions) - CONVERSIONS_SHOWN} more (--json lists them all)")
