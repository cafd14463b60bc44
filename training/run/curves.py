"""Training curves: ``RUN/train.jsonl`` -> one PNG a person reads at a glance.

``read_run(run_dir)`` parses a run's log into a ``RunLog``: the step records (``loss``,
``loss_<term>``, ``lr``, ``lr_<group>``, timings), the validation records, and the trivial
baseline's scores (``{"baseline": ...}``, logged once, at the first validation). A resume
(``{"resume": s}``) drops what the interrupted run logged after step ``s``, so the curves show
the steps that made the weights. ``draw(runs, path)`` writes, atomically:

- (a) the loss and each of its terms against the step (log scale);
- (b) the learning rates against the step (log scale);
- (c) validation SAD, MSE, Grad and Conn against the epoch, one small panel each, with the
  trivial baseline as a dashed line where it is known.

Several runs are overlaid, one colour per run, named by their folder. The trainer redraws
``RUN/curves.png`` after each validation and at the end (``training.run.trainer``);
``indexnet report`` draws any runs and prints each one's best validation (``best_table``).
matplotlib is imported inside ``draw``, so reading logs needs only the standard library.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from shards.atomic import atomic_write_bytes
from shards.metrics import METRICS

LOG_NAME = "train.jsonl"  # the trainer's log (``training.run.trainer.LOG_NAME``)
CURVES_NAME = "curves.png"
# how the table prints each metric (MSE is two orders below the others)
METRIC_FORMATS = {"sad": ".3f", "mse": ".5f", "grad": ".3f", "conn": ".3f"}
METRIC_TITLES = {"sad": "SAD", "mse": "MSE", "grad": "Grad", "conn": "Conn"}
MAX_POINTS = 2000  # per curve: longer runs are thinned evenly, so a redraw stays cheap
# series (other than the loss and the full rate) get these line styles when runs are overlaid
_STYLES = ("-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))


@dataclass
class RunLog:
    """One run's ``train.jsonl``, parsed.

    Attributes:
        path: the run folder.
        name: what legends and tables call it (the folder's name).
        steps: the step records in step order, each a dict of ``step``, ``epoch`` and numbers.
        validations: ``{"epoch", "step", "sad", "mse", "grad", "conn", "samples"}`` per
            validation, in order.
        baseline: the trivial prediction's ``{"sad", "mse", "grad", "conn", "samples"}``.
    """

    path: Path
    name: str
    steps: list[dict] = field(default_factory=list)
    validations: list[dict] = field(default_factory=list)
    baseline: dict | None = None

    def best(self) -> dict | None:
        """The validation with the lowest Grad (the first of equals), as ``best.pt`` keeps it;
        None before the first validation."""
        return min(self.validations, key=lambda v: v["grad"], default=None)


def read_run(run_dir: str | Path) -> RunLog:
    """Parse ``run_dir/train.jsonl``.

    A last line without its newline is one being written and is left out; every other line
    must be a JSON object.

    Raises:
        ValueError: no such folder, no ``train.jsonl`` in it, a line that is not a JSON object
            (file and line number named), or a log with no step or validation record yet.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: no such run folder (pass the --out of indexnet train)")
    path = run_dir / LOG_NAME
    if not path.is_file():
        raise ValueError(
            f"{path}: no training log; is {run_dir} a run folder (the --out of indexnet train)?"
        )
    run = RunLog(run_dir, run_dir.resolve().name)
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    if lines and lines[-1]:  # unterminated: the trainer is writing it now
        lines[-1] = ""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{path}, line {number}: not JSON ({exc.msg}); the log is corrupt there: "
                "remove or repair that line"
            ) from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}, line {number}: not a JSON object: {line[:80]!r}")
        _add(run, record)
    if not run.steps and not run.validations:
        raise ValueError(f"{path}: no step or validation record yet; nothing to draw or report")
    run.steps.sort(key=lambda r: r["step"])
    return run


def _add(run: RunLog, record: dict) -> None:
    """File one record of the log into ``run``."""
    if "resume" in record:  # what the interrupted run logged after its checkpoint is undone
        at = record["resume"]
        run.steps = [r for r in run.steps if r["step"] <= at]
        run.validations = [v for v in run.validations if v["step"] <= at]
    elif "validation" in record:
        run.validations.append(
            {"epoch": record.get("epoch"), "step": record.get("step")} | record["validation"]
        )
    elif "baseline" in record:
        run.baseline = record["baseline"]
    elif "loss" in record and "step" in record:
        run.steps.append(record)


