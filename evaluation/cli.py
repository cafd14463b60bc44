"""``indexnet evaluate ...``: score a checkpoint on validation shards, or folders of predictions.

``indexnet predict`` (``predict_command``, mounted on the root app): alphas for users' photos.
``indexnet export`` (``export_command``, mounted on the root app): ONNX or TorchScript files.
``indexnet serve`` (``serve_command``, mounted on the root app): a web page to paint a trimap.
"""

from __future__ import annotations

import os
import time
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from configs.cli import CacheDirOption, CacheLimitOption, StorageOption, fail, group
from evaluation.score import PER_IMAGE_CSV, SUMMARY_JSON, default_out, score_folder

evaluate_app = group(
    "evaluate",
    "Evaluate with the benchmark's metrics (SAD, MSE, Grad, Conn): a checkpoint on the "
    "validation shards (run), or a folder of predictions (score).",
)
out_console = Console()
err = Console(stderr=True)


def _progress(label: str) -> Progress:
    """A bar with a count and ETA on stderr (off when stderr is not a terminal)."""
    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


@evaluate_app.callback()
def _group() -> None:
    """Evaluate with the benchmark's metrics: a checkpoint (run) or predictions (score)."""


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
    bar = _progress("scoring")
    task = bar.add_task("images", total=None)
    try:
        with bar:
            result = score_folder(
                pred_dir,
                gt_dir,
                trimap_dir,
                target,
                workers,
                on_image=lambda done, total: bar.update(task, completed=done, total=total),
            )
    except ValueError as exc:  # ScoreError included: every offender is in the message
        raise fail(exc) from None
    _print_means(f"{result.count} images: mean over images", result.means)
    if result.without_unknown:
        err.print(
            f"[yellow]{len(result.without_unknown)} image(s) have no unknown pixel (trimap 128) "
            f"and score 0.0: {escape(', '.join(result.without_unknown[:10]))}[/yellow]"
        )
    typer.echo(
        f"per-image results: {target / PER_IMAGE_CSV}\nsummary: {target / SUMMARY_JSON}\n"
        f"{result.seconds:.1f} s ({result.count / max(result.seconds, 1e-9):.1f} images/s)"
    )


def _print_means(title: str, means: dict[str, float], baseline: dict | None = None) -> None:
    """The four means as the benchmark reports them (SAD, Grad, Conn in thousands), and a
    trivial baseline's row under them when given."""
    rows = [("", means)] if baseline is None else [("model", means), ("alpha 0.5", baseline)]
    table = Table(title=title)
    if baseline is not None:
        table.add_column("prediction")
    for column in ("SAD", "MSE", "Grad", "Conn"):
        table.add_column(column, justify="right")
    for label, m in rows:
        values = [f"{m['sad']:.4f}", f"{m['mse']:.6f}", f"{m['grad']:.4f}", f"{m['conn']:.4f}"]
        table.add_row(*([label] if baseline is not None else []), *values)
    out_console.print(table)


class _EvalBar:
    """A progress bar over samples on stderr (off when stderr is not a terminal)."""

    def __init__(self) -> None:
        self.bar = _progress("evaluating")
        self.task = None

    def start(self, total: int) -> None:
        self.bar.start()
        self.task = self.bar.add_task("samples", total=total)

    def scored(self, done: int) -> None:
        self.bar.update(self.task, completed=done)

    def stop(self) -> None:
        self.bar.stop()


