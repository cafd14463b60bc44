"""A real HTTP file server on 127.0.0.1 that answers Range requests, as file servers and object
stores do: what the HTTP shard tests and benchmarks/resume.py stream shards from.

Python's plain ``SimpleHTTPRequestHandler`` ignores ``Range`` (it sends the whole file); this
one answers ``bytes=a-b`` with 206 and those bytes, records what it sent, and can inject the
faults a network has (a dropped connection mid-body, a 503).
"""

from __future__ import annotations

import functools
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


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
