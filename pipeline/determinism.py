"""``build --check-determinism``: rebuild a sample of a finished set's shards in a second process
and compare them, byte for byte and member by member, with the shards on disk.

A shard set is only worth its checksums if the same plan always gives the same bytes. The check
recomputes the plan from the inputs and options (it must be ``plan.parquet``), picks ``count``
shards spread evenly over the set (always the same ones for the same set), and rebuilds them in
a fresh Python process (``python -m pipeline.determinism``) that differs from a build's Dask
workers in what one run keeps fixed:

- OpenCV threads ``threads`` (a build's workers use 1), ``OMP_NUM_THREADS`` and
  ``OPENBLAS_NUM_THREADS`` likewise;
- ``PYTHONHASHSEED`` (anything that hashed strings, or iterated a set of them, would change);
- glibc's ``MALLOC_PERTURB_`` (fresh and freed heap memory filled with a pattern: a read of
  memory never written shows) and ``MALLOC_TRIM_THRESHOLD_`` (other buffer placement);
- the process itself: it plans the set again on its own and says whether its plan is the same.

The rebuilt shards go to ``OUT/.determinism/``, which is removed afterwards: nothing already in
the set is written or changed. A shard that differs is named with every member that differs,
and with whether the copy on disk still has ``index.json``'s sha256 (if not, the disk copy was
damaged after the build: ``indexnet shards verify`` and ``repair`` deal with that).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from configs import Config, config_from_dict
from pipeline.build import prepare, same_plan
from pipeline.compose import build_shard
from pipeline.plan import shard_tasks
from shards import store
from shards.index import read_index
from shards.reader import tar_entries
from shards.writer import sha256_file

DETERMINISM_DIR = ".determinism"  # the second process's shards, inside the set, removed after
DEFAULT_SHARDS = 3
_REQUEST, _RESULT = "request.json", "result.json"


@dataclass(frozen=True)
class ShardDiff:
    """One rebuilt shard whose bytes are not the ones on disk."""

    shard: str  # e.g. train/train-000000.tar
    members: tuple[str, ...]  # tar members (key.ext) that differ or that one side lacks
    on_disk_matches_index: bool  # False: the disk copy changed after the build (damage)

    def __str__(self) -> str:
        shown = ", ".join(self.members[:8]) + (" ..." if len(self.members) > 8 else "")
        what = (f"{len(self.members)} member(s) differ: {shown}" if self.members
                else "every member is equal; the tar headers or member order differ")  # fmt: skip
        why = ("the build is not deterministic" if self.on_disk_matches_index
               else "the shard on disk no longer has index.json's sha256: it was changed after "
                    "the build (indexnet shards verify / repair)")  # fmt: skip
        return f"{self.shard}: {what} ({why})"


@dataclass
class DeterminismReport:
    """What ``check_determinism`` compared and found."""

    out: Path
    shards: int  # shards in the set
    checked: list[str] = field(default_factory=list)  # the rebuilt sample, in set order
    differing: list[ShardDiff] = field(default_factory=list)
    second_plan_equal: bool = True  # the second process planned the same set
    environment: dict[str, str] = field(default_factory=dict)  # what the second process ran with
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.second_plan_equal and not self.differing


def pick_shards(names: Sequence[str], count: int) -> list[str]:
    """``count`` of ``names`` spread evenly, the first and the last included (all if fewer)."""
    if count >= len(names):
        return list(names)
    if count == 1:
        return [names[0]]
    step = (len(names) - 1) / (count - 1)
    return [names[round(i * step)] for i in range(count)]


def second_environment(threads: int) -> dict[str, str]:
    """The variables the second process gets that a build's workers do not have."""
    seed = "1" if os.environ.get("PYTHONHASHSEED") == "0" else "0"
    return {
        "OMP_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "PYTHONHASHSEED": seed,
        "MALLOC_PERTURB_": "165",
        "MALLOC_TRIM_THRESHOLD_": "65536",
    }


