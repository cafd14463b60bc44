"""Speed of `shards verify`: the checksum pass against `sha256sum`, and `--deep` per worker.

Builds a realistic shard set (1500x1000 foregrounds, 640x480 backgrounds, as
benchmarks/compose.py makes them), warms the page cache, then times on the same files:

- `sha256sum` over every tar (one core);
- our checksum pass (`verify`, no --deep) in one process: sha256 of every shard plus parsing
  every tar header and checking every sample's members against samples.parquet;
- the same on a Dask LocalCluster of 1 and 2 workers (scaling with workers);
- `verify --deep` (decode every member, recompute every composite) on 1 and 2 workers.

Prints one JSON object. Targets (issue 4): checksum pass within 1.5x of sha256sum's time on one
core, and linear in workers.

    python benchmarks/verify.py [--samples 240] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compose import cpu_model, make_inputs  # noqa: E402 - sibling benchmark script

from configs import load_config  # noqa: E402
from pipeline.build import build  # noqa: E402
from shards.cluster import ClusterOptions, dask_client, map_bounded  # noqa: E402
from shards.verify import verify  # noqa: E402


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def on_cluster(root: Path, deep: bool, workers: int) -> tuple[float, object]:
    """verify on a LocalCluster; the cluster's start-up is not timed."""
    with dask_client(ClusterOptions(workers=workers)) as client:
        client.run(lambda: None)  # workers up

        def run(fn, items):
            return map_bounded(client, fn, items, name="verify")

        return timed(lambda: verify(root, deep, run=run))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=240, help="train samples to build")
    parser.add_argument("--foregrounds", type=int, default=6)
    parser.add_argument("--keep", type=Path, help="build here and keep it (default: a temp dir)")
    args = parser.parse_args(argv)

    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-verify-"))
    try:
        per_fg = max(1, args.samples // (args.foregrounds - 1))
        log(f"making inputs and building ~{per_fg * (args.foregrounds - 1)} samples in {root}")
        data_dir, bg_dir = make_inputs(
            root / "inputs", args.foregrounds, per_fg * args.foregrounds + 8, 0
        )
        cfg = load_config(overrides=[f"data.bgs_per_train_fg={per_fg}", "data.bgs_per_val_fg=4",
                                     "data.samples_per_shard=16"])  # fmt: skip
        out = root / "shards"
        summary = build(data_dir, bg_dir, cfg, out, ClusterOptions(workers=2), overwrite=True)
        assert summary.complete
        tars = sorted(str(p) for p in out.rglob("*.tar"))
        total = sum(os.path.getsize(t) for t in tars)
        for tar in tars:  # warm the page cache: measure hashing and parsing, not the disk
            Path(tar).read_bytes()

        log("sha256sum")
        sha256sum = ["sha256sum", *tars]
        sha_s = min(
            timed(lambda: subprocess.run(sha256sum, check=True, capture_output=True))[0]
            for _ in range(3)
        )
        log("verify (checksum pass), one process")
        ours_s, report = min((timed(lambda: verify(out)) for _ in range(3)), key=lambda r: r[0])
        assert report.ok, report.problems
        log("verify on 1 and 2 Dask workers")
        dask1_s, _ = on_cluster(out, False, 1)
        dask2_s, _ = on_cluster(out, False, 2)
        log("verify --deep on 1 and 2 Dask workers")
        deep1_s, deep = on_cluster(out, True, 1)
        deep2_s, _ = on_cluster(out, True, 2)
        assert deep.ok, deep.problems
        gb = total / 1e9
        result = {
            "machine": {"cpus": os.cpu_count(), "cpu": cpu_model()},
            "set": {
                "shards": len(tars),
                "samples": report.samples,
                "gb": round(gb, 3),
                "mb_per_sample": round(total / report.samples / 1e6, 2),
            },  # fmt: skip
            "sha256sum_gb_per_s": round(gb / sha_s, 3),
            "checksum_pass_gb_per_s_one_process": round(gb / ours_s, 3),
            "checksum_pass_time_vs_sha256sum": round(ours_s / sha_s, 3),
            "checksum_pass_gb_per_s_dask": {
                "1": round(gb / dask1_s, 3),
                "2": round(gb / dask2_s, 3),
            },
            "checksum_pass_scaling_2_vs_1": round(dask1_s / dask2_s, 3),
            "deep_samples_per_s": {
                "1": round(report.samples / deep1_s, 2),
                "2": round(report.samples / deep2_s, 2),
            },  # fmt: skip
            "deep_samples_per_s_per_worker": round(report.samples / deep1_s, 2),
            "deep_scaling_2_vs_1": round(deep1_s / deep2_s, 3),
            "targets": {"checksum_within_1.5x_sha256sum": ours_s / sha_s <= 1.5},
        }
        print(json.dumps(result, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
