"""``pipeline build`` with no shared filesystem: inputs and shards on a real S3-compatible server.

The server is moto's, on 127.0.0.1 (the ``s3`` fixture); the builds are the real CLI, with
``dask worker`` processes in their own working directories where a cluster is the point. Every
store build is compared byte for byte with the local build of the same inputs (``shard_set``,
built with the same small config).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from typer.testing import CliRunner

from benchmarks.s3_server import KEY_ID, SECRET
from indexnet_cli import app
from pipeline.inputs import InputError, scan_inputs
from shards import store
from shards.index import read_index, read_samples

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--bgs-per-train-fg", "6", "--bgs-per-val-fg", "4", "--samples-per-shard", "8"]
runner = CliRunner()


@pytest.fixture
def inputs_on_s3(s3, sample_data) -> tuple[str, str]:
    """The sample data uploaded to ``s3://test/in/``: ``(data_dir, bg_dir)`` URLs."""
    store.upload_folder(sample_data.data_dir, "s3://test/in/AIM-500")
    store.upload_folder(sample_data.bg_dir, "s3://test/in/backgrounds")
    return "s3://test/in/AIM-500", "s3://test/in/backgrounds"


def _env(**extra: str) -> dict[str, str]:
    """A child process's environment: this worktree's code first, the server's variables."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipeline", "build", *SMALL, *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)


def _sha256s(out: str) -> dict[str, str]:
    return {s.path: s.sha256 for s in read_index(out).shards}


def test_inputs_on_a_store_scan_as_in_a_folder_and_problems_name_the_url(inputs_on_s3, sample_data):
    data_dir, bg_dir = inputs_on_s3
    local = scan_inputs(sample_data.data_dir, sample_data.bg_dir)
    remote = scan_inputs(data_dir, bg_dir)
    assert remote.backgrounds == local.backgrounds and remote.conversions == local.conversions
    assert [(f.id, f.height, f.width) for f in remote.foregrounds] == [
        (f.id, f.height, f.width) for f in local.foregrounds]  # fmt: skip
    assert remote.foregrounds[0].original == f"{data_dir}/original/o_{local.foregrounds[0].id}.jpg"
    lonely = f"{data_dir}/mask/o_{local.foregrounds[0].id}.png"
    store.remove(lonely)
    store.write_bytes(f"{bg_dir}/zz.jpg", b"not a jpeg")
    with pytest.raises(InputError) as info:
        scan_inputs(data_dir, bg_dir)
    message = str(info.value)
    assert f"{data_dir}/original/o_{local.foregrounds[0].id}.jpg: no mask" in message
    assert f"{bg_dir}/zz.jpg: not a JPEG or PNG (bad magic bytes)" in message


def test_a_missing_bucket_or_a_refused_out_stops_before_any_work(s3, sample_data):
    base = ["pipeline", "build", "--data-dir", str(sample_data.data_dir), "--bg-dir",
            str(sample_data.bg_dir), *SMALL, "--workers", "1"]  # fmt: skip
    result = runner.invoke(app, [*base, "--out", "s3://no-such-bucket/set"])
    assert result.exit_code == 2, result.output
    assert "s3://no-such-bucket: no such bucket" in result.output
    s3.fault("deny", "/test/set", times=100)
    result = runner.invoke(app, [*base, "--out", "s3://test/set"])
    assert result.exit_code == 2, result.output
    assert "s3://test/set/plan.parquet: access denied" in result.output
    assert SECRET not in result.output and KEY_ID not in result.output
    assert not [r for r in s3.requests() if r["method"] == "PUT" and r["status"] == 200
                and r["path"].startswith("/test/set")]  # fmt: skip
    result = runner.invoke(app, [*base, "--out", "s3://test/set", "--check-determinism"])
    assert result.exit_code == 2 and "needs a local --data-dir, --bg-dir and --out" in result.output


def _start(cmd: list[str], cwd: Path, env: dict[str, str], stack: ExitStack) -> None:
    log = open(cwd / "log.txt", "wb")  # noqa: SIM115 - closed by the stack
    stack.callback(log.close)
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    stack.callback(proc.wait, 30)
    stack.callback(proc.kill)


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.slow  # a scheduler, two workers and the CLI, each its own process
def test_two_dask_workers_build_from_the_store_to_the_store_as_a_local_build(
    inputs_on_s3, shard_set, tmp_path
):
    data_dir, bg_dir = inputs_on_s3
    # no key pair in any process's environment: it reaches the workers as --storage-option
    env = {
        k: v for k, v in _env().items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    }
    scheduler_file = tmp_path / "scheduler.json"
    dask = [sys.executable, "-m", "dask"]
    with ExitStack() as stack:
        (tmp_path / "scheduler").mkdir()
        scheduler = [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", str(scheduler_file)]  # fmt: skip
        _start(scheduler, tmp_path / "scheduler", env, stack)
        _wait_for(scheduler_file.is_file, 60, "the scheduler")
        for name in ("worker-a", "worker-b"):
            (tmp_path / name).mkdir()
            _start([*dask, "worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1",
                    "--nworkers", "1", "--host", "127.0.0.1", "--no-dashboard"],
                   tmp_path / name, env, stack)  # fmt: skip
        from distributed import Client

        with Client(scheduler_file=str(scheduler_file), timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        done = _cli("--data-dir", data_dir, "--bg-dir", bg_dir, "--out", "s3://test/out",
                    "--scheduler-file", str(scheduler_file), "--storage-option", f"key={KEY_ID}",
                    "--storage-option", f"secret={SECRET}", env=env)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert _sha256s("s3://test/out") == _sha256s(str(shard_set))
    for path, sha256 in _sha256s(str(shard_set)).items():  # the objects themselves
        assert store.hash_file(f"s3://test/out/{path}")[1] == sha256
    assert read_samples("s3://test/out").equals(read_samples(shard_set))
    index = store.read_bytes("s3://test/out/index.json").decode()
    assert json.loads(index)["inputs"]["data_dir"] == data_dir
    for name in ("index.json", "plan.parquet", "samples.parquet"):
        text = store.read_bytes(f"s3://test/out/{name}")
        assert SECRET.encode() not in text and KEY_ID.encode() not in text, name


@pytest.mark.slow  # three CLI builds with a worker process each, a server killed and restarted
def test_a_store_that_goes_away_mid_upload_costs_nothing_after_a_restart(
    s3, inputs_on_s3, shard_set
):
    data_dir, bg_dir = inputs_on_s3
    options = ["config_kwargs.retries.max_attempts=2", f"secret={SECRET}", f"key={KEY_ID}"]
    args = ["--data-dir", data_dir, "--bg-dir", bg_dir, "--out", "s3://test/out", "--workers", "1",
            *(arg for option in options for arg in ("--storage-option", option))]  # fmt: skip
    # one worker takes the shards in plan order: two are whole when the third's upload kills it
    s3.fault("die", "PUT /test/out/train/train-000002.tar")
    failed = _cli(*args, env=_env())
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "shard failed: train/train-000002.tar" in failed.stderr
    assert "s3://test/out/" in failed.stderr and "the store failed" in failed.stderr
    assert "index.json not written" in failed.stderr
    assert SECRET not in failed.stdout + failed.stderr  # nor in the workers' task errors
    s3.start()
    assert not store.exists("s3://test/out/index.json")
    finished = set(store.walk_files("s3://test/out/.records"))
    assert {"train-000000.json", "train-000001.json"} <= finished
    s3.requests(reset=True)
    resumed = _cli(*args, env=_env())
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"({len(finished)} already finished)" in resumed.stdout
    puts = {r["path"] for r in s3.requests() if r["method"] == "PUT"}
    assert "/test/out/train/train-000000.tar" not in puts
    assert "/test/out/train/train-000002.tar" in puts
    assert _sha256s("s3://test/out") == _sha256s(str(shard_set))
    assert read_samples("s3://test/out").equals(read_samples(shard_set))


def test_repair_on_a_store_restores_a_flipped_byte_and_a_deleted_object(s3, shard_set, sample_data):
    store.upload_folder(shard_set, "s3://test/set")
    index = read_index(shard_set)
    flipped, deleted = (store.join("s3://test/set", s.path) for s in index.split("train")[:2])
    data = bytearray(store.read_bytes(flipped))
    data[len(data) // 2] ^= 0xFF
    store.write_bytes(flipped, bytes(data))
    store.remove(deleted)
    verify = runner.invoke(app, ["shards", "verify", "s3://test/set", "--workers", "1"])
    assert verify.exit_code == 1
    for url in (flipped, deleted):
        assert url.removeprefix("s3://test/set/") in verify.output, verify.output
    fixed = runner.invoke(app, ["shards", "repair", "s3://test/set", "--data-dir",
                                str(sample_data.data_dir), "--bg-dir", str(sample_data.bg_dir),
                                "--workers", "1"])  # fmt: skip
    assert fixed.exit_code == 0, fixed.output
    for shard in index.split("train")[:2]:
        url = store.join("s3://test/set", shard.path)
        assert store.hash_file(url) == (shard.bytes, shard.sha256)
    assert not [rel for rel in store.walk_files("s3://test/set") if rel.startswith(".repair")]