def _thin(records: list[dict]) -> list[dict]:
    stride = -(-len(records) // MAX_POINTS)
    return records[::stride] if stride > 1 else records


def _labels(runs: list[RunLog]) -> list[str]:
    """Folder names, with the parent folder added where two runs share a name."""
    names = [run.name for run in runs]
    return [
        f"{run.path.resolve().parent.name}/{name}" if names.count(name) > 1 else name
        for run, name in zip(runs, names, strict=True)
    ]


def _series(runs: list[RunLog], prefix: str) -> list[str]:
    """The keys starting with ``prefix`` over all runs, the bare one (``loss``, ``lr``) first."""
    keys = {k for run in runs for r in run.steps for k in r if k.split("_")[0] == prefix}
    return sorted(keys, key=lambda k: (k != prefix, k))


def draw(runs: list[RunLog], path: str | Path) -> Path:
    """Draw the runs' curves into one PNG at ``path`` (written atomically).

    One run: a colour per series. Several: a colour per run (the figure's legend names them)
    and a line style per series (each panel's legend).

    Args:
        runs: from ``read_run``, at least one.
        path: the PNG to write; its folder must exist.

    Returns:
        ``path``.
    """
    if not runs:
        raise ValueError("draw needs at least one run")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    colours = [f"C{i % 10}" for i in range(max(len(runs), 10))]
    labels = _labels(runs)
    several = len(runs) > 1

    def style(r: int, s: int) -> dict:
        if several:
            return {"color": colours[r], "linestyle": _STYLES[s % len(_STYLES)]}
        return {"color": colours[s % 10], "linestyle": "-"}

    figure = Figure(figsize=(13, 7.5), dpi=90)
    FigureCanvasAgg(figure)  # the Agg canvas, without pyplot's global state or backend choice
    # fixed margins: a layout engine would double the time of a redraw
    grid = figure.add_gridspec(
        2, 4, left=0.055, right=0.99, top=0.91, bottom=0.07, hspace=0.32, wspace=0.28
    )
    for panel, prefix, title in (
        (grid[0, :2], "loss", "(a) training loss and its terms"),
        (grid[0, 2:], "lr", "(b) learning rates"),
    ):
        ax = figure.add_subplot(panel)
        keys = _series(runs, prefix)
        for r, run in enumerate(runs):
            for s, key in enumerate(keys):
                points = _thin([rec for rec in run.steps if key in rec])
                if points:
                    ax.plot(
                        [p["step"] for p in points],
                        [p[key] for p in points],
                        linewidth=1.6 if key == prefix else 1.0,
                        label=None if several else key,
                        **style(r, s),
                    )
        ax.set(title=title, xlabel="step", yscale="log")
        ax.grid(True, alpha=0.25)
        if several:
            handles = [Line2D([], [], color="0.3", **_line(s)) for s in range(len(keys))]
            ax.legend(handles, keys, fontsize="small")
        elif keys:
            ax.legend(fontsize="small")
    baselines = [run.baseline for run in runs]
    base_colour = "0.35" if several and all(b == baselines[0] for b in baselines) else None
    for column, metric in enumerate(METRICS):
        ax = figure.add_subplot(grid[1, column])
        for r, run in enumerate(runs):
            colour = colours[r] if several else "C0"
            if run.validations:
                ax.plot(
                    [v["epoch"] for v in run.validations],
                    [v[metric] for v in run.validations],
                    marker="o",
                    markersize=3,
                    color=colour,
                )
            if run.baseline is not None:  # grey when every run has the same (one shard set)
                ax.axhline(run.baseline[metric], color=base_colour or colour, linestyle="--", lw=1)
        ax.set(title=f"(c) validation {METRIC_TITLES[metric]}", xlabel="epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(True, alpha=0.25)
        if column == 0 and any(run.baseline for run in runs):
            ax.legend(
                [Line2D([], [], color="0.3", linestyle="--")],
                ["trivial baseline"],
                fontsize="small",
            )
    if several:
        figure.legend(
            [Line2D([], [], color=colours[r], linewidth=2) for r in range(len(runs))],
            labels,
            loc="upper center",
            ncols=min(len(runs), 6),
            frameon=False,
        )
    else:
        figure.suptitle(labels[0])
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def _line(s: int) -> dict:
    return {"linestyle": _STYLES[s % len(_STYLES)]}


def best_table(runs: list[RunLog]) -> list[str]:
    """Each run's best validation (lowest Grad) as aligned text lines, its baseline under it.

    Columns: run, epoch and step (as ``train.jsonl`` has them), SAD, MSE, Grad, Conn.
    """
    labels = _labels(runs)
    rows = [["run", "epoch", "step", *(METRIC_TITLES[m] for m in METRICS)]]
    for label, run in zip(labels, runs, strict=True):
        best = run.best()
        if best is None:
            rows.append([label, "-", "-", "no validation yet", *([""] * (len(METRICS) - 1))])
        else:
            rows.append(
                [label, str(best["epoch"]), str(best["step"])]
                + [format(best[m], METRIC_FORMATS[m]) for m in METRICS]
            )
        if run.baseline is not None:
            rows.append(
                ["  baseline", "", ""]
                + [format(run.baseline[m], METRIC_FORMATS[m]) for m in METRICS]
            )
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(width) if c == 0 else cell.rjust(width)
            for c, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
