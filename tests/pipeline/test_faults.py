"""Faults with real processes: a Dask worker killed by PID in the middle of a build."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from shards.index import read_index, read_samples
from shards.verify import verify


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _worker_pids(client_pid: int) -> list[int]:
    """Dask worker processes of a LocalCluster: the children of the build's process that run a
    worker (spawned by the in-process nannies)."""
    pids = []
    for child in psutil.Process(client_pid).children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "multiprocessing" in cmdline and "resource_tracker" not in cmdline:
            pids.append(child.pid)
    return pids


@pytest.mark.slow  # a real process killed and brought back: the longest of its file
def test_worker_killed_mid_build_costs_nothing(sample_data, tmp_path):
    out = tmp_path / "shards"
    cmd = [sys.executable, "-m", "pipeline", "build", "--data-dir", str(sample_data.data_dir),
           "--bg-dir", str(sample_data.bg_dir), "--out", str(out), "--workers", "2",
           "--bgs-per-train-fg", "40", "--bgs-per-val-fg", "10", "--allow-bg-reuse",
           "--samples-per-shard", "2"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    try:
        records = out / ".records"
        _wait_for(lambda: records.is_dir() and any(records.glob("*.json")), 120, "a first shard")
        workers = _worker_pids(proc.pid)
        assert len(workers) >= 2, workers
        os.kill(workers[0], signal.SIGKILL)  # the worker process itself, by PID
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, output.decode()
    assert len(list(records.glob("*.json"))) == len(read_index(out).shards)
    report = verify(out, deep=True)
    assert report.ok, report.problems
    keys = read_samples(out).column("key").to_pylist()
    assert len(keys) == len(set(keys)) == 5 * 40 + 1 * 10
    assert report.samples == len(keys)
    assert not list(Path(out).rglob("*.tmp"))
