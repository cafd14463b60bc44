"""Determinism (issue 14): build the same plan again and again under conditions that vary what
one run keeps fixed, and compare every shard byte for byte (member by member where they differ).

Inputs are ``benchmarks/compose.py``'s ``make_inputs`` (AIM-500-sized JPEG originals, COCO-sized
JPEG backgrounds), small enough for a few minutes on 2 cores. The reference is ``build_shard``
over every shard in this process with one OpenCV thread; then, each into its own folder:

* in process with ``cv2.setNumThreads`` 2, 4 and 8 (``build_shard(threads=N)``: a build's Dask
  workers always call ``cv2.setNumThreads(1)``, so neither ``OMP_NUM_THREADS`` nor OpenCV's own
  default reaches their compositing);
* the inputs copied to another folder in reverse file order (directory order, paths);
* ``pipeline.build.build`` on a real ``LocalCluster`` of 1, 2 and 3 workers (2 of them twice);
  2 workers beside a CPU hog (two busy processes); with ``OMP_NUM_THREADS`` /
  ``OPENBLAS_NUM_THREADS`` 1 and 4 in the workers; with ``MALLOC_PERTURB_=165`` (fresh and
  freed heap memory filled: a read of unwritten memory shows) and Dask's default
  ``MALLOC_TRIM_THRESHOLD_=65536`` (other buffer placement); beside a process holding most of
  the available memory; with a worker SIGKILLed (psutil) after the first and the third shard,
  so that the scheduler reruns its task on a restarted worker;
* one shard in a fresh process under ``RLIMIT_AS`` limits from tight to loose: an allocation
  that fails must raise, never turn into a "replaced" background or other bytes;
* the plan computed in processes with ``PYTHONHASHSEED`` 0, 1 and 2.

It also lists, from the code of ``pipeline/`` and ``shards/``, every clock read, directory
listing, ``hash()``/set use, RNG and OpenCV call (the candidates a reader checks by hand).
Prints one JSON object; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import multiprocessing as mp
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import psutil
from compose import make_inputs
from machine import cpu_model

from configs import load_config
from pipeline.build import PLAN_NAME, BuildProgress, build, prepare
from pipeline.compose import build_shard
from pipeline.determinism import compare_shards
from pipeline.plan import shard_tasks
from shards.cluster import ClusterOptions
from shards.index import INDEX_NAME, read_index, read_samples

ROOT = Path(__file__).resolve().parent.parent
_T0 = time.perf_counter()
SOURCE_PATTERNS = {
    "clock": r"\btime\.(time|perf_counter|monotonic)\(|datetime|\.now\(",
    "directory_order": r"os\.listdir|\.glob\(|\.rglob\(|\.iterdir\(|os\.scandir|os\.walk",
    "hash_and_sets": r"\bhash\(|\bset\(|frozenset\(",
    "randomness": r"random|default_rng|uuid",
    "opencv_calls": r"cv2\.\w+\(",
}


def log(message: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


def _busy(_: int) -> None:
    while True:
        pass


def _hold_memory(gigabytes: float, ready) -> None:
    """Allocate and touch ``gigabytes`` GB, then wait to be terminated."""
    import numpy as np  # noqa: PLC0415 - only this child needs it

    blocks = [np.ones(32 << 20) for _ in range(int(gigabytes * 4))]  # 256 MiB each, written
    ready.set()
    time.sleep(3600)
    del blocks


@contextmanager
def beside(target, args, count: int = 1, wait=None):
    """``count`` spawned processes running ``target(*args)`` for the duration."""
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    procs = [ctx.Process(target=target, args=(*args, ready) if wait else args, daemon=True)
             for _ in range(count)]  # fmt: skip
    for p in procs:
        p.start()
    if wait:
        ready.wait(timeout=wait)
    try:
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.terminate()
            p.join()


@contextmanager
def environ(extra: dict[str, str]):
    saved = dict(os.environ)
    os.environ.update(extra)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class Killer(BuildProgress):
    """SIGKILLs one Dask worker process after the given numbers of finished shards."""

    def __init__(self, after: tuple[int, ...], spare: set[int]) -> None:
        self.after, self.spare, self.done, self.killed = after, spare, 0, []

    def shard_done(self, result, samples) -> None:
        self.done += 1
        if self.done not in self.after:
            return
        workers = [
            p for p in psutil.Process().children(recursive=True)
            if p.pid not in self.spare and "spawn_main" in " ".join(p.cmdline())
        ]  # fmt: skip
        busy = max(workers, key=lambda p: p.cpu_percent(interval=0.05), default=None)
        if busy is not None:
            share = busy.cpu_percent(interval=0.05)  # > 0: it was compositing a shard
            busy.send_signal(signal.SIGKILL)
            self.killed.append({"after_shards": self.done, "pid": busy.pid, "cpu_percent": share})


def digests(out: Path, names: list[str]) -> dict[str, str]:
    return {n: hashlib.sha256((out / n).read_bytes()).hexdigest() for n in names}


def in_process(tasks, out: Path, threads: int) -> None:
    for task in tasks:
        build_shard(dataclasses.replace(task, out_dir=str(out)), force=True, threads=threads)


def dask_build(data_dir, bg_dir, cfg, out: Path, workers: int, progress=None) -> dict:
    summary = build(data_dir, bg_dir, cfg, out, ClusterOptions(workers=workers), val_count=1,
                    overwrite=True, progress=progress)  # fmt: skip
    if not summary.complete:
        raise RuntimeError(f"incomplete build in {out}: {summary}")
    return {"replaced": summary.replaced, "failed": summary.failed, "seconds": summary.seconds}


def _rlimit_child(task, out: str, extra_mb: int, queue) -> None:
    """In a fresh process: cap the address space at what it uses now + ``extra_mb``, build."""
    vms = psutil.Process().memory_info().vms
    resource.setrlimit(resource.RLIMIT_AS, (vms + extra_mb * 1_000_000, resource.RLIM_INFINITY))
    try:
        result = build_shard(dataclasses.replace(task, out_dir=out), force=True)
        statuses = sorted({r["status"] for r in result.rows})
        got = {"outcome": "built", "sha256": result.sha256, "statuses": statuses}
    except BaseException as exc:  # noqa: BLE001 - the outcome is what is measured
        got = {"outcome": "raised", "error": f"{type(exc).__name__}: {str(exc)[:120]}"}
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    queue.put(got)  # after lifting the limit: the queue's feeder thread needs a stack


def rlimit_sweep(task, root: Path, reference: str, limits: list[int]) -> list[dict]:
    ctx = mp.get_context("spawn")
    rows = []
    for extra in limits:
        out = root / f"rlimit-{extra}"
        queue = ctx.Queue()
        proc = ctx.Process(target=_rlimit_child, args=(task, str(out), extra, queue))
        proc.start()
        proc.join(timeout=300)
        got = queue.get() if not queue.empty() else {"outcome": f"died ({proc.exitcode})"}
        if got["outcome"] == "built":
            got["identical"] = got.pop("sha256") == reference
        rows.append({"address_space_mb_above_start": extra, **got})
        log(f"RLIMIT_AS +{extra} MB: {got}")
    return rows


_PLAN_CODE = """
import hashlib, json, sys
from configs import load_config
from pipeline.build import prepare
cfg = load_config(overrides=json.loads(sys.argv[3]))
inputs, plan = prepare(sys.argv[1], sys.argv[2], cfg, val_count=1)
t = plan.table()
print(hashlib.sha256(json.dumps([t.to_pylist(), t.schema.metadata[b"plan"].decode()]).encode())
      .hexdigest())