@evaluate_app.command("run")
def run_command(
    checkpoint: Path = typer.Option(
        ...,
        "--checkpoint",
        help="Our checkpoint (indexnet train), the official indexnet_matting.pth.tar, or a "
        "transformers-format ViTMatte folder.",
    ),
    shards: str = typer.Option(
        ...,
        "--shards",
        help="The validation shards: OUT/validation, the set's folder or URL, or a pattern.",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for predictions and metrics."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    workers: int | None = typer.Option(
        None, "--workers", help="Processes computing metrics [default: CPU count - 1, >= 1]."
    ),
    max_pixels: int = typer.Option(
        4_000_000, "--max-pixels", help="Larger images are predicted in overlapping tiles."
    ),
    tile: int = typer.Option(1536, "--tile", help="Tile side for large images (x32)."),
    contact_samples: int = typer.Option(
        6, "--contact-samples", help="Samples on the contact sheet (0: none)."
    ),
    limit: int = typer.Option(0, "--limit", help="Evaluate only the first N samples (0: all)."),
    baseline: bool = typer.Option(
        False,
        "--baseline",
        help="Also score a trivial prediction (alpha 0.5 in the unknown region), for scale.",
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        help="YAML config; its model section names an official file's variant.",
    ),
    overrides: list[str] = typer.Option([], "--set", "-s", help="section.key=value override."),
    storage_options: list[str] = StorageOption,
    cache_dir: Path | None = CacheDirOption,
    cache_limit_gb: float | None = CacheLimitOption,
) -> None:
    """Score a checkpoint on the validation shards at full resolution, as the benchmark does.

    Every sample is reflect-padded to a multiple of 32, predicted, cropped back, clipped,
    forced to 0/1 where the trimap is 0/255 and rounded to 8 bits. Writes OUT/predictions/<key>.png,
    OUT/per_image.csv, OUT/metrics.json (the means of SAD, MSE, Grad and Conn), OUT/eval.log and
    OUT/contact_sheet.png, and prints the means. Metrics are computed by worker processes while
    inference goes on. --baseline adds a row for a trivial prediction (alpha 0.5 in the unknown
    region), which tells whether a small or young model has learned anything. Exit code 2: bad
    options, checkpoint or shards.
    """
    from configs import ConfigError, load_config
    from evaluation.run import EvalOptions, evaluate
    from shards.reader import ShardError
    from shards.store import parse_options
    from training.inference import enable_huge_pages

    enable_huge_pages()

    workers = workers if workers is not None else max(1, (os.cpu_count() or 2) - 1)
    try:
        cfg = load_config(config, overrides)
        model_cfg = cfg.model
        storage = cfg.storage.override(parse_options(storage_options), cache_dir, cache_limit_gb)
        options = EvalOptions(
            checkpoint,
            shards,
            out,
            device,
            workers,
            max_pixels,
            tile,
            contact_samples,
            model_cfg,
            limit,
            baseline,
            storage,
        )
        result = evaluate(options, _EvalBar())
    except (ConfigError, ValueError) as exc:
        raise fail(exc) from None
    except ShardError as exc:  # a shard damaged or unreachable mid-run: what was done is kept
        raise fail(exc, 1) from None
    scores = result.scores
    _print_means(
        f"{scores.count} validation samples: mean over samples",
        scores.means,
        result.baseline_means,
    )
    typer.echo(
        f"predictions: {out / 'predictions'}\nper-sample results: {out / PER_IMAGE_CSV}\n"
        f"metrics: {out / 'metrics.json'}\nlog: {out / 'eval.log'}"
    )
    if result.contact_sheet is not None:
        typer.echo(f"contact sheet: {result.contact_sheet}")
    typer.echo(
        f"{scores.seconds:.1f} s ({result.samples_per_second:.2f} samples/s, "
        f"{result.inference_seconds:.1f} s in the model on {device})"
    )


