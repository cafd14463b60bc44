"""Where data lives: local paths and any fsspec URL, through one small set of calls.

Every place a user names data (``pipeline build --data-dir/--bg-dir/--out``, ``shards
verify/info/repair``, ``train --shards``, ``evaluate run --shards``) goes through here, so a
local folder, ``s3://bucket/set``, ``gs://``, ``az://``/``abfs://`` and ``http(s)://`` (read
only) behave alike. fsspec is the file layer Dask itself uses; each store's client is an extra
(``s3``: s3fs, ``gcs``: gcsfs, ``azure``: adlfs), and a missing one is named in the error.

Credentials come from each provider's own chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/
``AWS_ENDPOINT_URL``, ``GOOGLE_APPLICATION_CREDENTIALS``, ``AZURE_STORAGE_*``, config files,
instance roles); ``options`` (``--storage-option KEY=VALUE``) are passed to the store's
filesystem (not to ``http(s)://`` or local paths). Neither is ever printed: messages name the
URL with any ``user:password@`` removed (``redact``).

Writes are whole or absent: a local file goes through ``shards.atomic`` (temporary file,
rename); an object is one PUT (``write_bytes``) or a multipart upload that appears only when
completed and is aborted on failure (``upload``).

Errors: a URL that is missing (404, no such bucket) or refused (403) raises ``StoreError`` (a
missing object in an existing bucket: its subclass ``NotFound``), a ``ValueError`` every
command reports with exit 2; a store that fails in transit (5xx after the
client's own retries, a refused or reset connection, a timeout) raises ``StoreUnavailable``,
which callers may retry.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from shards.atomic import atomic_file, atomic_write_bytes

# which pip extra brings each protocol's fsspec implementation
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure",
          "abfss": "azure", "adl": "azure"}  # fmt: skip
READ_ONLY = ("http", "https")
CHUNK = 8 << 20  # bytes per ranged GET when a span is read in pieces

Options = Mapping[str, Any]


class StoreError(ValueError):
    """A location that is missing or refused (404, no bucket, 403), or a store whose client is
    not installed: the user must act. The message names the URL, never a credential."""


class NotFound(StoreError):
    """No file or object at the URL (its bucket exists)."""


class StoreUnavailable(OSError):
    """A store that failed in transit (5xx, throttling after the client's retries, a refused
    or reset connection, a timeout): worth retrying, unlike ``StoreError``."""


def protocol(location: str) -> str:
    """``s3``, ``gs``, ``http``...; ``""`` for a local path (``file://`` included)."""
    match = re.match(r"^([a-z][a-z0-9+.-]*)://", str(location))
    if not match or match.group(1) == "file":
        return ""
    return match.group(1)


def is_remote(location: str | Path) -> bool:
    """Whether ``location`` is a URL of a store or server rather than a local path."""
    return bool(protocol(str(location)))


def redact(url: str) -> str:
    """``url`` without the ``user:password@`` a user may have written into it."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", r"\1", str(url))


def join(root: str | Path, *parts: str) -> str:
    """``root/part/...`` for a URL or a local path (as a string)."""
    if not is_remote(root):
        return str(Path(root, *parts))
    return "/".join([str(root).rstrip("/"), *(p.strip("/") for p in parts)])


def local_path(location: str | Path) -> Path:
    """A local location as a ``Path`` (``file://`` stripped)."""
    text = str(location)
    return Path(text[len("file://") :] if text.startswith("file://") else text)


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``--storage-option KEY=VALUE`` pairs as a dict: values read as YAML scalars (``true``,
    ``3``, ``null``), dotted keys nested (``client_kwargs.region_name=eu-west-1``).

    Raises:
        StoreError: a pair without ``=``.
    """
    import yaml

    options: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise StoreError(f"--storage-option {pair.split('=')[0]!r}: expected KEY=VALUE")
        target = options
        *outer, last = key.split(".")
        for part in outer:
            target = target.setdefault(part, {})
        try:
            target[last] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            target[last] = value
    return options


def filesystem(url: str, options: Options | None = None):
    """``(fsspec filesystem, path within it)`` of a URL.

    Raises:
        StoreError: the protocol is unknown, or its client is not installed (the extra named).
    """
    import fsspec

    proto = protocol(url)
    kwargs = dict(options or {}) if proto not in READ_ONLY else {}
    try:
        fs, path = fsspec.core.url_to_fs(url, **kwargs)
    except ImportError:
        extra = EXTRAS.get(proto)
        hint = (f"pip install 'indexnet-matting[{extra}]'" if extra
                else "install the fsspec implementation for it")  # fmt: skip
        raise StoreError(f"{redact(url)}: {proto}:// needs a client that is not installed; "
                         f"{hint}") from None  # fmt: skip
    except ValueError as exc:
        raise StoreError(f"{redact(url)}: {exc}") from None
    return fs, path


# botocore's and google-auth's exceptions for a client with no credentials at all
_NO_CREDENTIALS = ("NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError")


def translate(url: str, exc: BaseException) -> Exception:
    """The ``StoreError`` or ``StoreUnavailable`` a client's exception at ``url`` means."""
    where = redact(url)
    text = str(exc)
    if isinstance(exc, (StoreError, StoreUnavailable)):
        return exc
    if isinstance(exc, FileNotFoundError):
        if "bucket" in text.lower():
            return StoreError(f"{where}: no such bucket ({text}); check the URL")
        return NotFound(f"{where}: not found; check the URL")
    if isinstance(exc, PermissionError):
        return StoreError(
            f"{where}: access denied ({text}); check the credentials the store's client finds "
            "(environment, config files, instance role) and their permissions on this URL"
        )
    if isinstance(exc, IsADirectoryError | NotADirectoryError):
        return StoreError(f"{where}: {type(exc).__name__}: {text}")
    if type(exc).__name__ in _NO_CREDENTIALS:
        return StoreError(
            f"{where}: the store's client found no credentials ({text}); set them as the "
            "provider documents (environment variables, a config file or an instance role)"
        )
    if isinstance(exc, TypeError):  # a --storage-option the client does not take
        return StoreError(f"{where}: the store's client refused its options ({text}); check "
                          "--storage-option and storage.options")  # fmt: skip
    return StoreUnavailable(f"{where}: the store failed ({type(exc).__name__}: {text})")


def _call(url: str, func, *args, **kwargs):
    try:
        return func(*args, **kwargs)
    except (StoreError, StoreUnavailable):
        raise
    except Exception as exc:  # noqa: BLE001 - every client raises its own kinds; translate them
        raise translate(url, exc) from exc


# -- reading ----------------------------------------------------------------------------------


def read_bytes(url: str | Path, options: Options | None = None) -> bytes:
    """The whole file or object."""
    if not is_remote(url):
        path = local_path(url)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"{path}: not found") from None
    fs, path = filesystem(str(url), options)
    return _call(str(url), fs.cat_file, path)


def read_range(url: str, start: int, end: int, options: Options | None = None) -> bytes:
    """Bytes ``start .. end - 1`` (one ranged GET on a store)."""
    if not is_remote(url):
        with open(local_path(url), "rb") as f:
            f.seek(start)
            return f.read(end - start)
    fs, path = filesystem(url, options)
    return _call(url, fs.cat_file, path, start=start, end=end)


def size(url: str | Path, options: Options | None = None) -> int | None:
    """The file's or object's size in bytes; None when it does not exist."""
    if not is_remote(url):
        path = local_path(url)
        return path.stat().st_size if path.is_file() else None
    fs, path = filesystem(str(url), options)
    try:
        return int(_call(str(url), fs.size, path))
    except NotFound:
        return None


def exists(url: str | Path, options: Options | None = None) -> bool:
    """Whether a file or object is there."""
    return size(url, options) is not None


def is_dir(url: str | Path, options: Options | None = None) -> bool:
    """Whether ``url`` is a folder (a local one, or a prefix with objects under it)."""
    if not is_remote(url):
        return local_path(url).is_dir()
    fs, path = filesystem(str(url), options)
    return bool(_call(str(url), fs.isdir, path))


def listdir(url: str | Path, options: Options | None = None) -> list[tuple[str, bool]]:
    """``(name, is a folder)`` of what is directly in a folder or under a prefix, sorted.

    Raises:
        StoreError: the folder or prefix does not exist.
    """
    if not is_remote(url):
        path = local_path(url)
        if not path.is_dir():
            raise StoreError(f"{path}: missing folder")
        return sorted((p.name, p.is_dir()) for p in path.iterdir())
    fs, path = filesystem(str(url), options)
    entries = _call(str(url), fs.ls, path, detail=True)
    out = []
    for entry in entries:
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        out.append((name, entry.get("type") == "directory"))
    return sorted(set(out))


def open_read(url: str | Path, options: Options | None = None) -> BinaryIO:
    """A seekable read-only file; on a store, reads are ranged GETs of what is asked."""
    if not is_remote(url):
        return open(local_path(url), "rb")  # noqa: SIM115 - the caller closes it
    fs, path = filesystem(str(url), options)
    return _call(str(url), fs.open, path, "rb", block_size=1 << 16, cache_type="readahead")


def hash_file(url: str | Path, options: Options | None = None) -> tuple[int, str]:
    """``(size, sha256 hex)`` of a file or object, streamed in 8 MiB pieces."""
    digest, total = hashlib.sha256(), 0
    stream = open_read(url, options)
    try:
        while block := _call(str(url), stream.read, CHUNK):
            digest.update(block)
            total += len(block)
    finally:
        stream.close()
    return total, digest.hexdigest()


# -- writing ----------------------------------------------------------------------------------


def _writable(url: str) -> None:
    if protocol(url) in READ_ONLY:
        raise StoreError(f"{redact(url)}: {protocol(url)}:// is read-only; write to a folder "
                         "or an object store (s3://, gs://, az://)")  # fmt: skip


def make_dirs(url: str | Path, options: Options | None = None) -> None:
    """Create a local folder (with parents); on a store, check that its bucket exists (a
    prefix needs no creating). Raises ``StoreError`` for a missing bucket or a denied one."""
    if not is_remote(url):
        local_path(url).mkdir(parents=True, exist_ok=True)
        return
    _writable(str(url))
    fs, path = filesystem(str(url), options)
    bucket = path.split("/", 1)[0]
    root = f"{protocol(str(url))}://{bucket}"
    if not _call(root, fs.exists, bucket):
        raise StoreError(f"{redact(root)}: no such bucket; create it first, or check the URL")


def write_bytes(url: str | Path, data: bytes, options: Options | None = None) -> None:
    """Write a whole file or object: it appears whole or not at all."""
    if not is_remote(url):
        path = local_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
        return
    _writable(str(url))
    fs, path = filesystem(str(url), options)
    _call(str(url), fs.pipe_file, path, data)


def upload(local: Path, url: str | Path, options: Options | None = None) -> None:
    """Copy a local file to ``url``: a single PUT, or a multipart upload that appears only when
    complete and is aborted when it fails; locally a copy committed by rename."""
    if not is_remote(url):
        path = local_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, as_path=True) as tmp:
            shutil.copyfile(local, tmp)
        return
    _writable(str(url))
    fs, path = filesystem(str(url), options)
    _call(str(url), fs.put_file, str(local), path)


