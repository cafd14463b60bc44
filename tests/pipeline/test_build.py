"""``pipeline build`` end to end on real components: a Dask cluster, subprocesses, WebDataset.

One small shard set (the sample data, 6 train x 6 + 1 validation x 4 backgrounds, 8 samples per
shard) is built once per module and shared by the read-only tests; tests that change inputs or
outputs work on copies.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from typer.testing import CliRunner

from configs import load_config
from indexnet_cli import app
from pipeline.build import PLAN_NAME, BuildSummary, build, prepare
from pipeline.compose import RECORDS_DIR, build_shard, record_path
from pipeline.plan import shard_tasks
from shards.cluster import ClusterOptions
from shards.codec import decode_color, decode_grey
from shards.index import INDEX_NAME, read_index, read_samples
from shards.mattes import BackgroundFit, apply_fit, blend, trimap_from_alpha
from shards.schema import MEMBERS
from shards.verify import verify

runner = CliRunner()
BIN = Path(sys.executable).parent
INDEXNET = str(BIN / "indexnet") if (BIN / "indexnet").exists() else shutil.which("indexnet")
DASK = str(BIN / "dask") if (BIN / "dask").exists() else shutil.which("dask")
SMALL = {"bgs_per_train_fg": 6, "bgs_per_val_fg": 4, "samples_per_shard": 8}
META_KEYS = {"__key__", "__url__", "__local_path__"}


def _cfg(**data):
    values = {**SMALL, **data}
    return load_config(None, [f"data.{k}={v}" for k, v in values.items()])


def _cli_args(data_dir: Path, bg_dir: Path, out: Path, **data) -> list[str]:
    values = {**SMALL, **data}
    args = ["--data-dir", str(data_dir), "--bg-dir", str(bg_dir), "--out", str(out)]
    for key, value in values.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def _invoke(*args: str):
    return runner.invoke(app, ["pipeline", "build", *args])


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tar_hashes(out: Path) -> dict[str, str]:
    """sha256 of every finished tar of a set, by path relative to the set."""
    return {str(p.relative_to(out)): _sha(p.read_bytes()) for p in sorted(out.glob("*/*.tar"))}


def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """(sha256, mtime_ns) of every file under ``root``."""
    return {
        str(p.relative_to(root)): (_sha(p.read_bytes()), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _read_set(out: Path) -> list[dict]:
    """Every sample of a finished set, read with plain WebDataset in index order."""
    urls = [str(out / s.path) for s in read_index(out).shards]
    return list(wds.WebDataset(urls, shardshuffle=False))


def _members(sample: dict) -> set[str]:
    return set(sample) - META_KEYS


def _reused(output: str) -> int:
    """The '(N already finished)' count of the CLI's summary line."""
    match = re.search(r"\((\d+) already finished\)", output)
    assert match, output
    return int(match.group(1))


def _check_merged(sample: dict) -> None:
    meta = json.loads(sample["json"])
    bg_member = next(m for m in _members(sample) if m.startswith("bg."))
    fg_member = next(m for m in _members(sample) if m.startswith("fg."))
    fitted = apply_fit(decode_color(sample[bg_member]), BackgroundFit.from_json(meta["bg_fit"]))
    expected = blend(decode_color(sample[fg_member]), fitted, decode_grey(sample["alpha.png"]))
    assert np.array_equal(decode_color(sample["merged.png"]), expected), sample["__key__"]


@pytest.fixture(scope="module")
def base(sample_data, tmp_path_factory) -> BuildSummary:
    """The shared shard set (read-only: copy it before changing anything)."""
    out = tmp_path_factory.mktemp("base") / "shards"
    summary = build(
        sample_data.data_dir, sample_data.bg_dir, _cfg(), out, ClusterOptions(workers=1)
    )
    assert summary.complete and summary.written == summary.planned == 34
    return summary


# --- 1. round trip --------------------------------------------------------------------------


