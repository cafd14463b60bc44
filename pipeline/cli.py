"""``indexnet pipeline ...`` (and ``python -m pipeline ...``): sample data and shard builds."""

from __future__ import annotations

import os
from pathlib import Path

import typer
import yaml
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from configs import ConfigError, load_config
from configs.cli import StorageOption, fail, group
from pipeline import layouts
from pipeline.build import BuildProgress, build, default_out
from pipeline.determinism import DEFAULT_SHARDS, DeterminismReport, check_determinism
from pipeline.inputs import shown
from pipeline.repair import QUARANTINE, repair
from pipeline.sample_data import make_sample_data
from shards import store
from shards.cli import print_report, run_verify
from shards.cluster import ClusterOptions, dask_client, map_bounded
from shards.index import INDEX_NAME

EXIT_INCOMPLETE = 3  # the build finished but some samples failed (see samples.parquet)
EXIT_NOT_DETERMINISTIC = 4  # --check-determinism: a rebuilt shard differs from the one on disk

app = group(
    "pipeline",
    "Composite matting foregrounds (AIM-500, Adobe, any folders) into WebDataset shards.",
)
err = Console(stderr=True)


@app.callback()
def _group() -> None:
    """Composite matting foregrounds (AIM-500, Adobe, any folders) into WebDataset shards."""


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
        raise fail(exc) from None
    sizes = sorted({f"{w}x{h}" for h, w in summary.foreground_sizes})
    typer.echo(f"Wrote sample data ({summary.bytes_written / 1e6:.1f} MB, seed {seed}):")
    typer.echo(
        f"  {len(summary.foreground_ids):>4} foregrounds  {summary.data_dir}  "
        f"(original/, mask/, trimap/; sizes {', '.join(sizes)})"
    )
    typer.echo(f"  {summary.background_count:>4} backgrounds  {summary.bg_dir}")
    typer.echo(
        f"Next: indexnet pipeline build --data-dir {summary.data_dir} --bg-dir {summary.bg_dir} "
        "--workers 2 --bgs-per-train-fg 6 --bgs-per-val-fg 4"
    )


class _Rate(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} samples/s" if speed else "- samples/s")


class _RichBuildProgress(BuildProgress):
    def __init__(self) -> None:
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _Rate(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err,
        )
        self.task = None

    def start(self, out, samples, shards, cluster, dashboard):
        err.print(f"Writing {shards} shards ({samples:,} samples) to {shown(out)}")
        err.print(f"Running on a {cluster}; dashboard: {dashboard or 'off (pip install bokeh)'}")
        self.bar.start()
        self.task = self.bar.add_task("compositing", total=samples)

    def shard_done(self, result, samples):
        self.bar.advance(self.task, samples)

    def stop(self):
        self.bar.stop()


