"""Shared fixtures: tiny deterministic data sets made on the fly (nothing is downloaded)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from pipeline.sample_data import SampleDataSummary, make_sample_data

REPO = Path(__file__).resolve().parent.parent  # the repository's root
GOLDEN = REPO / "tests" / "golden"  # stored golden values and the scripts that make them


def load_golden(name: str):
    """The golden script ``tests/golden/<name>.py`` as a module (its cases and readers)."""
    spec = importlib.util.spec_from_file_location(name, GOLDEN / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def version_2_config(values: dict) -> dict:
    """A config dict (``Config.to_dict()``) as version 2 recorded the same config: the sections
    data, train, loss and model (flat), every key by its old name (``configs.RENAMED``); the
    ``storage`` section, which came later, left out."""
    from configs import RENAMED
    from configs.schema import flatten

    old_name = {new: old for old, new in RENAMED.items()}
    nested: dict = {}
    for key, value in flatten(values).items():
        if key.startswith("storage."):
            continue
        section, name = old_name.get(key, key).split(".")  # every old key was section.key
        nested.setdefault(section, {})[name] = value
    return nested


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory: pytest.TempPathFactory) -> SampleDataSummary:
    """Six foregrounds and 48 backgrounds from the sample-data generator (read-only: copy first)."""
    return make_sample_data(
        tmp_path_factory.mktemp("sample"), foregrounds=6, backgrounds=48, seed=0
    )


@pytest.fixture
def yaml_file(tmp_path: Path):
    """Write a YAML text to a file in tmp_path and return its path."""

    def write(text: str, name: str = "user.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def sample_copy(sample_data: SampleDataSummary, tmp_path: Path) -> tuple[Path, Path]:
    """A private, writable copy of the sample data: ``(data_dir, bg_dir)`` under tmp_path."""
    data_dir = shutil.copytree(sample_data.data_dir, tmp_path / "in" / "AIM-500")
    bg_dir = shutil.copytree(sample_data.bg_dir, tmp_path / "in" / "backgrounds")
    return Path(data_dir), Path(bg_dir)


@pytest.fixture(scope="session")
def shard_set(sample_data: SampleDataSummary, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished shard set of the sample data (read-only: copy it to damage it).

    5 train foregrounds x 6 + 1 validation x 4 backgrounds, 8 samples per shard: train shards
    of 8, 8, 8 and 6 samples (deliberately uneven) and one validation shard of 4.
    """
    from configs import load_config
    from pipeline.build import build
    from shards.cluster import ClusterOptions

    out = tmp_path_factory.mktemp("shard-set") / "shards"
    cfg = load_config(
        overrides=["data.bgs_per_train_fg=6", "data.bgs_per_val_fg=4", "data.samples_per_shard=8"]
    )
    summary = build(sample_data.data_dir, sample_data.bg_dir, cfg, out, ClusterOptions(workers=1))
    assert summary.complete
    return out


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A real S3-compatible server (moto) on 127.0.0.1 with a bucket ``test``, for this test;
    this process's clients reach it through the environment (``S3Server.env``), as a user's
    would. Yields the ``benchmarks.s3_server.S3Server`` (``stop``/``start``, ``requests``,
    ``fault``)."""
    pytest.importorskip("s3fs")
    import fsspec

    from benchmarks.s3_server import S3Server

    server = S3Server(tmp_path / "s3-state.pkl").start()
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    fsspec.filesystem("s3").clear_instance_cache()  # no client of an earlier server's endpoint
    fsspec.filesystem("s3", skip_instance_cache=True).mkdir("test")
    try:
        yield server
    finally:
        server.stop()
        fsspec.filesystem("s3").clear_instance_cache()