def test_round_trip_every_planned_sample_reads_back_exactly(base, sample_data):
    out = base.out
    _, plan = prepare(sample_data.data_dir, sample_data.bg_dir, _cfg())
    samples = _read_set(out)
    keys = [s["__key__"] for s in samples]
    assert keys == [p.key for p in plan.samples]  # all of them, in plan order
    assert len(set(keys)) == len(keys) and not any("." in k for k in keys)

    index = read_index(out)
    rows = {r["key"]: r for r in read_samples(out).to_pylist()}
    assert set(rows) == set(keys)
    assert index.samples() == len(samples) == index.meta["counts"]["written"] == 34
    for split in ("train", "validation"):
        in_split = [s for s in samples if json.loads(s["json"])["split"] == split]
        assert index.samples(split) == len(in_split) == index.meta["counts"][split]
    for shard in index.shards:
        path = out / shard.path
        assert shard.samples == sum(s["__url__"] == str(path) for s in samples)
        assert shard.bytes == path.stat().st_size and shard.sha256 == _sha(path.read_bytes())

    radius = index.meta["config"]["data"]["train_trimap_radius"]
    for sample in samples:
        meta = json.loads(sample["json"])
        row = rows[sample["__key__"]]
        assert _members(sample) == {
            "merged.png", "alpha.png", "fg.jpg", "bg.jpg", "trimap.png", "json",
        }  # fmt: skip
        assert row["status"] == "ok" and row["error"] == ""
        assert row["shard"] == str(Path(sample["__url__"]).relative_to(out))
        assert sorted(row["members"]) == sorted(_members(sample))
        for member in _members(sample):
            role = member.split(".")[0]
            assert row[f"{role}_sha256"] == _sha(sample[member]), (sample["__key__"], member)
            assert row[f"{role}_size"] == len(sample[member])
        assert {f"{m.name}_sha256" for m in MEMBERS} <= set(row)

        _check_merged(sample)
        original = sample_data.data_dir / "original" / meta["foreground"]
        assert sample["fg.jpg"] == original.read_bytes()
        assert sample["bg.jpg"] == (sample_data.bg_dir / meta["background"]).read_bytes()
        alpha = decode_grey(sample["alpha.png"])
        mask = sample_data.data_dir / "mask" / (original.stem + ".png")
        assert np.array_equal(alpha, decode_grey(mask.read_bytes()))
        trimap = decode_grey(sample["trimap.png"])
        if meta["split"] == "validation":
            aim = sample_data.data_dir / "trimap" / (original.stem + ".png")
            assert np.array_equal(trimap, decode_grey(aim.read_bytes()))
            assert meta["trimap"]["source"] == "aim500"
        else:
            assert set(np.unique(trimap).tolist()) <= {0, 128, 255}
            assert np.array_equal(trimap, trimap_from_alpha(alpha, radius))
        assert "planned_background" not in meta


# --- 2. layout and split --------------------------------------------------------------------


def test_layout_and_seeded_split(base, sample_data):
    out = base.out
    assert (out / "train" / "train-000000.tar").is_file()
    assert (out / "validation" / "validation-000000.tar").is_file()
    assert (out / INDEX_NAME).is_file() and (out / PLAN_NAME).is_file()
    index = read_index(out)
    assert [s.path for s in index.shards] == sorted(_tar_hashes(out), key=lambda p: p[0] == "v")
    listed = set(load_config().data.validation_ids)
    assert listed and not listed & set(sample_data.foreground_ids)
    split = index.meta["split"]
    assert split["rule"] == "seeded" and split["listed_missing"] == []
    assert len(split["validation"]) == 1
    assert sorted(split["train"] + split["validation"]) == sorted(sample_data.foreground_ids)
    assert not list(out.rglob("*.tmp"))

    rows = read_samples(out).to_pylist()
    train_bgs = [r["background"] for r in rows if r["split"] == "train"]
    val_bgs = [r["background"] for r in rows if r["split"] == "validation"]
    assert len(set(train_bgs)) == len(train_bgs) == 30  # each used once
    assert len(set(val_bgs)) == len(val_bgs) == 4
    assert not set(train_bgs) & set(val_bgs)
    assert index.meta["composition"]["bg_reuse"] is False


