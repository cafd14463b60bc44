"""Resume latency: time to the first batch when a run resumes at 0%, 50% and 90% of an epoch.

Builds a set of about 2,000 train samples from the sample-data generator (small images, so
the build is quick; the timing is about reading, not decoding), then for each resume point
makes the epoch's ``MattingStream`` at that step and times its first global batch, in the
training process (no loader workers), from local files and over HTTP (a Range-capable server
on 127.0.0.1). Issue 12's target: resuming at 90% takes no longer than at 0%.

Prints one JSON object.

    python benchmarks/resume.py [--foregrounds 21 --per-fg 100]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from http_server import serve_directory  # noqa: E402 - sibling module: a Range-capable server
from machine import cpu_model  # noqa: E402

from configs import load_config  # noqa: E402
from pipeline.build import build  # noqa: E402
from pipeline.sample_data import make_sample_data  # noqa: E402
from shards.cluster import ClusterOptions  # noqa: E402
from shards.reader import resolve_shards  # noqa: E402
from training.data.batching import batches, make_loader  # noqa: E402
from training.data.stream import MattingStream  # noqa: E402


def first_batch_seconds(shards, cfg, start: int, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        began = time.perf_counter()
        stream = MattingStream(shards, cfg, start_step=start)
        next(batches(iter(make_loader(stream, 0)), cfg.train.batch_size))
        best = min(best, time.perf_counter() - began)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--foregrounds", type=int, default=21)
    parser.add_argument("--per-fg", type=int, default=100, help="backgrounds per foreground")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench-resume-"))
    try:
        data = make_sample_data(
            root / "in", foregrounds=args.foregrounds,
            backgrounds=args.per_fg * args.foregrounds + 40, seed=0,
        )  # fmt: skip
        cfg = load_config(
            overrides=[
                f"data.bgs_per_train_fg={args.per_fg}", "data.bgs_per_val_fg=2",
                "data.samples_per_shard=64",
            ]
        )  # fmt: skip
        out = root / "shards"
        assert build(data.data_dir, data.bg_dir, cfg, out, ClusterOptions(workers=2)).complete
        t = load_config(overrides=["augment.input_size=64", "augment.crop_sizes=[64]"])
        result = {"machine": {"cpus": os.cpu_count(), "cpu": cpu_model()}}
        with serve_directory(out.parent) as base:
            for name, spec in (("file", str(out)), ("http", base + "shards/")):
                shards = resolve_shards(spec)
                steps = MattingStream(shards, t).steps
                result["samples"], result["steps_per_epoch"] = shards.total, steps
                result[name] = {
                    f"resume_at_{pct}pct_s": round(
                        first_batch_seconds(shards, t, steps * pct // 100, args.repeats), 4
                    )
                    for pct in (0, 50, 90)
                }
        result["global_batch"] = t.train.batch_size
        print(json.dumps(result, indent=1))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
