"""A real S3-compatible server on 127.0.0.1 (moto's server mode) in its own process, with a
request log and the faults a store has: what the object-storage tests and benchmarks use.

``S3Server`` starts ``python -m benchmarks.s3_server PORT STATE`` (moto's WSGI app behind
werkzeug, wrapped by a small middleware), waits until it answers, and points clients at it
through ``env()`` (``AWS_ENDPOINT_URL`` and a throwaway key pair: the real s3fs/botocore
credential chain, nothing passed by hand). ``stop()`` kills it, as a store that went away;
``start()`` again serves the same objects: moto keeps them in memory, so a restart loses them
unless ``persist`` (the default) -- the middleware snapshots every bucket to ``STATE`` after each
write and loads it at start.

The middleware, controlled through ``/_test/...`` requests:

- counts every request (method, path, ``Range``, bytes sent) -> ``requests()``;
- ``fault(kind, match, times)``: the next ``times`` requests whose ``METHOD /path`` contains
  ``match`` answer ``503 SlowDown`` (``slowdown``), ``403 AccessDenied`` (``deny``), or are cut
  off mid-body (``drop``), or kill the server process before answering (``die``).
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

KEY_ID, SECRET = "testing-key-id", "testing-secret-key"  # moto accepts any pair
REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """A moto S3 server process on 127.0.0.1; ``url`` is its endpoint."""

    def __init__(self, state: Path, port: int | None = None, persist: bool = True) -> None:
        self.port = port or _free_port()
        self.state, self.persist = Path(state), persist
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        """What a client process needs in its environment to reach this server."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": REGION,
        }

    def start(self) -> S3Server:
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
        args = [sys.executable, "-m", "benchmarks.s3_server", str(self.port), str(self.state)]
        if not self.persist:
            args.append("--no-persist")
        self.process = subprocess.Popen(args, env=env, cwd=root)  # noqa: S603 - our own module
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the S3 test server exited with {self.process.returncode}")
            try:
                self._control("ping")
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the S3 test server did not answer on {self.url} within 60 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def _control(self, action: str, body: dict | None = None):
        data = json.dumps(body or {}).encode()
        request = urllib.request.Request(f"{self.url}/_test/{action}", data=data, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return json.loads(response.read())

    def requests(self, reset: bool = False) -> list[dict]:
        """Every request served since the start (or the last reset): method, path, range,
        status, bytes sent."""
        return self._control("requests", {"reset": reset})

    def fault(self, kind: str, match: str = "", times: int = 1) -> None:
        """The next ``times`` requests whose ``METHOD /path`` contains ``match`` fail: kind
        ``slowdown`` (503 SlowDown), ``deny`` (403 AccessDenied), ``drop`` (half the body, then
        the connection closes), ``die`` (the server process exits at once)."""
        self._control("fault", {"kind": kind, "match": match, "times": times})

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# -- the server process -----------------------------------------------------------------------

_ERRORS = {
    "slowdown": ("503 Slow Down", "SlowDown", "Please reduce your request rate."),
    "deny": ("403 Forbidden", "AccessDenied", "Access Denied"),
}


class _Middleware:
    def __init__(self, app, state: Path, persist: bool) -> None:
        self.app, self.state, self.persist = app, state, persist
        self.log: list[dict] = []
        self.faults: list[dict] = []
        self.lock = threading.Lock()

    def _take_fault(self, what: str) -> str | None:
        with self.lock:
            for f in self.faults:
                if f["match"] in what and f["times"] > 0:
                    f["times"] -= 1
                    return f["kind"]
        return None

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_test/"):
            return self._control(path[len("/_test/") :], environ, start_response)
        method = environ["REQUEST_METHOD"]
        entry = {"method": method, "path": path, "query": environ.get("QUERY_STRING", ""),
                 "range": environ.get("HTTP_RANGE"), "status": 0, "sent": 0}  # fmt: skip
        with self.lock:
            self.log.append(entry)
        kind = self._take_fault(f"{method} {path}")
        if kind == "die":
            os._exit(1)
        if kind in _ERRORS:
            status, code, message = _ERRORS[kind]
            body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                    f"<Message>{message}</Message></Error>").encode()  # fmt: skip
            if method != "HEAD":
                environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            start_response(status, [("Content-Type", "application/xml"),
                                    ("Content-Length", str(len(body)))])  # fmt: skip
            entry["status"] = int(status[:3])
            return [b"" if method == "HEAD" else body]

        def start(status, headers, exc_info=None):
            entry["status"] = int(status[:3])
            return start_response(status, headers, exc_info)

        chunks = list(self.app(environ, start))
        body = b"".join(chunks)
        entry["sent"] = len(body)
        if method in ("PUT", "POST", "DELETE") and self.persist:
            self._save()
        if kind == "drop" and len(body) > 1:
            entry["sent"] = len(body) // 2
            return _Dropped(body[: len(body) // 2])
        return [body]

    def _control(self, action: str, environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(length) or b"{}")
        if action == "requests":
            with self.lock:
                answer = list(self.log)
                if body.get("reset"):
                    self.log.clear()
        elif action == "fault":
            with self.lock:
                self.faults.append(body)
            answer = {"ok": True}
        else:
            answer = {"ok": True}
        data = json.dumps(answer).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(data)))])  # fmt: skip
        return [data]

    def _save(self) -> None:
        from moto.s3.models import s3_backends

        backend = s3_backends["123456789012"]["global"]
        snapshot = {
            name: {key: obj.value for key, obj in bucket.keys.items()}
            for name, bucket in backend.buckets.items()
        }
        tmp = self.state.with_name(self.state.name + ".tmp")
        tmp.write_bytes(pickle.dumps(snapshot))
        os.replace(tmp, self.state)

    def load(self) -> None:
        if not self.persist or not self.state.is_file():
            return
        from moto.s3.models import s3_backends

        backend = s3_backends["123456789012"]["global"]
        for name, objects in pickle.loads(self.state.read_bytes()).items():  # noqa: S301 - ours
            backend.create_bucket(name, REGION)
            for key, value in objects.items():
                backend.put_object(name, key, value)


class _Dropped:
    """A WSGI body that sends its bytes and then breaks the connection."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self):
        yield self.data
        raise ConnectionAbortedError("connection dropped by the test server")


def main() -> None:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    port, state = int(sys.argv[1]), Path(sys.argv[2])
    persist = "--no-persist" not in sys.argv
    os.environ.setdefault("MOTO_ALLOW_NONEXISTENT_REGION", "true")
    app = _Middleware(DomainDispatcherApplication(create_backend_app), state, persist)
    app.load()

    class Quiet(MotoRequestHandler):
        def log_request(self, *args, **kwargs) -> None:  # one line per request: too many
            pass

    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=Quiet)
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    server.serve_forever()


if __name__ == "__main__":
    main()