@app.command("build")
def build_command(
    layout: str = typer.Option(
        layouts.DEFAULT,
        help="How the inputs are laid out: "
        + "; ".join(f"{name}: {row.summary}" for name, row in layouts.LAYOUTS.items())
        + ".",
    ),  # fmt: skip
    data_dir: str | None = typer.Option(
        None,
        help="aim500: the AIM-500 folder or URL (s3://...) holding original/, mask/, trimap/; "
        "adobe: Combined_Dataset.",
    ),
    bg_dir: str = typer.Option(
        ..., help="Folder or URL of background photos (e.g. COCO train2014)."
    ),
    val_bg_dir: str | None = typer.Option(
        None, help="adobe: the validation split's backgrounds (Pascal VOC 2012 JPEGImages)."
    ),
    fg_dir: str | None = typer.Option(None, help="folders: the foreground images."),
    alpha_dir: str | None = typer.Option(
        None, help="folders: the mattes, by the foregrounds' file stems."
    ),
    trimap_dir: str | None = typer.Option(
        None, help="folders: trimaps by the same stems (needed for validation foregrounds)."
    ),
    val_fg_dir: str | None = typer.Option(
        None, help="folders: a validation split's own foregrounds (instead of a listed/seeded one)."
    ),
    val_alpha_dir: str | None = typer.Option(None, help="folders: the validation mattes."),
    val_trimap_dir: str | None = typer.Option(None, help="folders: the validation trimaps."),
    out: str | None = typer.Option(
        None,
        help="Shard set folder or URL (s3://bucket/set) [default: a 'shards' folder beside "
        "--data-dir].",
    ),
    storage_option: list[str] = StorageOption,
    workers: int | None = typer.Option(
        None, help="Start a local Dask cluster of N one-thread processes [default: CPU count]."
    ),
    scheduler: str | None = typer.Option(
        None, help="Use an existing Dask scheduler, e.g. tcp://10.0.0.1:8786."
    ),
    scheduler_file: Path | None = typer.Option(
        None, help="Use the scheduler described by this file (dask scheduler --scheduler-file)."
    ),
    samples_per_shard: int | None = typer.Option(None, help="Samples per tar shard."),
    bgs_per_train_fg: int | None = typer.Option(None, help="Backgrounds per train foreground."),
    bgs_per_val_fg: int | None = typer.Option(None, help="Backgrounds per validation foreground."),
    seed: int | None = typer.Option(None, help="Seed of the split, pairing and order."),
    val_count: int | None = typer.Option(
        None, help="Validation foregrounds of the seeded split [default: 10%]."
    ),
    allow_bg_reuse: bool = typer.Option(
        False, help="Reuse backgrounds deterministically when there are too few."
    ),
    lean_train: bool = typer.Option(
        False,
        "--lean-train",
        help="Train samples hold only what training reads (fg, bg, alpha, json: no merged, no "
        "trimap), about a quarter of the bytes; validation samples keep every member "
        "(data.lean_train).",
    ),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config file."),
    overrides: list[str] = typer.Option([], "--set", "-s", help="section.key=value override."),
    overwrite: bool = typer.Option(False, help="Delete a previous build in --out first."),
    check: bool = typer.Option(
        False,
        "--check-determinism",
        help="Then rebuild a few shards in a second process (other thread, hash and malloc "
        "settings) and compare them byte for byte; a finished set in --out is only checked, "
        "never changed. Exit code 4 when any differs.",
    ),
    check_shards: int = typer.Option(
        DEFAULT_SHARDS, help="Shards --check-determinism rebuilds, spread evenly over the set."
    ),
) -> None:
    """Composite every foreground over unique backgrounds into WebDataset shards.

    Validates every input first (all problems listed, nothing written), writes the plan, runs
    one Dask task per shard, and writes index.json last. Re-running the same command resumes
    a killed build; the result is byte-identical to an uninterrupted one. Exit code 0: the set
    is complete; 3: some samples failed (listed in samples.parquet); 1: some shards failed
    (re-run to resume); 2: bad inputs or options; 4: --check-determinism found a rebuilt shard
    that differs from the one on disk.

    Any of --data-dir, --bg-dir and --out may be a store URL (s3://, gs://, az://; http(s)://
    for inputs): workers read their inputs and upload their own shards, so no shared
    filesystem is needed.
    """
    sources = layouts.Sources(
        layout, data_dir, bg_dir, val_bg_dir, fg_dir, alpha_dir, trimap_dir, val_fg_dir,
        val_alpha_dir, val_trimap_dir,
    )  # fmt: skip
    try:
        row = layouts.check(sources)
    except ValueError as exc:
        raise fail(exc) from None
    if row.splits and val_count is not None:
        raise fail(f"--val-count does not apply to --layout {layout}: its split is the data set's")
    if row.pairs and (bgs_per_train_fg is not None or bgs_per_val_fg is not None):
        err.print(f"note: --layout {layout} pairs backgrounds by its own lists; "
                  "--bgs-per-train-fg/--bgs-per-val-fg do not apply")  # fmt: skip
        bgs_per_train_fg = bgs_per_val_fg = None
    sets = list(overrides)
    for key, value in (
        ("samples_per_shard", samples_per_shard),
        ("bgs_per_train_fg", bgs_per_train_fg),
        ("bgs_per_val_fg", bgs_per_val_fg),
        ("seed", seed),
    ):
        if value is not None:
            sets.append(f"data.{key}={value}")
    if lean_train:
        sets.append("data.lean_train=true")
    if workers is None and scheduler is None and scheduler_file is None:
        workers = os.cpu_count() or 1
    try:
        cfg = layouts.with_rounding(load_config(config, sets), row, _sets_rounding(config, sets))
        cluster = ClusterOptions(
            workers, scheduler, str(scheduler_file) if scheduler_file else None
        )
        storage = cfg.storage.override(store.parse_options(storage_option)).options
    except (ConfigError, ValueError) as exc:
        raise fail(exc) from None
    if check_shards < 1:
        raise fail(f"--check-shards must be >= 1, got {check_shards}")
    target = out or default_out(sources.root)
    if check and layout != layouts.DEFAULT:
        raise fail(f"--check-determinism rebuilds --layout {layouts.DEFAULT} sets only; build "
                   f"--layout {layout} twice to different --out folders and compare the shards' "
                   "sha256 in index.json")  # fmt: skip
    if check and any(map(store.is_remote, (data_dir, bg_dir, target))):
        raise fail(
            "--check-determinism rebuilds shards in a second local process and needs a local "
            "--data-dir, --bg-dir and --out; copy the set and its inputs to folders to check it"
        )
    target = target if store.is_remote(target) else Path(target).resolve()
    options = {"allow_bg_reuse": allow_bg_reuse, "val_count": val_count}
    if check and not overwrite and (target / INDEX_NAME).is_file():
        err.print(f"{target} is a finished set: checking it, not building")
        _check(Path(data_dir), Path(bg_dir), cfg, target, options, check_shards)
        return
    err.print(f"Shards go to {shown(target)}")
    progress = _RichBuildProgress()
    try:
        summary = build(
            data_dir, bg_dir, cfg, out, cluster, allow_bg_reuse=allow_bg_reuse,
            val_count=val_count, overwrite=overwrite, progress=progress, options=storage,
            sources=sources,
        )  # fmt: skip
    except ValueError as exc:  # InputError and StoreError included: the message says all
        raise fail(exc) from None
    except store.StoreUnavailable as exc:  # the store went away between the shards' tasks
        raise fail(f"{exc}; nothing is lost: re-run the same command to resume", 1) from None
    finally:
        progress.stop()
    typer.echo(
        f"samples {summary.written:,}/{summary.planned:,} (replaced backgrounds: "
        f"{summary.replaced}, failed: {summary.failed})  shards {summary.shards} "
        f"({summary.reused} already finished)  {summary.bytes / 1e6:,.1f} MB  "
        f"{summary.seconds:.1f} s  {summary.samples_per_second:.1f} samples/s"
    )
    for name, error in summary.failed_shards:
        typer.secho(f"shard failed: {name}: {error}", err=True, fg=typer.colors.RED)
    if summary.failed_shards:
        typer.secho(
            f"{len(summary.failed_shards)} shard(s) failed; index.json not written. "
            "Fix the cause and re-run the same command to resume.",
            err=True,
            fg=typer.colors.RED,
        )
        raise typer.Exit(1)
    typer.echo(f"index: {shown(store.join(summary.out, INDEX_NAME))}")
    if check:
        _check(Path(data_dir), Path(bg_dir), cfg, target, options, check_shards)
    if summary.failed:
        typer.secho(
            f"{summary.failed} sample(s) failed (status 'failed' in samples.parquet); "
            "the set is incomplete.",
            err=True,
            fg=typer.colors.YELLOW,
        )
        raise typer.Exit(EXIT_INCOMPLETE)


