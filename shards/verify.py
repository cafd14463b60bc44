"""Prove a shard set complete and uncorrupted, or say exactly what is wrong.

``verify(root)`` checks, in order:

- the index: ``index.json`` parses; ``samples.parquet`` reads; their counts agree;
- the listing: every listed shard exists; no unlisted ``.tar`` lies in the set;
- every shard (one Dask task each, one sequential read of the file): its size and sha256 are the
  recorded ones; the tar parses to its end; every member is ``<key>.<ext>``, a regular file;
  every sample has exactly its recorded members; keys are the recorded ones, in order, unique;
  every sample starts at its recorded byte offset and spans its recorded length (sets built
  before ``samples.parquet`` had ``offset``/``length`` skip this check);
- across shards: no key appears twice; every sample's recorded members are those
  ``index.json`` says its split holds (a lean set's train samples: the train members alone);
- with ``deep``, for the members ``shards.schema`` marks: every checked member decodes; sized
  ones (merged, alpha, fg, trimap) have the json's size; members with allowed values (the
  trimap's 0/128/255) hold no other; ``merged == blend(fg, fit(bg), alpha)`` exactly (the
  rounding the sample records); each hashed member's sha256 is the one in ``samples.parquet``.

The set is a local folder or a store URL (``s3://bucket/set``, any ``shards.store`` location);
each task reads its shard from there itself, so workers need no shared filesystem. A shard the
store fails to give (5xx, a connection refused or reset, a 403 mid-run) is reported
``unreadable``: the store failed, not the shard, so verify again once it is back. A set that
cannot be checked at all (no ``index.json``, a missing bucket, access denied) raises
``shards.store.StoreError`` before any shard is read.

Shards are read into memory only, never extracted: a member named ``../../x`` is reported,
and nothing is written anywhere.
"""

from __future__ import annotations

import hashlib
import tarfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shards import store
from shards.index import ShardInfo, read_index, read_samples
from shards.mattes import BackgroundFit, apply_fit, blend
from shards.reader import decode_member, tar_entries
from shards.schema import MEMBERS, held_members, name_of
from shards.store import NotFound, Options, StoreError, StoreUnavailable

CHECKS = ("index", "samples", "count", "listing", "missing", "size", "sha256", "tar", "members",
          "keys", "order", "offsets", "unreadable")  # fmt: skip
# --deep adds these; a member with allowed ``values`` (the trimap) is a check of its own name
DEEP_CHECKS = ("decode", "sizes", *(m.name for m in MEMBERS if m.values), "composite",
               "member_sha256")  # fmt: skip


@dataclass(frozen=True)
class Problem:
    """One failed check: where (shard, key) and what."""

    check: str  # one of CHECKS, or of DEEP_CHECKS with --deep
    detail: str
    shard: str | None = None
    key: str | None = None

    def __str__(self) -> str:
        where = " ".join(p for p in (self.shard, self.key and f"key {self.key}") if p)
        return f"[{self.check}] {where + ': ' if where else ''}{self.detail}"


@dataclass(frozen=True)
class ExpectedSample:
    """What ``samples.parquet`` records of one written sample."""

    key: str
    members: tuple[str, ...]  # sorted member names, e.g. ('alpha.png', 'bg.jpg', ...)
    sha256: dict[str, str]  # member name -> sha256
    span: tuple[int, int] | None = None  # (offset, length) in the shard; None in older sets
    position: int | None = None  # its index in the shard, as recorded


@dataclass(frozen=True)
class ShardCheck:
    """The task of checking one shard: where it is and what it must hold."""

    root: str
    info: ShardInfo
    expected: tuple[ExpectedSample, ...]
    deep: bool
    options: dict[str, Any] = field(default_factory=dict, repr=False)  # the store's; never shown


@dataclass
class ShardReport:
    """What a shard check found."""

    shard: str
    samples: int = 0  # samples read
    bytes: int = 0  # bytes read
    keys: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


