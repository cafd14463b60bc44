"""Lean train shards against full ones (``pipeline build --lean-train``): build time per core,
train bytes per sample, one loader process's samples/s, and the bytes one GPU and one 8-GPU node
read at a 50 ms step of 16.

Writes AIM-500-sized inputs (benchmarks/compose.py's generator: 1500x1000 JPEG originals,
COCO-sized backgrounds), then builds the same plan full and lean on a local Dask cluster of one
worker process (one core: the build's own per-core rate, whole process), ``--runs`` times,
alternated; the fastest of each is reported with all runs listed. Then it times one epoch of
the train split in the training process (no loader workers: one loader process's rate) from
each set, and checks that both give the same batches (keys and digests).

Prints one JSON object.

    python benchmarks/lean.py [--foregrounds 6 --bgs-per-fg 24 --runs 2]     # 5-10 minutes
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compose import make_inputs  # noqa: E402 - sibling benchmark script: AIM-500-sized inputs
from machine import cpu_model  # noqa: E402

from configs import load_config  # noqa: E402
from pipeline.build import build  # noqa: E402
from shards.cluster import ClusterOptions  # noqa: E402
from shards.index import read_index  # noqa: E402
from shards.reader import raw_samples, resolve_shards, shard_samples  # noqa: E402
from shards.schema import TRAIN_MEMBERS, name_of  # noqa: E402
from training.data.batching import batches, make_loader  # noqa: E402
from training.data.stream import MattingStream  # noqa: E402

MB = 1e6
STEP_S, PER_GPU = 0.050, 16  # the GPU the loader must feed: a 50 ms step of 16 samples


def epoch(spec: str, cfg) -> tuple[float, list]:
    """Seconds for one epoch's global batches in this process, and their (keys, digests)."""
    shards = resolve_shards(spec)
    layout = shard_samples(shards)
    began = time.perf_counter()
    loader = make_loader(MattingStream(shards, cfg, layout=layout), 0)
    seen = [(b.keys, b.digests) for b in batches(iter(loader), cfg.train.batch_size)]
    return time.perf_counter() - began, seen


def seek_past_unused(path: str, names: tuple[str, ...]) -> int:
    """Issue 27, item 4's candidate: walk a local tar's headers, read the members training
    uses and seek over the others (merged, trimap); returns the bytes read. Our writer's tars
    are plain USTAR (no long-name or pax headers), which is all this walker reads."""
    wanted, read = frozenset(names), 0
    with open(path, "rb") as f:
        while len(header := f.read(512)) == 512 and header.strip(b"\0"):
            info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
            padded = -(-info.size // 512) * 512
            if name_of(info.name.partition(".")[2]) in wanted:
                read += len(f.read(info.size)) + 512
                f.seek(padded - info.size, 1)
            else:
                f.seek(padded, 1)
                read += 512
    return read


def read_members(spec: str, repeats: int) -> dict:
    """The train split's members training uses, read from page-cached local files: through
    the reader (``shards.reader.raw_samples``; since issue 27 it seeks past unused members of
    local files, before it read every byte) and by the standalone header walker above."""
    urls = resolve_shards(spec).urls
    total = sum(os.path.getsize(u) for u in urls)
    best = {"reader": math.inf, "seek_past_unused": math.inf}
    for _ in range(repeats):
        began = time.perf_counter()
        samples = sum(1 for u in urls for _ in raw_samples(u, TRAIN_MEMBERS))
        best["reader"] = min(best["reader"], time.perf_counter() - began)
        began = time.perf_counter()
        used = sum(seek_past_unused(u, TRAIN_MEMBERS) for u in urls)
        best["seek_past_unused"] = min(best["seek_past_unused"], time.perf_counter() - began)
    return {
        "ms_per_sample": {k: round(v / samples * 1000, 3) for k, v in best.items()},
        "MB_read_per_sample": {
            "read_all": round(total / samples / MB, 3),
            "seek_past_unused": round(used / samples / MB, 3),
        },  # fmt: skip
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--foregrounds", type=int, default=6)
    parser.add_argument("--bgs-per-fg", type=int, default=24)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench-lean-"))
    try:
        data_dir, bg_dir = make_inputs(
            root / "in", args.foregrounds, args.foregrounds * args.bgs_per_fg + 16, seed=0
        )
        sets = {"full": "false", "lean": "true"}
        builds: dict[str, list[float]] = {name: [] for name in sets}
        for run in range(args.runs):
            for name, lean in sets.items():
                cfg = load_config(overrides=[
                    f"data.bgs_per_train_fg={args.bgs_per_fg}", "data.bgs_per_val_fg=2",
                    "data.samples_per_shard=16", "data.validation_ids=[bench000]",
                    f"data.lean_train={lean}",
                ])  # fmt: skip
                out = root / f"{name}-{run}"
                summary = build(data_dir, bg_dir, cfg, out, ClusterOptions(workers=1))
                assert summary.complete
                builds[name].append(summary.written / summary.seconds)
        result: dict = {"machine": {"cpus": os.cpu_count(), "cpu": cpu_model()}}
        t = load_config(overrides=["train.batch_size=8"])
        batches_of = {}
        for name in sets:
            index = read_index(root / f"{name}-0")
            train = index.split("train")
            per_sample = sum(s.bytes for s in train) / sum(s.samples for s in train)
            seconds, seen = epoch(str(root / f"{name}-0"), t)
            batches_of[name] = seen
            rate = sum(len(keys) for keys, _ in seen) / seconds
            result[name] = {
                "build_samples_per_s_per_core": round(max(builds[name]), 2),
                "build_runs": [round(r, 2) for r in builds[name]],
                "train_MB_per_sample": round(per_sample / MB, 3),
                "validation_MB_per_sample": round(
                    sum(s.bytes for s in index.split("validation"))
                    / max(1, index.samples("validation"))
                    / MB,
                    3,
                ),  # fmt: skip
                "loader_samples_per_s": round(rate, 2),
                "loader_MB_per_s": round(rate * per_sample / MB, 1),
                "one_gpu_needs_MB_per_s": round(PER_GPU / STEP_S * per_sample / MB, 1),
                "eight_gpu_node_needs_MB_per_s": round(8 * PER_GPU / STEP_S * per_sample / MB, 1),
            }
        result["samples"] = {"train": read_index(root / "full-0").samples("train")}
        result["lean_over_full"] = {
            "build_speed": round(
                result["lean"]["build_samples_per_s_per_core"]
                / result["full"]["build_samples_per_s_per_core"],
                2,
            ),  # fmt: skip
            "train_bytes": round(
                result["lean"]["train_MB_per_sample"] / result["full"]["train_MB_per_sample"], 3
            ),
            "loader_speed": round(
                result["lean"]["loader_samples_per_s"] / result["full"]["loader_samples_per_s"], 2
            ),
        }
        result["same_batches"] = batches_of["lean"] == batches_of["full"]
        result["full_set_reading_only_used_members"] = read_members(
            str(root / "full-0"), args.runs + 1
        )
        print(json.dumps(result, indent=1))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