def check_determinism(
    data_dir: Path,
    bg_dir: Path,
    cfg: Config,
    out: Path,
    *,
    allow_bg_reuse: bool = False,
    val_count: int | None = None,
    shards: int = DEFAULT_SHARDS,
    threads: int | None = None,
) -> DeterminismReport:
    """Rebuild ``shards`` shards of the finished set in ``out`` in a second process; compare.

    Args:
        data_dir, bg_dir, cfg, allow_bg_reuse, val_count: as the set was built (``build``).
        out: the finished shard set.
        shards: how many shards to rebuild (>= 1), spread evenly over the set.
        threads: OpenCV and OpenMP threads of the second process [default: the CPU count, at
            least 2; a build's workers use 1].

    Returns:
        A ``DeterminismReport``; ``ok`` when every rebuilt shard is byte-identical.

    Raises:
        ValueError: ``shards`` < 1, no finished build in ``out``, the inputs and options do
            not give the plan ``out`` was built from, or ``out`` or an input is a store URL
            (the second process and the comparison work on local folders).
        InputError: bad inputs.
        RuntimeError: the second process failed (its error output is in the message).
    """
    start = time.perf_counter()
    if shards < 1:
        raise ValueError(f"--check-shards must be >= 1, got {shards}")
    if any(store.is_remote(where) for where in (data_dir, bg_dir, out)):
        raise ValueError(
            "--check-determinism needs a local --data-dir, --bg-dir and --out (it rebuilds "
            "shards in a second local process); copy the set and its inputs to folders to check it"
        )
    threads = threads or max(2, os.cpu_count() or 1)
    out = Path(out).resolve()
    try:
        index = read_index(out)
    except ValueError as exc:
        raise ValueError(f"no finished build in {out} to check: {exc}") from None
    inputs, plan = prepare(data_dir, bg_dir, cfg, allow_bg_reuse, val_count)
    if not same_plan(out, plan):
        raise ValueError(
            f"{out} was built from a different plan than these inputs and options give; "
            "check it with the options it was built with"
        )
    names = [s.path for s in index.shards]
    report = DeterminismReport(out=out, shards=len(names), checked=pick_shards(names, shards))
    report.environment = {**second_environment(threads), "opencv_threads": str(threads)}
    staging = out / DETERMINISM_DIR
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        request = {
            "data_dir": str(Path(data_dir).resolve()),
            "bg_dir": str(Path(bg_dir).resolve()),
            "config": cfg.to_dict(),
            "allow_bg_reuse": allow_bg_reuse,
            "val_count": val_count,
            "out": str(out),
            "staging": str(staging),
            "shards": report.checked,
            "threads": threads,
        }
        (staging / _REQUEST).write_text(json.dumps(request))
        _run_second_process(staging, threads)
        result = json.loads((staging / _RESULT).read_text())
        report.second_plan_equal = result["plan_equal"]
        recorded = {s.path: s.sha256 for s in index.shards}
        for name in report.checked:
            diff = compare_shards(out / name, staging / name, name, recorded[name])
            if diff is not None:
                report.differing.append(diff)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report.seconds = time.perf_counter() - start
    return report


def _run_second_process(staging: Path, threads: int) -> None:
    # the child imports this very code, wherever it is (an installed package or a checkout)
    here = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, **second_environment(threads), "PYTHONPATH": path}
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.determinism", str(staging / _REQUEST)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"the second build process failed (exit {done.returncode}):\n{tail}")


def _members(path: Path) -> dict[str, bytes]:
    with open(path, "rb") as f:
        return {e.name: e.data or b"" for e in tar_entries(f)}


def compare_shards(disk: Path, rebuilt: Path, name: str, recorded: str) -> ShardDiff | None:
    """None when the two tars are byte-identical, else which members differ."""
    if disk.is_file() and sha256_file(disk) == sha256_file(rebuilt):
        return None
    ours = _members(disk) if disk.is_file() else {}
    theirs = _members(rebuilt)
    differ = sorted(m for m in ours.keys() | theirs.keys() if ours.get(m) != theirs.get(m))
    on_disk = disk.is_file() and sha256_file(disk)[1] == recorded
    return ShardDiff(name, tuple(differ), on_disk)


def _second_process(request_path: Path) -> int:
    """The second process: plan again, rebuild the requested shards into the staging folder."""
    request = json.loads(Path(request_path).read_text())
    cfg = config_from_dict(request["config"])
    inputs, plan = prepare(
        Path(request["data_dir"]), Path(request["bg_dir"]), cfg,
        request["allow_bg_reuse"], request["val_count"],
    )  # fmt: skip
    staging = Path(request["staging"])
    tasks = {t.name: t for t in shard_tasks(plan, inputs, staging)}
    sha256 = {}
    for name in request["shards"]:
        task = dataclasses.replace(tasks[name], out_dir=str(staging))
        sha256[name] = build_shard(task, force=True, threads=request["threads"]).sha256
    result = {
        "plan_equal": same_plan(Path(request["out"]), plan),
        "sha256": sha256,
        "pid": os.getpid(),
    }
    (staging / _RESULT).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    code = _second_process(Path(sys.argv[1]))
    # The result is written; leave without the interpreter's teardown, where OpenCV's worker
    # threads (cv2.setNumThreads(threads) above 1) were seen, rarely and under load, to abort
    # the process ("terminate called without an active exception", exit -6) after its work.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