@dataclass
class VerifyReport:
    """The outcome of ``verify``; ``ok`` only when every check held."""

    root: str
    deep: bool
    shards: int = 0
    samples: int = 0
    bytes: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)
    checks: dict[str, int] = field(default_factory=dict)  # check -> failures

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def bad_shards(self) -> list[str]:
        """Shards with a problem of their own, in order (what ``repair`` rebuilds): not those
        the store only failed to give (``unreadable_shards``)."""
        unreadable = set(self.unreadable_shards)
        return list(dict.fromkeys(p.shard for p in self.problems
                                  if p.shard and p.shard not in unreadable))  # fmt: skip

    @property
    def unreadable_shards(self) -> list[str]:
        """Shards the store failed to give (verify again once it is back), in order."""
        return list(dict.fromkeys(p.shard for p in self.problems if p.check == "unreadable"))

    def to_json(self) -> dict[str, Any]:
        """The report file's content (the root redacted; never the storage options)."""
        return {
            "ok": self.ok,
            "root": self.root,
            "deep": self.deep,
            "shards": self.shards,
            "samples": self.samples,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "failures_by_check": self.checks,
            "bad_shards": self.bad_shards,
            "unreadable_shards": self.unreadable_shards,
            "problems": [asdict(p) for p in self.problems],
        }


class _HashingReader:
    """Sequential reader that hashes and counts everything read through it.

    It reads its source in ``chunk``-sized pieces, whatever the tar reader asks for: on a store,
    a shard then costs one GET per ``chunk`` rather than one per tar block. A source that fails
    raises ``StoreError`` or ``StoreUnavailable`` (``shards.store.translate``), so that the
    store's failure is never mistaken for a damaged tar.
    """

    def __init__(self, raw, url: str, chunk: int = store.CHUNK) -> None:
        self._raw, self._url, self._chunk = raw, url, chunk
        self._buffer = memoryview(b"")
        self.sha256 = hashlib.sha256()
        self.size = 0

    def _fill(self) -> bool:
        try:
            data = self._raw.read(self._chunk)
        except Exception as exc:  # noqa: BLE001 - every client raises its own kinds
            raise store.translate(self._url, exc) from exc
        self._buffer = memoryview(data)
        return bool(data)

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = [bytes(self._buffer)]
            while self._fill():
                parts.append(bytes(self._buffer))
            self._buffer = memoryview(b"")
            data = b"".join(parts)
        else:
            if not self._buffer:
                self._fill()
            data = bytes(self._buffer[:n])
            self._buffer = self._buffer[n:]
        self.sha256.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        """Hash whatever the tar reader left unread (end-of-archive padding)."""
        while self.read(self._chunk):
            pass