def test_reference_list_split_from_set_override(sample_data, tmp_path):
    ids = sorted(sample_data.foreground_ids)
    chosen = [ids[1], ids[4]]
    out = tmp_path / "out"
    listed = f"data.validation_ids=['{chosen[0]}','{chosen[1]}','ffffffff']"
    result = _invoke(*_cli_args(sample_data.data_dir, sample_data.bg_dir, out), "--set", listed)
    assert result.exit_code == 0, result.output
    split = read_index(out).meta["split"]
    assert split["rule"] == "reference-list"
    assert split["validation"] == chosen and split["listed_missing"] == ["ffffffff"]
    assert split["train"] == [i for i in ids if i not in chosen]
    for sample in _read_set(out):
        meta = json.loads(sample["json"])
        assert (meta["split"] == "validation") == (meta["foreground"][2:-4] in chosen)
    rows = read_samples(out).to_pylist()
    assert sum(r["split"] == "validation" for r in rows) == 2 * 4


def test_reference_list_split_from_config_file(sample_data, yaml_file):
    fid = sorted(sample_data.foreground_ids)[2]
    cfg_path = yaml_file(f"data:\n  validation_ids: ['{fid}']\n  bgs_per_train_fg: 6\n")
    cfg = load_config(cfg_path, ["data.bgs_per_val_fg=4"])
    _, plan = prepare(sample_data.data_dir, sample_data.bg_dir, cfg)
    assert plan.split.rule == "reference-list" and plan.split.validation == (fid,)
    assert {s.fg_id for s in plan.samples if s.split == "validation"} == {fid}


def test_bg_reuse_keeps_splits_disjoint_and_uses_every_background(sample_copy):
    data_dir, bg_dir = sample_copy
    for extra in sorted(bg_dir.iterdir())[12:]:
        extra.unlink()
    _, plan = prepare(data_dir, bg_dir, _cfg(), allow_bg_reuse=True)
    assert plan.bg_reuse and all(not spares for spares in plan.spares.values())
    train = [s.background for s in plan.samples if s.split == "train"]
    val = [s.background for s in plan.samples if s.split == "validation"]
    assert not set(train) & set(val)
    assert set(train) | set(val) == {p.name for p in bg_dir.iterdir()}
    for used in (train, val):  # cycled evenly through the split's pool
        counts = [used.count(b) for b in set(used)]
        assert max(counts) - min(counts) <= 1


# --- 3. determinism -------------------------------------------------------------------------


def test_two_workers_give_identical_bytes_and_seed_changes_pairing(base, sample_data, tmp_path):
    out = tmp_path / "two"
    summary = build(
        sample_data.data_dir, sample_data.bg_dir, _cfg(), out, ClusterOptions(workers=2)
    )
    assert summary.complete and summary.reused == 0
    assert _tar_hashes(out) == _tar_hashes(base.out) and len(_tar_hashes(out)) == 5
    assert read_samples(out).equals(read_samples(base.out))
    assert read_index(out).shards == read_index(base.out).shards

    _, plan0 = prepare(sample_data.data_dir, sample_data.bg_dir, _cfg())
    _, again = prepare(sample_data.data_dir, sample_data.bg_dir, _cfg())
    _, plan1 = prepare(sample_data.data_dir, sample_data.bg_dir, _cfg(seed=1))
    assert again == plan0

    def pairing(plan):
        return {s.key: s.background for s in plan.samples}

    assert pairing(plan1) != pairing(plan0)


# --- 4. resume after SIGKILL ----------------------------------------------------------------