def predict_command(
    image: Path | None = typer.Argument(
        None,
        help="Single mode: the photo (PNG, JPEG, BMP, TIFF, WebP).",
        show_default=False,
        metavar="IMAGE",
    ),
    trimap: Path | None = typer.Argument(
        None,
        help="Single mode: its trimap, single-channel, same size.",
        show_default=False,
        metavar="TRIMAP",
    ),
    checkpoint: Path = typer.Option(
        ...,
        "--checkpoint",
        help="Our checkpoint (indexnet train), the official indexnet_matting.pth.tar, or a "
        "transformers-format ViTMatte folder.",
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        help="Single mode: the alpha PNG to write; folder mode: the folder (created).",
    ),
    images: Path | None = typer.Option(None, "--images", help="Folder mode: a folder of photos."),
    trimaps: Path | None = typer.Option(
        None, "--trimaps", help="Folder mode: their trimaps, named as the photos (any extension)."
    ),
    cutout: bool = typer.Option(
        False, "--cutout", help="Also write the foreground as RGBA: <alpha name>_cutout.png."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    max_pixels: int = typer.Option(
        4_000_000, "--max-pixels", help="Larger images are predicted in overlapping tiles."
    ),
) -> None:
    """Predict alpha mattes for your own photos with a trained model (any family).

    Single mode: indexnet predict --checkpoint CKPT IMAGE TRIMAP -o ALPHA.png. Folder mode:
    indexnet predict --checkpoint CKPT --images DIR --trimaps DIR --out DIR writes
    DIR/<name>.png per photo; a trimap pairs with the photo of the same name without extension.
    Alphas are 8-bit grey PNGs of the photo's size; --cutout also writes <alpha name>_cutout.png,
    the photo's colours with the alpha as an RGBA PNG's A channel.

    Photos are turned upright by their EXIF orientation: draw trimaps on the upright picture.
    A trimap is a single-channel grey image (not RGB) with 0 = background, 128 = unknown and
    255 = foreground; other grey values are quantised (below 85 -> 0, above 170 -> 255, the
    rest -> 128) and counted in a warning.

    Every input is checked before anything is written (in folder mode every pair, all problems
    listed at once); outputs are written atomically. Exit code 2: bad options, checkpoint,
    photos or trimaps, and nothing is written.
    """
    single = image is not None or trimap is not None
    try:
        if single == (images is not None or trimaps is not None):
            raise ValueError(
                "give either IMAGE TRIMAP (one photo) or --images DIR --trimaps DIR (a folder), "
                + ("not both" if single else "one of the two")
            )
        if single and trimap is None:
            raise ValueError(f"missing TRIMAP: give the trimap of {image} after it")
        if not single and (images is None or trimaps is None):
            raise ValueError("folder mode needs both --images and --trimaps")
    except ValueError as exc:
        raise fail(exc) from None

    import torch

    from evaluation.images import TRIMAP_RULE
    from evaluation.predict import Prediction, predict_file, predict_folder
    from training.inference import enable_huge_pages

    enable_huge_pages()

    def report(prediction: Prediction, prefix: str = "") -> None:
        height, width = prediction.size
        written = f", {prediction.cutout}" if prediction.cutout is not None else ""
        typer.echo(f"{prefix}{prediction.alpha}{written} ({width}x{height})")
        if prediction.quantised:
            typer.secho(
                f"warning: {prediction.trimap}: {prediction.quantised} pixel(s) were not "
                f"0/128/255; {TRIMAP_RULE}",
                err=True,
                fg=typer.colors.YELLOW,
            )

    try:
        if single:
            report(predict_file(checkpoint, image, trimap, out, cutout, device, max_pixels))
            return
        start = time.perf_counter()
        predictions = predict_folder(
            checkpoint,
            images,
            trimaps,
            out,
            cutout,
            device,
            max_pixels,
            on_image=lambda done, total, p: report(p, f"[{done}/{total}] "),
        )
    except ValueError as exc:
        raise fail(exc) from None
    except torch.cuda.OutOfMemoryError as exc:
        hint = "a smaller --max-pixels predicts big photos in tiles"
        raise fail(RuntimeError(f"{exc}; {hint}"), 1) from None
    seconds = time.perf_counter() - start
    typer.echo(f"{len(predictions)} alpha(s) written to {out} in {seconds:.1f} s")


class ExportFormat(str, Enum):
    """``--format`` of ``indexnet export`` (``evaluation.export.FORMATS``)."""

    onnx = "onnx"
    torchscript = "torchscript"


def export_command(
    checkpoint: Path = typer.Option(
        ...,
        "--checkpoint",
        help="Our checkpoint (indexnet train), the official indexnet_matting.pth.tar, or a "
        "transformers-format ViTMatte folder.",
    ),
    fmt: ExportFormat = typer.Option(
        ..., "--format", help="onnx (needs the [onnx] extra) or torchscript.", show_choices=True
    ),
    out: Path = typer.Option(..., "--out", "-o", help="The file to write, e.g. indexnet.onnx."),
    height: int | None = typer.Option(
        None, "--height", help="Height the graph is traced at (x32, >= 64) [default: 64]."
    ),
    width: int | None = typer.Option(
        None, "--width", help="Width the graph is traced at (x32, >= 64) [default: 96]."
    ),
) -> None:
    """Export a trained model (any family) to one ONNX or TorchScript file, checked against PyTorch.

    The file takes a (1, 4, H, W) float32 input (ONNX: named `input`; TorchScript: any batch):
    ImageNet-normalised RGB and the trimap (IndexNet: trimap / 255; ViTMatte: 0, 0.5, 1), with
    H and W any multiples of 32 (pad IndexNet's by reflection, ViTMatte's with zeros); it
    returns the raw (1, 1, H, W) alpha (clip to [0, 1]). The graph is traced at --height x
    --width, then the written file is run at that size and at 96x160 and 160x96 on seeded
    random inputs and compared with eager PyTorch: the largest absolute difference is printed
    and must be at most 1e-4. ONNX is run with onnxruntime when installed (pip install
    "indexnet-matting[onnx]"), else only checked with onnx.checker.

    Exit code 2: bad options, checkpoint or output folder, or the ONNX packages missing; 1: the
    export does not match PyTorch. Either way nothing is written (OUT.tmp, then rename).
    """
    from evaluation.export import EXAMPLE_SIZE, ExportCheckError, check_target, export_model
    from training.checkpoint import load_for_inference

    size = (
        height if height is not None else EXAMPLE_SIZE[0],
        width if width is not None else EXAMPLE_SIZE[1],
    )
    try:
        check_target(fmt.value, out)  # before the slow part: format, folder, ONNX packages
        model = load_for_inference(checkpoint)
        report = export_model(model, fmt.value, out, example_size=size)
    except (ValueError, ImportError) as exc:
        raise fail(exc) from None
    except ExportCheckError as exc:
        raise fail(exc, 1) from None
    typer.echo(report.summary())


def serve_command(
    checkpoint: Path = typer.Option(
        ...,
        "--checkpoint",
        help="Our checkpoint (indexnet train), a family's released file or a transformers folder.",
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."
    ),
    port: int = typer.Option(8000, "--port", help="Port to listen on (0: any free port)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    max_pixels: int = typer.Option(
        4_000_000, "--max-pixels", help="Larger photos are predicted in overlapping tiles."
    ),
    queue: int = typer.Option(
        4, "--queue", help="Predictions that may wait while one runs; more are answered 503."
    ),
    max_upload_mb: float = typer.Option(
        25, "--max-upload-mb", help="Largest upload (photo and trimap together), in MB."
    ),
) -> None:
    """Serve a web page to paint a trimap on a photo and cut it out with a trained model.

    Open the printed URL: load a photo, paint foreground, background and unknown (or scribble
    the foreground and make a trimap from it), press Predict, download the alpha, the RGBA
    cut-out and the trimap. The API: POST /api/predict with multipart fields image and trimap
    (?cutout=1 for the RGBA cut-out) answers the PNG indexnet predict writes for those files;
    bad input gets 400 with {"error": ...}; GET /api/info describes the model.

    One prediction runs at a time; up to --queue more wait, and more than that are answered 503.
    Listens on 127.0.0.1 unless --host says otherwise. Needs the serve extra
    (pip install "indexnet-matting[serve]"). Exit code 2: bad options or checkpoint, the port
    taken, or the extra missing.
    """
    max_upload_bytes = int(max_upload_mb * 2**20)
    try:
        from evaluation.serve import bind, check_options, make_app, serve
        from training.checkpoint import load_for_inference

        check_options(device, max_pixels, queue, max_upload_bytes)
        if not checkpoint.exists():
            raise ValueError(f"{checkpoint}: no such checkpoint file or folder")
        model = load_for_inference(checkpoint)
        app = make_app(model, device, max_pixels, queue, max_upload_bytes, checkpoint.name)
        sock = bind(host, port)
    except (ValueError, ImportError) as exc:
        raise fail(exc) from None
    serve(app, sock, lambda url: typer.echo(f"serving {checkpoint.name} on {url} (Ctrl-C stops)"))