def _check_sample(
    shard: str, key: str, files: dict[str, bytes], expected: ExpectedSample | None
) -> list[Problem]:
    """Deep checks of one sample's members, driven by the sample schema (``shards.schema``):
    every hashed member's sha256, every checked member decoded, sized members at the json's
    size, ``values`` respected, and ``merged == blend(fg, fit(bg), alpha)`` exactly."""
    problems: list[Problem] = []

    def bad(check: str, detail: str) -> None:
        problems.append(Problem(check, detail, shard, key))

    if expected is not None:
        for file, data in files.items():
            want = expected.sha256.get(file)
            if want and hashlib.sha256(data).hexdigest() != want:
                bad("member_sha256", f"{file} sha256 differs from samples.parquet")
    by_name = {name_of(file): file for file in files}
    decoded: dict[str, Any] = {}
    for m in MEMBERS:  # a missing member is the structural check's to report
        if m.checked and m.name in by_name:
            try:
                decoded[m.name] = decode_member(m.name, files[by_name[m.name]])
            except ValueError as exc:
                bad("decode", f"{by_name[m.name]}: {exc}")
    if "json" not in decoded:  # missing, or reported above
        return problems
    try:
        meta = decoded["json"]
        fit = BackgroundFit.from_json(meta["bg_fit"])
        rounding = meta["composition"]["rounding"]
        size = (int(meta["height"]), int(meta["width"]))
    except (KeyError, TypeError, ValueError) as exc:
        bad("decode", f"json: not a valid sample record ({exc})")
        return problems
    sized = {m.name: decoded[m.name].shape[:2] for m in MEMBERS if m.sized and m.name in decoded}
    if set(sized.values()) - {size}:
        sizes = ", ".join(f"{name} {w}x{h}" for name, (h, w) in sized.items())
        bad("sizes", f"members disagree with json {size[1]}x{size[0]}: {sizes}")
        return problems
    for m in MEMBERS:
        if m.values is not None and m.name in decoded:
            extra = np.setdiff1d(np.unique(decoded[m.name]), np.array(m.values, np.uint8))
            if extra.size:
                shown = "/".join(map(str, m.values))
                bad(m.name, f"values outside {shown}: {extra[:8].tolist()}")
    if not {"merged", "fg", "bg", "alpha"} <= decoded.keys():
        return problems
    try:
        fitted = apply_fit(decoded["bg"], fit)
    except ValueError as exc:
        bad("composite", f"bg does not fit: {exc}")
        return problems
    if fitted.shape[:2] != size:
        bad(
            "sizes",
            f"fitted bg is {fitted.shape[1]}x{fitted.shape[0]}, json says {size[1]}x{size[0]}",
        )
        return problems
    merged = blend(decoded["fg"], fitted, decoded["alpha"], rounding)
    diff = merged != decoded["merged"]
    if diff.any():
        worst = int(np.abs(merged.astype(np.int16) - decoded["merged"]).max())
        bad("composite", f"merged differs from blend(fg, fit(bg), alpha) at {int(diff.sum())} "
                         f"values (max {worst})")  # fmt: skip
    return problems


def check_shard(task: ShardCheck) -> ShardReport:
    """Check one shard in a single sequential read (the function each Dask task runs)."""
    info, report = task.info, ShardReport(task.info.path)
    url = store.join(task.root, info.path)

    def bad(check: str, detail: str, key: str | None = None) -> None:
        report.problems.append(Problem(check, detail, info.path, key))

    try:
        raw = store.open_read(url, task.options)
    except (NotFound, FileNotFoundError):
        bad("missing", "listed in index.json but not in the set")
        return report
    except (StoreError, StoreUnavailable) as exc:
        return _unreadable(report, bad, exc)
    try:
        with raw:
            return _read_shard(task, url, raw, report, bad)
    except (StoreError, StoreUnavailable) as exc:
        return _unreadable(report, bad, exc)


def _unreadable(report: ShardReport, bad, exc: Exception) -> ShardReport:
    # the store failed, not the shard: what was found before still stands
    bad("unreadable", f"{exc}; the shard is unchecked: verify again once the store is back")
    return report