def move(src: str | Path, dst: str | Path, options: Options | None = None) -> None:
    """Move a file or object to ``dst`` (same place kind): locally a rename (parents made); on a
    store a server-side copy, which appears whole, then the source deleted."""
    if not is_remote(src) and not is_remote(dst):
        target = local_path(dst)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(local_path(src), target)
        return
    _writable(str(dst))
    fs, path = filesystem(str(src), options)
    _, target = filesystem(str(dst), options)
    _call(str(src), fs.mv, path, target)


def upload_folder(folder: Path, url: str | Path, options: Options | None = None) -> int:
    """Copy every file under a local folder to ``url`` (same relative paths), each as
    ``upload`` writes it; returns how many. What a user does with ``aws s3 sync``, for the
    tests and benchmarks that put a shard set or a build's inputs on a store."""
    rels = list(walk_files(folder))
    for rel in rels:
        upload(Path(folder) / rel, join(url, rel), options)
    return len(rels)


def remove(url: str | Path, options: Options | None = None, recursive: bool = False) -> None:
    """Delete a file or object (and, with ``recursive``, a folder or prefix); missing is fine."""
    if not is_remote(url):
        path = local_path(url)
        if recursive and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        return
    fs, path = filesystem(str(url), options)
    with contextlib.suppress(NotFound):
        _call(str(url), fs.rm, path, recursive=recursive)


def abort_stale_uploads(url: str, options: Options | None = None) -> int:
    """Abort the unfinished multipart uploads under an S3 prefix (what a killed writer left;
    invisible, but billed). Other stores and local paths have none; returns how many."""
    if protocol(url) not in ("s3", "s3a"):
        return 0
    fs, path = filesystem(url, options)
    bucket, _, prefix = path.partition("/")
    answer = _call(url, fs.call_s3, "list_multipart_uploads", Bucket=bucket,
                   Prefix=prefix.rstrip("/") + "/")  # fmt: skip
    uploads = answer.get("Uploads", [])
    for item in uploads:
        _call(url, fs.call_s3, "abort_multipart_upload", Bucket=bucket, Key=item["Key"],
              UploadId=item["UploadId"])  # fmt: skip
    return len(uploads)


def walk_files(url: str | Path, options: Options | None = None) -> Iterator[str]:
    """Paths of every file under a folder or prefix, relative to it, sorted."""
    if not is_remote(url):
        root = local_path(url)
        yield from sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        return
    fs, path = filesystem(str(url), options)
    found = _call(str(url), fs.find, path)
    base = path.rstrip("/") + "/"
    yield from sorted(p[len(base) :] for p in found if p.startswith(base))
