"""Training reads from object storage: one loader process against a local S3-compatible server
(moto, benchmarks/s3_server.py, in its own process on 127.0.0.1) and against a local folder.

Builds a set of AIM-500-sized samples (benchmarks/compose.py's generator), uploads it to the
server, then, in the training process (no loader workers: the figure is per loader process),
for each source -- the local folder, ``s3://`` with no cache, ``s3://`` through ``--cache-dir``
cold (the first epoch downloads each shard whole) and warm (the second epoch) -- times one
epoch's global batches and counts the requests and bytes the server sends. Then the time to the
first batch when a run resumes at 0% and 90% of an epoch, from the folder and from the store.

Loopback has no network latency: a real store adds tens of milliseconds per request, which is
why reads are runs of samples (see requests per sample) and why the cache matters more there.
The first batch of an epoch fills every canonical stream's shuffle window
(``loader.shuffle_window`` samples each), from a folder as from the store: its bytes are the
window's, not the reader's.

Prints one JSON object.

    python benchmarks/store.py [--foregrounds 6 --bgs-per-fg 32]     # about 5 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compose import make_inputs  # noqa: E402 - sibling benchmark script: AIM-500-sized inputs
from machine import cpu_model  # noqa: E402
from resume import first_batch_seconds  # noqa: E402 - sibling benchmark: the same timing
from s3_server import S3Server  # noqa: E402

from configs import load_config  # noqa: E402
from pipeline.build import build  # noqa: E402
from shards import store  # noqa: E402
from shards.cache import ShardCache  # noqa: E402
from shards.cluster import ClusterOptions  # noqa: E402
from shards.reader import resolve_shards, shard_samples  # noqa: E402
from training.data.batching import batches, make_loader  # noqa: E402
from training.data.stream import MattingStream  # noqa: E402

MB = 1e6


def epoch(shards, cfg, layout) -> tuple[float, int]:
    """Seconds for one epoch's global batches in this process, and the samples they hold."""
    began = time.perf_counter()
    stream = MattingStream(shards, cfg, layout=layout)
    loader = make_loader(stream, 0)
    samples = sum(len(b.keys) for b in batches(iter(loader), cfg.train.batch_size))
    return time.perf_counter() - began, samples


def served(server: S3Server) -> dict:
    """Requests and bytes the server sent since the last call (the log is reset)."""
    log = server.requests(reset=True)
    gets = [r for r in log if r["method"] == "GET"]
    return {"requests": len(log), "gets": len(gets), "bytes": sum(r["sent"] for r in gets)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--foregrounds", type=int, default=6)
    parser.add_argument("--bgs-per-fg", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench-store-"))
    server = S3Server(root / "s3-state.pkl")
    try:
        data_dir, bg_dir = make_inputs(
            root / "in", args.foregrounds, args.foregrounds * args.bgs_per_fg + 16, seed=0
        )
        cfg = load_config(overrides=[
            f"data.bgs_per_train_fg={args.bgs_per_fg}", "data.bgs_per_val_fg=2",
            "data.samples_per_shard=16", f"data.validation_ids=[{'bench000'}]",
        ])  # fmt: skip
        out = root / "shards"
        assert build(data_dir, bg_dir, cfg, out, ClusterOptions(workers=2)).complete
        server.start()
        os.environ.update(server.env())
        store.filesystem("s3://bench")[0].mkdir("bench")
        store.upload_folder(out, "s3://bench/set")
        t = load_config(overrides=["train.batch_size=8"])
        cache_dir = root / "cache"
        sources = {
            "folder": lambda: resolve_shards(str(out)),
            "s3": lambda: resolve_shards("s3://bench/set"),
            "s3_cache_cold": lambda: resolve_shards(
                "s3://bench/set", cache=ShardCache.of(cache_dir)
            ),
            "s3_cache_warm": lambda: resolve_shards(
                "s3://bench/set", cache=ShardCache.of(cache_dir)
            ),
        }
        result: dict = {"machine": {"cpus": os.cpu_count(), "cpu": cpu_model()}}
        for name, make in sources.items():
            server.requests(reset=True)
            shards = make()
            layout = shard_samples(shards)  # read once per run, as the trainer does
            opened = served(server)  # index.json and samples.parquet
            seconds, samples = epoch(shards, t, layout)
            spans = sum(s.bytes for s in shards.index.split("train"))
            sent = served(server)
            result[name] = {
                "samples_per_s": round(samples / seconds, 2),
                "epoch_s": round(seconds, 3),
                "shard_MB_per_s": round(spans / MB / seconds, 2),
                "requests_per_sample": round(sent["requests"] / samples, 3),
                "MB_from_store_per_sample": round(sent["bytes"] / MB / samples, 3),
                "requests_to_open_the_set": opened["requests"],
            }
            result["samples"], result["train_MB"] = samples, round(spans / MB, 1)
        for name, spec in (("folder", str(out)), ("s3", "s3://bench/set")):
            shards = resolve_shards(spec)
            steps = MattingStream(shards, t).steps
            for pct in (0, 90):
                server.requests(reset=True)
                s = first_batch_seconds(shards, t, steps * pct // 100, args.repeats)
                result[name][f"first_batch_at_{pct}pct_s"] = round(s, 4)
                if name == "s3":
                    got = served(server)
                    result[name][f"first_batch_at_{pct}pct_MB"] = round(
                        got["bytes"] / MB / args.repeats, 3
                    )
        result["global_batch"] = t.train.batch_size
        print(json.dumps(result, indent=1))
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