def _sets_rounding(config: Path | None, sets: list[str]) -> bool:
    """Whether the config file or a ``--set`` gives ``data.rounding`` (a layout's default
    rounding applies only when neither does)."""
    if any(text.split("=", 1)[0].strip() == "data.rounding" for text in sets):
        return True
    if config is None:
        return False
    try:
        data = yaml.safe_load(Path(config).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return False  # load_config reports the file
    section = data.get("data") if isinstance(data, dict) else None
    return isinstance(section, dict) and "rounding" in section


def _check(data_dir, bg_dir, cfg, out, options, shards: int) -> None:
    """Run --check-determinism, print what it found; exit 4 when a shard differs."""
    try:
        report = check_determinism(data_dir, bg_dir, cfg, out, shards=shards, **options)
    except ValueError as exc:
        raise fail(exc) from None
    except RuntimeError as exc:
        raise fail(exc, 1) from None
    _print_determinism(report)
    if not report.ok:
        raise typer.Exit(EXIT_NOT_DETERMINISTIC)


def _print_determinism(report: DeterminismReport) -> None:
    env = ", ".join(f"{k}={v}" for k, v in report.environment.items())
    typer.echo(
        f"determinism: rebuilt {len(report.checked)} of {report.shards} shards in a second "
        f"process ({env}) in {report.seconds:.1f} s: " + ", ".join(report.checked)
    )
    if not report.second_plan_equal:
        typer.secho("  the second process planned the set differently", err=True, fg="red")
    for diff in report.differing:
        typer.secho(f"  differs: {diff}", err=True, fg=typer.colors.RED)
    if report.ok:
        typer.echo("  every rebuilt shard is byte-identical to the one on disk")


# `indexnet shards repair` rebuilds shards, which needs the compositor that `shards` must not
# import: it is defined here and mounted on the shards group by the root app (indexnet_cli).
def repair_command(
    root: str = typer.Argument(..., help="The shard set folder or URL (holding index.json)."),
    data_dir: str | None = typer.Option(
        None,
        help="The data set's folder or URL the set was built from [default: as index.json "
        "records it].",
    ),
    bg_dir: str | None = typer.Option(
        None, help="Its backgrounds folder or URL [default: as index.json records it]."
    ),
    val_bg_dir: str | None = typer.Option(None, help="adobe: [default: as recorded]."),
    fg_dir: str | None = typer.Option(None, help="folders: [default: as recorded]."),
    alpha_dir: str | None = typer.Option(None, help="folders: [default: as recorded]."),
    trimap_dir: str | None = typer.Option(None, help="folders: [default: as recorded]."),
    val_fg_dir: str | None = typer.Option(None, help="folders: [default: as recorded]."),
    val_alpha_dir: str | None = typer.Option(None, help="folders: [default: as recorded]."),
    val_trimap_dir: str | None = typer.Option(None, help="folders: [default: as recorded]."),
    deep: bool = typer.Option(False, help="Find damage with verify --deep (decodes everything)."),
    workers: int | None = typer.Option(
        None, help="Local Dask worker processes [default: CPU count]."
    ),
    scheduler: str | None = typer.Option(None, help="An existing Dask scheduler address."),
    scheduler_file: Path | None = typer.Option(None, help="An existing scheduler's file."),
    storage_option: list[str] = StorageOption,
) -> None:
    """Rebuild exactly the shards that verify rejects or that are missing, then verify again.

    Each rebuilt shard must reproduce the sha256 recorded in index.json (shards are
    deterministic) and is moved into place only then. Unlisted tar files are moved to
    OUT/.quarantine/. Needs the original inputs, read with the set's layout from the folders
    index.json records unless given: the plan they give must equal plan.parquet.
    Exit code 0 when the set verifies afterwards, 1 otherwise, 2 for bad options or inputs.
    """
    if workers is None and scheduler is None and scheduler_file is None:
        workers = os.cpu_count() or 1
    try:
        cluster = ClusterOptions(
            workers, scheduler, str(scheduler_file) if scheduler_file else None
        )
        storage = store.parse_options(storage_option)
    except ValueError as exc:
        raise fail(exc) from None
    root = root if store.is_remote(root) else Path(root)

    def verify_set():
        return run_verify(root, deep, cluster, options=storage)

    def tasks(fn, items):
        with dask_client(cluster) as client:
            yield from map_bounded(client, fn, items, name="repair")

    try:
        folders = {"val_bg_dir": val_bg_dir, "fg_dir": fg_dir, "alpha_dir": alpha_dir,
                   "trimap_dir": trimap_dir, "val_fg_dir": val_fg_dir,
                   "val_alpha_dir": val_alpha_dir, "val_trimap_dir": val_trimap_dir}  # fmt: skip
        summary = repair(root, data_dir, bg_dir, verify_set, tasks, options=storage,
                         folders=folders)  # fmt: skip
    except ValueError as exc:
        raise fail(exc) from None
    except store.StoreUnavailable as exc:
        raise fail(f"{exc}; re-run the repair when the store is back", 1) from None
    if summary.before.ok:
        typer.echo(f"{shown(root)} verifies: nothing to repair.")
        raise typer.Exit(0)
    for rel in summary.quarantined:
        typer.echo(f"moved unlisted {rel} to {QUARANTINE}/")
    for name in summary.rebuilt:
        note = ("members match samples.parquet; index.json entry corrected"
                if name in summary.index_corrected else "sha256 matches index.json")  # fmt: skip
        typer.echo(f"rebuilt {name} ({note})")
    for name, why in summary.unrepairable:
        typer.secho(f"not repaired: {name}: {why}", err=True, fg=typer.colors.RED)
    typer.echo("after repair:")
    print_report(summary.after)
    raise typer.Exit(0 if summary.ok else 1)