def _read_shard(task: ShardCheck, url: str, raw, report: ShardReport, bad) -> ShardReport:
    info = task.info
    size = raw.seek(0, 2)  # the size the open file knows: no request of its own
    raw.seek(0)
    if size != info.bytes:
        bad("size", f"{size:,} bytes, index.json records {info.bytes:,}")
    expected = {e.key: e for e in task.expected}
    reported: set[str] = set()  # checks said once per shard
    seen: dict[str, set[str]] = {}
    order: list[str] = []

    def finish(key: str, members: dict[str, bytes], span: tuple[int, int]) -> None:
        want = expected.get(key)
        if want is not None and want.span not in (None, span) and "offsets" not in reported:
            reported.add("offsets")  # the samples after it are shifted too: said once
            bad("offsets", f"at bytes {span[0]:,} + {span[1]:,}, samples.parquet records "
                           f"{want.span[0]:,} + {want.span[1]:,} (and the samples after it "
                           "follow)", key)  # fmt: skip
        if want is None:
            bad("keys", "not recorded for this shard in samples.parquet", key)
        elif tuple(sorted(members)) != want.members:
            missing = sorted(set(want.members) - set(members))
            unexpected = sorted(set(members) - set(want.members))
            detail = "; ".join(
                part for part in (missing and f"missing {', '.join(missing)}",
                                  unexpected and f"unexpected {', '.join(unexpected)}") if part
            )  # fmt: skip
            bad("members", detail, key)
        if task.deep:
            report.problems.extend(_check_sample(info.path, key, members, want))

    reader = _HashingReader(raw, url)
    current: str | None = None
    members: dict[str, bytes] = {}
    start = end = 0  # the current sample's span in the shard
    try:  # the shard reader's tar stream: one sequential read, never seeks
        for entry in tar_entries(reader, read=lambda _file: task.deep):
            name, key, ext = entry.name, entry.key, entry.file
            if not entry.regular or not ext or not key or "/" in name or "\\" in name:
                bad("members", f"member {name!r} is not a file named <key>.<ext>")
                continue
            if key != current:
                if current is not None:
                    finish(current, members, (start, end - start))
                if key in seen:
                    bad("keys", "appears twice in this shard (not contiguous)", key)
                current, members, start = key, {}, entry.offset
                seen.setdefault(key, set())
                order.append(key)
            if ext in members:
                bad("members", f"member {name!r} appears twice", key)
            members[ext] = entry.data if entry.data is not None else b""
            seen[key].add(ext)
            end = entry.end
        if current is not None:
            finish(current, members, (start, end - start))
    except (StoreError, StoreUnavailable):
        raise  # an OSError too, but the store's failure, not the tar's
    except (tarfile.TarError, EOFError, OSError) as exc:
        bad("tar", f"does not parse to its end: {exc}")
    reader.drain()
    report.bytes = reader.size
    report.keys = order
    report.samples = len(order)
    digest = reader.sha256.hexdigest()
    if digest != info.sha256:
        bad("sha256", f"sha256 {digest[:16]}... differs from index.json's {info.sha256[:16]}...")
    if report.samples != info.samples:
        bad("count", f"{report.samples} samples read, index.json records {info.samples}")
    for key in [k for k in expected if k not in seen]:
        bad("keys", "recorded in samples.parquet but not in the shard", key)
    recorded = [e.key for e in sorted(task.expected, key=lambda e: e.position or 0)]
    if all(e.position is not None for e in task.expected) and set(order) == set(recorded):
        for at, (got, want) in enumerate(zip(order, recorded, strict=True)):
            if got != want:  # the first one out of place (those after it follow)
                bad("order", f"is sample {at} of the shard, where samples.parquet records "
                             f"{want}; the keys are not in their recorded order", got)  # fmt: skip
                break
    return report


def _expected_by_shard(
    root: str | Path, options: Options | None
) -> dict[str, tuple[ExpectedSample, ...]]:
    table = read_samples(root, options)
    columns = table.to_pydict()
    out: dict[str, list[ExpectedSample]] = defaultdict(list)
    for i, status in enumerate(columns["status"]):
        if status == "failed":
            continue
        members = tuple(sorted(columns["members"][i]))
        sha = {m: columns[f"{name_of(m)}_sha256"][i] for m in members}
        span = None
        if "offset" in columns and columns["offset"][i] is not None:
            span = (columns["offset"][i], columns["length"][i])
        position = columns["position"][i] if "position" in columns else None
        out[columns["shard"][i]].append(
            ExpectedSample(columns["key"][i], members, sha, span, position)
        )
    return {k: tuple(v) for k, v in out.items()}


