"""Shared fixtures: tiny deterministic data sets made on the fly (nothing is downloaded)."""

from __future__ import annotations

import functools
import os
import re
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.sample_data import SampleDataSummary, make_sample_data

REPO = Path(__file__).resolve().parent.parent  # the repository's root
GOLDEN = REPO / "tests" / "golden"  # stored golden values and the scripts that make them


def version_2_config(values: dict) -> dict:
    """A config dict (``Config.to_dict()``) as version 2 recorded the same config: the sections
    data, train, loss and model (flat), every key by its old name (``configs.RENAMED``)."""
    from configs import RENAMED
    from configs.schema import flatten

    old_name = {new: old for old, new in RENAMED.items()}
    nested: dict = {}
    for key, value in flatten(values).items():
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


@contextmanager
def serve_directory(
    root: Path,
    ranges: bool = True,
    served: list | None = None,
    fault: Callable[[str], str | None] | None = None,
) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving ``root``; yields its base URL (with a slash).

    Args:
        ranges: answer ``Range: bytes=a-b`` requests with 206 and those bytes, as real file
            servers and object stores do (False: the whole file, as Python's plain server).
        served: if given, gets ``(path, first byte, bytes sent)`` for every file sent.
        fault: called with each request's path: ``"drop"`` sends the headers and half the
            body, then closes the connection; ``"error"`` answers 503; None serves.
    """
    handler = functools.partial(
        _RangeHandler if ranges else _QuietHandler,
        directory=str(root),
        served=served,
        fault=fault,
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def __init__(self, *args, served: list | None = None, fault=None, **kwargs) -> None:
        self.served, self.fault = served, fault
        super().__init__(*args, **kwargs)

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass

    def do_GET(self):
        fault = self.fault(self.path) if self.fault is not None else None
        if fault == "error":
            self.send_error(503, "Service Unavailable")
            return
        source = self.send_head()
        if source is None:
            return
        try:
            if fault == "drop":  # half the body, then the connection goes
                left = getattr(source, "left", None)
                if left is None:
                    left = os.fstat(source.fileno()).st_size
                self.wfile.write(source.read(left // 2))
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
            else:
                self.copyfile(source, self.wfile)
        finally:
            source.close()

    def send_head(self):
        source = super().send_head()
        if source is not None and self.served is not None:
            self._served(0, os.fstat(source.fileno()).st_size)
        return source

    def _served(self, first: int, size: int) -> None:
        # recorded as the response starts (the client may be done before the copy ends)
        if self.served is not None:
            self.served.append((self.path, first, size))


class _RangeHandler(_QuietHandler):
    """Python's file server plus single ``bytes=first-[last]`` ranges."""

    def send_head(self):
        spec = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", spec or "")
        if not match or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        first = int(match[1])
        last = min(int(match[2]) if match[2] else size - 1, size - 1)
        if first > last:
            self.send_error(416, "Requested Range Not Satisfiable")
            return None
        source = open(path, "rb")  # noqa: SIM115 - closed by do_GET after copyfile
        source.seek(first)
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.send_header("Content-Length", str(last - first + 1))
        self.end_headers()
        self._served(first, last - first + 1)
        return _Limited(source, last - first + 1)


class _Limited:
    """A file whose reads stop after ``left`` bytes (what copyfile sends of a range)."""

    def __init__(self, file, left: int) -> None:
        self.file, self.left = file, left

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        data = self.file.read(size)
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.file.close()
