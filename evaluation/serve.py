"""``indexnet serve``: a local web page to paint a trimap and cut out a photo.

The page (``evaluation/static/serve.html``: plain HTML, JavaScript and a canvas; nothing is
fetched from elsewhere) posts a photo and a trimap; the server answers with the same PNG bytes
``indexnet predict`` writes for those files:

- ``GET /``: the page.
- ``GET /api/info``: the model's family and variant, the checkpoint's name, the device, the
  limits and how many predictions are running and waiting (JSON).
- ``POST /api/predict``: multipart fields ``image`` (the photo's file) and ``trimap`` (a
  single-channel trimap at its size), read by ``evaluation.images`` as ``indexnet predict``
  reads files; answers the 8-bit grey alpha PNG, or with ``?cutout=1`` the RGBA cut-out.

Bad input is answered with HTTP 400 and ``{"error": "..."}`` naming the field and what to do;
nothing is written to disk (uploads are parsed in memory, up to ``max_upload_bytes``). One
prediction runs at a time; up to ``queue`` more wait their turn, and a request beyond them is
answered 503 at once rather than left to time out.

Starlette, uvicorn and python-multipart are the ``serve`` extra; importing this module without
them raises an ``ImportError`` that says how to install them.
"""

from __future__ import annotations

import asyncio
import io
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import torch

try:
    import uvicorn
    from starlette import formparsers
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    if formparsers.multipart is None:  # Starlette finds python-multipart by either of its names
        raise ImportError("python-multipart is missing", name="python-multipart")
except ImportError as exc:
    raise ImportError(
        f"indexnet serve needs Starlette, uvicorn and python-multipart ({exc.name} is missing): "
        'pip install "indexnet-matting[serve]"'
    ) from None

from evaluation.images import TRIMAP_RULE, read_pair
from evaluation.predict import cutout, png_bytes, resolve_device
from training.inference import predict_alpha
from training.models.build import describe
from training.models.registry import family_of

PAGE = Path(__file__).parent / "static" / "serve.html"
MAX_UPLOAD_BYTES = 25 * 2**20  # --max-upload-mb 25: the photo and trimap together
FIELDS = ("image", "trimap")