def _group_alive(pgid: int) -> bool:
    """Whether any non-zombie process of process group ``pgid`` is left."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _kill_group(pgid: int, timeout: float = 20) -> None:
    """SIGKILL a whole process group (orphaned Dask workers included) and wait until gone."""
    deadline = time.monotonic() + timeout
    while _group_alive(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"process group {pgid} survived SIGKILL")
        time.sleep(0.05)


def _start_and_kill(cmd: list[str], out: Path, timeout: float = 120) -> bool:
    """Run ``cmd``; SIGKILL it once a shard record exists and the index does not.

    Returns False when the build finished before it could be interrupted.
    """
    records, index = out / RECORDS_DIR, out / INDEX_NAME
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if records.is_dir() and any(records.glob("*.json")) and not index.exists():
                os.kill(proc.pid, signal.SIGKILL)
                break
            assert time.monotonic() < deadline, "the build never wrote a shard record"
            time.sleep(0.002)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _kill_group(proc.pid)
    return proc.returncode == -signal.SIGKILL and not index.exists()


@pytest.mark.slow  # a real process killed and brought back: the longest of its file
def test_resume_after_sigkill_is_byte_identical(sample_data, tmp_path):
    cfg = _cfg(samples_per_shard=2)
    clean = tmp_path / "clean"
    reference = build(sample_data.data_dir, sample_data.bg_dir, cfg, clean, ClusterOptions(1))
    assert reference.complete and reference.shards == 17

    for attempt in range(3):  # the kill must land mid-build; a too-fast build is retried
        out = tmp_path / f"killed{attempt}"
        cmd = [INDEXNET, "pipeline", "build", "--workers", "1"]
        cmd += _cli_args(sample_data.data_dir, sample_data.bg_dir, out, samples_per_shard=2)
        if _start_and_kill(cmd, out):
            break
    else:
        pytest.fail("the build finished before it could be killed, three times")

    assert not (out / INDEX_NAME).exists() and (out / PLAN_NAME).is_file()
    records = sorted(p.stem for p in (out / RECORDS_DIR).glob("*.json"))
    tars = sorted(out.glob("*/*.tar"))
    assert records and len(tars) < reference.shards
    assert set(records) <= {p.stem for p in tars}  # a record is written after its tar
    for path in tars:  # every tar present is complete: readable to its end
        with tarfile.open(path) as tar:
            members = tar.getmembers()
            assert members and len(members) % len(MEMBERS) == 0, path
            for member in members:
                assert len(tar.extractfile(member).read()) == member.size
    for path in out.rglob("*"):  # anything else is a temp file (or a finished record/plan)
        if path.is_file() and path.suffix not in (".tar", ".json", ".parquet"):
            assert path.name.endswith(".tmp"), path

    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert _reused(resumed.stdout) == len(records)
    assert _tar_hashes(out) == _tar_hashes(clean) and len(_tar_hashes(out)) == 17
    assert read_samples(out).equals(read_samples(clean))
    assert read_index(out).shards == read_index(clean).shards
    assert not list(out.rglob("*.tmp"))
    report = verify(out, deep=True)
    assert report.ok, report.problems

    before = _snapshot(clean / "train")
    again = build(sample_data.data_dir, sample_data.bg_dir, cfg, clean, ClusterOptions(1))
    assert again.complete and again.reused == again.shards == 17
    assert _snapshot(clean / "train") == before  # nothing rewritten


# --- 5. corrupt backgrounds ------------------------------------------------------------------


def _truncate(path: Path, keep: int = 200) -> None:
    path.write_bytes(path.read_bytes()[:keep])  # the JPEG magic stays: the header sniff passes


def test_corrupt_background_is_replaced_from_spares(sample_copy, tmp_path):
    data_dir, bg_dir = sample_copy
    _, plan = prepare(data_dir, bg_dir, _cfg())
    victim = plan.samples[3]
    spare = plan.spares[victim.shard][0]
    assert sum(s.background == victim.background for s in plan.samples) == 1
    _truncate(bg_dir / victim.background)

    out = tmp_path / "out"
    result = _invoke(*_cli_args(data_dir, bg_dir, out), "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "replaced backgrounds: 1, failed: 0" in result.output
    rows = {r["key"]: r for r in read_samples(out).to_pylist()}
    row = rows[victim.key]
    assert row["status"] == "replaced" and victim.background in row["error"]
    assert row["background"] == spare and row["planned_background"] == victim.background
    assert all(r["status"] == "ok" for k, r in rows.items() if k != victim.key)
    counts = read_index(out).meta["counts"]
    assert (counts["written"], counts["replaced"], counts["failed"]) == (34, 1, 0)

    sample = next(s for s in _read_set(out) if s["__key__"] == victim.key)
    meta = json.loads(sample["json"])
    assert meta["planned_background"] == victim.background and meta["background"] == spare
    assert sample["bg.jpg"] == (bg_dir / spare).read_bytes()
    _check_merged(sample)


@pytest.mark.parametrize("mode", ["exactly-enough", "reuse"])
def test_corrupt_background_without_spares_fails_the_sample(sample_copy, tmp_path, mode):
    data_dir, bg_dir = sample_copy
    keep = 34 if mode == "exactly-enough" else 12  # 34 = 5 train x 6 + 1 validation x 4
    for extra in sorted(bg_dir.iterdir())[keep:]:
        extra.unlink()
    reuse = mode == "reuse"
    _, plan = prepare(data_dir, bg_dir, _cfg(), allow_bg_reuse=reuse)
    assert plan.bg_reuse == reuse and all(not s for s in plan.spares.values())
    victim = plan.samples[0].background
    failed = {s.key for s in plan.samples if s.background == victim}
    assert len(failed) == (1 if mode == "exactly-enough" else 3)
    _truncate(bg_dir / victim)

    out = tmp_path / "out"
    args = [*_cli_args(data_dir, bg_dir, out), "--workers", "1"]
    result = _invoke(*args, *(["--allow-bg-reuse"] if reuse else []))
    assert result.exit_code == 3, result.output
    assert f"{len(failed)} sample(s) failed" in result.output
    index = read_index(out)  # still written: the set is finished, with holes
    assert index.meta["counts"]["failed"] == len(failed)
    assert index.meta["counts"]["written"] == index.samples() == 34 - len(failed)
    rows = {r["key"]: r for r in read_samples(out).to_pylist()}
    assert len(rows) == 34
    for key in failed:
        assert rows[key]["status"] == "failed" and victim in rows[key]["error"]
        assert "no spare background left" in rows[key]["error"]
        assert rows[key]["members"] == [] and rows[key]["merged_sha256"] is None
    read = {s["__key__"] for s in _read_set(out)}
    assert read == set(rows) - failed


@pytest.mark.parametrize("which", ["background", "foreground"])
def test_unreadable_file_fails_the_task_instead_of_changing_the_shard(sample_copy, tmp_path, which):
    """Issue 14: a file that cannot be read (here a folder where the file was) is the
    environment's fault, not bad data: no spare may be swapped in and no sample left out, or a
    transient read error would give a shard that another run of the same plan does not."""
    data_dir, bg_dir = sample_copy
    inputs, plan = prepare(data_dir, bg_dir, _cfg())
    task = shard_tasks(plan, inputs, tmp_path / "out")[0]
    if which == "background":
        victim = bg_dir / task.samples[2].background
    else:
        victim = Path(task.foregrounds[task.samples[0].fg_id].original)
    victim.unlink()
    victim.mkdir()  # reading it raises IsADirectoryError, an OSError, as a failing disk would
    with pytest.raises(IsADirectoryError):
        build_shard(task)
    assert not (tmp_path / "out" / task.name).exists()
    assert not record_path(tmp_path / "out", task.name).exists()
    assert list((tmp_path / "out").rglob("*.tmp")) == []


# --- 6. --overwrite and foreign plans ------------------------------------------------------


def test_different_plan_is_refused_and_overwrite_starts_over(base, sample_data, tmp_path):
    out = Path(shutil.copytree(base.out, tmp_path / "out"))
    before = _snapshot(out)
    args = _cli_args(sample_data.data_dir, sample_data.bg_dir, out, seed=1)
    refused = _invoke(*args, "--workers", "1")
    assert refused.exit_code == 2, refused.output
    assert "different plan" in refused.output and "--overwrite" in refused.output
    assert _snapshot(out) == before

    stale = out / "train" / "train-000099.tar"
    stale.write_bytes(b"left over")
    (out / RECORDS_DIR / "train-000099.json").write_text("{}")
    redone = _invoke(*args, "--workers", "1", "--overwrite")
    assert redone.exit_code == 0, redone.output
    assert _reused(redone.output) == 0
    assert not stale.exists() and not (out / RECORDS_DIR / "train-000099.json").exists()
    assert read_index(out).meta["config"]["data"]["seed"] == 1
    hashes = _tar_hashes(out)
    assert set(hashes) == {s.path for s in read_index(out).shards}
    assert hashes != _tar_hashes(base.out)

    same = _invoke(*args, "--workers", "1")  # the same plan again resumes: nothing rebuilt
    assert same.exit_code == 0 and _reused(same.output) == len(hashes)


def test_different_composition_settings_are_refused(base, sample_data, tmp_path):
    out = Path(shutil.copytree(base.out, tmp_path / "out"))
    before = _snapshot(out)
    args = _cli_args(sample_data.data_dir, sample_data.bg_dir, out)
    result = _invoke(*args, "--workers", "1", "--set", "data.rounding=truncate")
    assert result.exit_code == 2, result.output
    assert _snapshot(out) == before


# --- 7. an existing cluster -----------------------------------------------------------------


def _wait_for(predicate, what: str, procs, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        for p in procs:
            assert p.poll() is None, f"{what}: {p.args[:2]} exited with {p.returncode}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """A real ``dask scheduler`` and one ``dask worker``: (scheduler file, address)."""
    here = tmp_path_factory.mktemp("dask")
    sfile = here / "scheduler.json"
    procs: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        log = open(here / f"{args[0]}.log", "wb")  # noqa: SIM115 - closed in the finaliser
        proc = subprocess.Popen(
            [DASK, *args], cwd=here, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        proc.log = log
        procs.append(proc)
        return proc

    def address() -> str | None:
        try:
            return json.loads(sfile.read_text())["address"]
        except (OSError, ValueError, KeyError):
            return None

    try:
        start("scheduler", "--host", "127.0.0.1", "--port", "0", "--scheduler-file", str(sfile),
              "--no-dashboard")  # fmt: skip
        _wait_for(address, "the scheduler file", procs)
        start("worker", "--scheduler-file", str(sfile), "--nthreads", "1", "--nworkers", "1",
              "--no-dashboard")  # fmt: skip
        yield sfile, address()
    finally:
        for proc in reversed(procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
            _kill_group(proc.pid)
            proc.wait()
            proc.log.close()


def test_existing_cluster_builds_identical_bytes(base, sample_data, dask_cluster, tmp_path):
    sfile, address = dask_cluster
    assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", address)
    by_file = tmp_path / "by_file"
    summary = build(
        sample_data.data_dir, sample_data.bg_dir, _cfg(), by_file,
        ClusterOptions(scheduler_file=str(sfile)),
    )  # fmt: skip
    assert summary.complete
    assert _tar_hashes(by_file) == _tar_hashes(base.out)
    assert "existing cluster" in read_index(by_file).meta["build"]["cluster"]

    by_address = tmp_path / "by_address"
    args = _cli_args(sample_data.data_dir, sample_data.bg_dir, by_address)
    result = _invoke(*args, "--scheduler", address)
    assert result.exit_code == 0, result.output
    assert _tar_hashes(by_address) == _tar_hashes(base.out)
    assert read_index(by_address).meta["build"]["cluster"] == f"existing cluster at {address}"

    both = _invoke(*args, "--scheduler", address, "--workers", "1")
    assert both.exit_code == 2 and "give only one of" in both.output


def test_python_dash_m_pipeline_build_help():
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "build", "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Usage: python -m pipeline build" in result.stdout
    for option in ("--scheduler-file", "--allow-bg-reuse", "--overwrite", "--val-count"):
        assert option in result.stdout


def test_samples_parquet_records_where_each_sample_lies_in_its_shard(shard_set):
    """offset/length: samples tile each shard from byte 0, in position order, headers and
    padding included, ending before the tar's end-of-archive blocks."""
    index = read_index(shard_set)
    rows = [r for r in read_samples(shard_set).to_pylist() if r["status"] != "failed"]
    for info in index.shards:
        spans = sorted((r["position"], r["offset"], r["length"]) for r in rows
                       if r["shard"] == info.path)  # fmt: skip
        assert [o for _, o, _ in spans] == [0, *np.cumsum([n for _, _, n in spans])[:-1]]
        end = spans[-1][1] + spans[-1][2]
        assert end + 1024 <= info.bytes and all(n % 512 == 0 for _, _, n in spans)