"""


def plan_under_hash_seeds(data_dir, bg_dir, overrides, seeds=(0, 1, 2)) -> dict[str, str]:
    out = {}
    for seed in seeds:
        env = {**os.environ, "PYTHONHASHSEED": str(seed), "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-c", _PLAN_CODE, str(data_dir), str(bg_dir), json.dumps(overrides)],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        out[str(seed)] = done.stdout.strip()
    return out


def reversed_copy(src: Path, dst: Path) -> Path:
    """``src`` copied file by file in reverse name order (another directory order)."""
    for path in sorted(src.rglob("*"), reverse=True):
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            shutil.copyfile(path, target)
    return dst


def source_reads() -> dict[str, list[str]]:
    """file:line: code of every line of pipeline/ and shards/ matching each pattern."""
    hits: dict[str, list[str]] = {k: [] for k in SOURCE_PATTERNS}
    for path in sorted([*(ROOT / "pipeline").glob("*.py"), *(ROOT / "shards").glob("*.py")]):
        for no, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            for kind, pattern in SOURCE_PATTERNS.items():
                if re.search(pattern, code):
                    hits[kind].append(f"{path.relative_to(ROOT)}:{no}: {code.strip()}")
    return hits


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--foregrounds", type=int, default=5, help="foregrounds (>= 2)")
    parser.add_argument("--bgs-per-fg", type=int, default=8, help="backgrounds per foreground")
    parser.add_argument("--samples-per-shard", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--hog-gb", type=float, default=None,
        help="memory the memory hog holds [default: 60%% of available, leaving at least 4 GB]",
    )  # fmt: skip
    parser.add_argument(
        "--rlimit-mb", type=int, nargs="*", default=[*range(20, 82, 4), 100, 200],
        help="RLIMIT_AS limits, MB above a fresh process's address space after its imports",
    )  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=None, help="keep everything here")
    return parser.parse_args(argv)


def run(args, root: Path) -> dict:
    data_dir, bg_dir = make_inputs(root, args.foregrounds, args.foregrounds * args.bgs_per_fg,
                                   args.seed)  # fmt: skip
    overrides = [f"data.seed={args.seed}", f"data.bgs_per_train_fg={args.bgs_per_fg}",
                 f"data.bgs_per_val_fg={args.bgs_per_fg}",
                 f"data.samples_per_shard={args.samples_per_shard}"]  # fmt: skip
    cfg = load_config(overrides=overrides)
    inputs, plan = prepare(data_dir, bg_dir, cfg, val_count=1)
    ref_out = root / "reference"
    tasks = shard_tasks(plan, inputs, ref_out)
    names = [t.name for t in tasks]
    log(f"{len(plan.samples)} samples in {len(tasks)} shards; reference in process, 1 thread")
    in_process(tasks, ref_out, 1)
    reference = digests(ref_out, names)
    conditions: dict[str, dict] = {}

    def record(name: str, out: Path, **extra) -> None:
        got = digests(out, names)
        differing = [
            str(compare_shards(ref_out / n, out / n, n, reference[n]))
            for n in names
            if got[n] != reference[n]
        ]
        row = {"identical": not differing, "differing_shards": differing, **extra}
        if (out / INDEX_NAME).exists():  # a full build: its samples.parquet and index too
            rows = read_samples(out).to_pylist()
            row["replaced_or_failed"] = sum(r["status"] != "ok" for r in rows)
            row["samples_parquet"] = hashlib.sha256(
                json.dumps(rows, sort_keys=True).encode()
            ).hexdigest()
            meta = dict(read_index(out).meta)
            meta.pop("build")  # time, seconds and cluster: expected to differ
            row["index_sans_build"] = hashlib.sha256(
                json.dumps(
                    [meta, [dataclasses.asdict(s) for s in read_index(out).shards]], sort_keys=True
                ).encode()  # fmt: skip
            ).hexdigest()
        conditions[name] = row
        log(f"{name}: {differing or 'identical'}")

    for threads in (2, 4, 8):
        out = root / f"threads-{threads}"
        in_process(tasks, out, threads)
        record(f"in_process_cv2_threads_{threads}", out)

    copy_root = root / "reversed-copy"
    rdata = reversed_copy(data_dir, copy_root / "AIM-500")
    rbg = reversed_copy(bg_dir, copy_root / "bgs")
    rinputs, rplan = prepare(rdata, rbg, cfg, val_count=1)
    out = root / "reversed"
    in_process(shard_tasks(rplan, rinputs, out), out, 1)
    record("inputs_copied_in_reverse_order_elsewhere", out,
           plan_equal=rplan.table().equals(plan.table(), check_metadata=True))  # fmt: skip

    def dask(name: str, workers: int, env=None, progress=None, **extra) -> None:
        out = root / name
        with environ(env or {}):
            took = dask_build(data_dir, bg_dir, cfg, out, workers, progress)
        record(name, out, **took, **extra)

    for workers in (1, 2, 3):
        dask(f"dask_{workers}_workers", workers)
    dask("dask_2_workers_again", 2)
    with beside(_busy, (0,), count=2) as pids:
        dask("dask_2_workers_beside_a_cpu_hog", 2, cpu_hog_processes=len(pids))
    for omp in ("1", "4"):
        dask(f"dask_2_workers_omp_num_threads_{omp}", 2,
             {"OMP_NUM_THREADS": omp, "OPENBLAS_NUM_THREADS": omp})  # fmt: skip
    dask("dask_2_workers_malloc_perturb_and_trim", 2,
         {"MALLOC_PERTURB_": "165", "MALLOC_TRIM_THRESHOLD_": "65536"})  # fmt: skip
    available = psutil.virtual_memory().available / 1e9
    hog = args.hog_gb if args.hog_gb is not None else max(0.0, min(0.6 * available,
                                                                   available - 4))  # fmt: skip
    log(f"memory hog: holding {hog:.1f} of {available:.1f} GB available")
    with beside(_hold_memory, (hog,), wait=600):
        left = psutil.virtual_memory().available / 1e9
        dask(
            "dask_2_workers_beside_a_memory_hog",
            2,
            hog_gb=round(hog, 2),
            available_gb_before=round(available, 2),
            available_gb_during=round(left, 2),
        )
    killer = Killer(after=(1, 3), spare=set())
    dask("dask_2_workers_one_killed_twice", 2, progress=killer)
    conditions["dask_2_workers_one_killed_twice"]["killed"] = killer.killed

    log("RLIMIT_AS sweep on the first shard")
    sweep = rlimit_sweep(tasks[0], root, reference[names[0]], args.rlimit_mb)
    hashes = plan_under_hash_seeds(data_dir, bg_dir, overrides)
    plan_file = hashlib.sha256((root / "dask_1_workers" / PLAN_NAME).read_bytes()).hexdigest()
    builds = 1 + len(conditions)
    full = [c for c in conditions.values() if "samples_parquet" in c]
    return {
        "benchmark": "determinism",
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpu_model": cpu_model(),
            "opencv": cv2.__version__,
            "python": sys.version.split()[0],
        },  # fmt: skip
        "inputs": {
            "foregrounds": args.foregrounds,
            "samples": len(plan.samples),
            "shards": len(tasks),
            "samples_per_shard": args.samples_per_shard,
        },  # fmt: skip
        "builds_of_every_shard": builds,
        "all_shards_identical": all(c["identical"] for c in conditions.values()),
        "rlimit_sweep_never_differs": all(r.get("identical", True) for r in sweep),
        "samples_parquet_identical": len({c["samples_parquet"] for c in full}) == 1,
        "index_identical_but_build_section": len({c["index_sans_build"] for c in full}) == 1,
        "plan_parquet_sha256_first_dask_build": plan_file,
        "plan_under_pythonhashseed": hashes,
        "plan_identical_under_hash_seeds": len(set(hashes.values())) == 1,
        "conditions": conditions,
        "rlimit_sweep_first_shard": sweep,
        "source_reads": source_reads(),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        result = run(args, args.workdir.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="bench-determinism-") as tmp:
            result = run(args, Path(tmp))
    log(f"done in {time.perf_counter() - _T0:.1f} s")
    print(json.dumps(result, indent=1))
    return 0 if result["all_shards_identical"] and result["rlimit_sweep_never_differs"] else 1


if __name__ == "__main__":
    sys.exit(main())