class BadRequest(ValueError):
    """A request the server refuses, with the HTTP status and the message to send."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class _InMemoryParser(MultiPartParser):
    """Starlette's multipart parser with files kept in memory: the body is already capped at
    the upload limit, so a spool of that size never rolls over to a temporary file."""

    def __init__(self, request: Request, stream: AsyncIterator[bytes], limit: int) -> None:
        super().__init__(request.headers, stream, max_files=len(FIELDS), max_fields=len(FIELDS))
        self.spool_max_size = limit + 1


class _Predictor:
    """The model, its limits, and the one-at-a-time queue in front of it."""

    def __init__(
        self,
        model: torch.nn.Module,
        device: torch.device,
        max_pixels: int | None,
        queue: int,
        max_upload_bytes: int,
        checkpoint: str | None,
    ) -> None:
        self.model = model
        self.device = device
        self.max_pixels = max_pixels
        self.queue = queue
        self.max_upload_bytes = max_upload_bytes
        self.checkpoint = checkpoint
        self.lock = asyncio.Lock()  # created on the server's event loop (at the first await)
        self.admitted = 0  # requests past the queue check: the one running and those waiting

    def info(self) -> dict:
        family = family_of(self.model)
        running = 1 if self.lock.locked() else 0
        return {
            "family": family.name,
            "model": f"{family.title}: {describe(self.model)}",
            "checkpoint": self.checkpoint,
            "device": str(self.device),
            "max_pixels": self.max_pixels,
            "max_upload_bytes": self.max_upload_bytes,
            "queue": self.queue,
            "running": running,
            "waiting": max(0, self.admitted - running),
            "trimap_rule": TRIMAP_RULE,
        }

    async def read_fields(self, request: Request) -> dict[str, tuple[str, bytes]]:
        """The uploaded ``image`` and ``trimap``: ``field -> (file name, bytes)``."""
        limit = self.max_upload_bytes
        too_large = BadRequest(
            f"the upload (fields image and trimap together) is larger than the limit of "
            f"{_megabytes(limit)}; send a smaller photo (downscale or recompress it) or start "
            "the server with a larger --max-upload-mb"
        )
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise BadRequest(
                "send multipart/form-data with the fields image (the photo) and trimap (its "
                "trimap), e.g. curl -F image=@photo.jpg -F trimap=@trimap.png"
            )
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large

        async def capped() -> AsyncIterator[bytes]:
            received = 0
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise too_large
                yield chunk

        try:
            form = await _InMemoryParser(request, capped(), limit).parse()
        except MultiPartException as exc:
            raise BadRequest(f"the multipart body cannot be parsed ({exc}); {_SEND}") from None
        except ClientDisconnect:
            raise BadRequest("the upload was interrupted; send it again") from None
        fields = {}
        try:
            for field in FIELDS:
                value = form.get(field)
                if not isinstance(value, UploadFile):
                    what = "the photo" if field == "image" else "its trimap"
                    found = "is missing" if value is None else "is text, not a file"
                    raise BadRequest(f"field {field} {found}: send {what} as a file; {_SEND}")
                fields[field] = (value.filename or field, await value.read())
        finally:
            await form.close()
        return fields

    def predict(self, fields: dict[str, tuple[str, bytes]], with_cutout: bool) -> bytes:
        """Read the uploads as ``indexnet predict`` reads files, predict, encode the PNG."""
        (image_name, image), (trimap_name, trimap) = fields["image"], fields["trimap"]
        try:
            rgb, marks, _ = read_pair(
                io.BytesIO(image),
                io.BytesIO(trimap),
                f"field image ({image_name})",
                f"field trimap ({trimap_name})",
            )
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        tiling = {} if self.max_pixels is None else {"max_pixels": self.max_pixels}
        alpha = predict_alpha(self.model, rgb, marks, self.device, **tiling)
        return png_bytes(cutout(rgb, alpha) if with_cutout else alpha)


_SEND = "e.g. curl -F image=@photo.jpg -F trimap=@trimap.png URL/api/predict"


def _megabytes(size: int) -> str:
    return f"{size / 2**20:g} MB"


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def check_options(
    device: str | torch.device, max_pixels: int | None, queue: int, max_upload_bytes: int
) -> torch.device:
    """``make_app``'s options checked (cheap: before a checkpoint is loaded); the device.

    Raises:
        ValueError: the bad option named, with what is allowed.
    """
    if max_pixels is not None and max_pixels < 1:
        raise ValueError(f"--max-pixels must be >= 1, got {max_pixels}")
    if queue < 0:
        raise ValueError(f"--queue must be >= 0 (predictions waiting while one runs), got {queue}")
    if max_upload_bytes < 1:
        raise ValueError(f"--max-upload-mb must be > 0, got {max_upload_bytes} bytes")
    return resolve_device(device)


def make_app(
    model: torch.nn.Module,
    device: str | torch.device = "cpu",
    max_pixels: int | None = None,
    queue: int = 4,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    checkpoint: str | None = None,
) -> Starlette:
    """The web app serving ``model``: the page, ``/api/info`` and ``/api/predict``.

    Args:
        model: a network of a model family (``training.checkpoint.load_for_inference``); it is
            put in eval mode and moved to ``device``.
        device: where to run it (cpu, cuda).
        max_pixels: photos with more pixels are predicted in tiles (None: ``predict_alpha``'s
            default), as ``indexnet predict --max-pixels``.
        queue: predictions that may wait while one runs; more are answered 503.
        max_upload_bytes: the largest request body (photo and trimap together) accepted.
        checkpoint: the checkpoint's name, shown by ``/api/info``.

    Returns:
        A Starlette app, to run with uvicorn (``serve``, or a test's own server).

    Raises:
        ValueError: a bad device, ``max_pixels``, ``queue`` or ``max_upload_bytes`` (named).
    """
    device = check_options(device, max_pixels, queue, max_upload_bytes)
    page = PAGE.read_text(encoding="utf-8")
    state = _Predictor(
        model.eval().to(device), device, max_pixels, queue, max_upload_bytes, checkpoint
    )

    async def index(request: Request) -> Response:
        return HTMLResponse(page)

    async def info(request: Request) -> Response:
        return JSONResponse(state.info())

    async def predict(request: Request) -> Response:
        if state.admitted > state.queue:  # one running and `queue` waiting: answer at once
            return _error(f"busy: {state.queue} predictions queued; try again", 503)
        state.admitted += 1
        try:
            fields = await state.read_fields(request)
            with_cutout = request.query_params.get("cutout", "0") not in ("", "0", "false")
            async with state.lock:  # one prediction at a time on the device
                png = await run_in_threadpool(state.predict, fields, with_cutout)
        except BadRequest as exc:
            return _error(str(exc), exc.status)
        except torch.cuda.OutOfMemoryError as exc:
            return _error(f"{exc}; start the server with a smaller --max-pixels", 500)
        finally:
            state.admitted -= 1
        return Response(png, media_type="image/png")

    routes = [
        Route("/", index),
        Route("/api/info", info),
        Route("/api/predict", predict, methods=["POST"]),
    ]
    return Starlette(routes=routes)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port).

    Raises:
        ValueError: the address cannot be used (in use, not this machine's, a bad name).
    """
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise ValueError(f"--host {host}: cannot open a socket ({exc})") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except (OSError, OverflowError) as exc:
        sock.close()
        raise ValueError(
            f"--host {host} --port {port}: cannot listen there ({exc}); pick another --port "
            "(0: any free one) or a --host of this machine"
        ) from None
    return sock


def url_of(sock: socket.socket) -> str:
    """The page's address on a socket from ``bind``."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(app: Starlette, sock: socket.socket, on_listening: Callable[[str], None]) -> None:
    """Run ``app`` with uvicorn on ``sock`` until interrupted (Ctrl-C).

    ``on_listening`` gets the URL once the socket listens (connections made before uvicorn
    starts wait in its backlog).
    """
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    on_listening(url_of(sock))
    uvicorn.Server(config).run(sockets=[sock])