def verify(
    root: str | Path,
    deep: bool = False,
    run: Callable[[Callable, list[ShardCheck]], Any] | None = None,
    on_shard: Callable[[ShardReport | None], None] | None = None,
    options: Options | None = None,
) -> VerifyReport:
    """Check a shard set; every problem is collected, none stops the run.

    Args:
        root: the shard set: a folder or a store URL (with ``index.json``).
        deep: also decode every member and recompute every composite.
        run: maps ``check_shard`` over the tasks and yields ``(task, report, error)``; default
            runs them in this process (the CLI passes a Dask mapper). Each task carries
            ``options`` to the worker that reads its shard.
        on_shard: called after each shard (for progress).
        options: the store's options (``--storage-option``); never reported.

    Returns:
        A ``VerifyReport``; ``ok`` only when every check held.

    Raises:
        shards.store.StoreError: nothing can be checked: ``index.json`` is missing, the bucket
            is missing or access is denied (before any shard is read).
        shards.store.StoreUnavailable: the store failed while the index or the listing was read.
    """
    start = time.perf_counter()
    root = str(root) if store.is_remote(root) else Path(root)
    options = dict(options or {})
    report = VerifyReport(store.redact(str(root)), deep)
    try:
        index = read_index(root, options)
    except StoreError:
        raise
    except ValueError as exc:
        report.problems.append(Problem("index", str(exc)))
        return _finish(report, start)
    try:
        expected = _expected_by_shard(root, options)
    except StoreError:
        raise
    except (ValueError, KeyError) as exc:
        report.problems.append(Problem("samples", str(exc)))
        expected = {}
    listed = {s.path for s in index.shards}
    for info in index.shards:
        # what samples.parquet records against what index.json says the split's samples hold
        # (a lean set's train samples: the train members alone)
        held = sorted(held_members(index.meta, info.split))
        for sample in expected.get(info.path, ()):
            if sorted(map(name_of, sample.members)) != held:
                report.problems.append(
                    Problem(
                        "members",
                        f"samples.parquet records {', '.join(sample.members)}; index.json "
                        f"says {info.split} samples hold {', '.join(held)}",
                        info.path,
                        sample.key,
                    )
                )
                break  # once per shard: its other samples say the same
        if expected and len(expected.get(info.path, ())) != info.samples:
            report.problems.append(Problem(
                "count", f"samples.parquet has {len(expected.get(info.path, ()))} written samples, "
                f"index.json records {info.samples}", info.path))  # fmt: skip
    for extra in sorted(set(expected) - listed):
        report.problems.append(Problem("count", "in samples.parquet but not in index.json", extra))
    written = index.meta.get("counts", {}).get("written")
    if written is not None and written != index.samples():
        report.problems.append(
            Problem("count", f"index.json counts {written} written, its shards {index.samples()}")
        )
    for rel in store.walk_files(root, options):  # .repair/ and .quarantine/ are repair's
        hidden = any(part.startswith(".") for part in rel.split("/"))
        if rel.endswith(".tar") and rel not in listed and not hidden:
            report.problems.append(Problem("listing", "a .tar not listed in index.json", rel))
    tasks = [ShardCheck(str(root), s, expected.get(s.path, ()), deep, options)
             for s in index.shards]  # fmt: skip
    run = run or (lambda fn, items: ((t, fn(t), None) for t in items))
    done: dict[str, ShardReport] = {}
    for task, shard_report, error in run(check_shard, tasks):
        if error is not None:
            shard_report = ShardReport(task.info.path)
            shard_report.problems.append(Problem("tar", f"check crashed: {error}", task.info.path))
        done[task.info.path] = shard_report
        if on_shard:
            on_shard(shard_report)
    owner: dict[str, str] = {}
    for info in index.shards:  # index order: the report does not depend on completion order
        shard_report = done[info.path]
        report.problems.extend(shard_report.problems)
        report.samples += shard_report.samples
        report.bytes += shard_report.bytes
        for key in shard_report.keys:
            if key in owner and owner[key] != info.path:
                report.problems.append(Problem("keys", f"also in {owner[key]}", info.path, key))
            owner.setdefault(key, info.path)
    report.shards = len(done)
    return _finish(report, start)


def _finish(report: VerifyReport, start: float) -> VerifyReport:
    report.seconds = time.perf_counter() - start
    report.checks = dict(Counter(p.check for p in report.problems))
    return report
