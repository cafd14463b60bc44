"""Dask plumbing shared by ``pipeline build`` and ``shards verify``: connect, then map tasks.

``dask_client`` starts a ``LocalCluster`` of single-threaded worker processes (dashboard on
127.0.0.1 when bokeh is installed) or connects to an existing scheduler. ``map_bounded`` submits
a picklable function over small task records with a bounded number in flight, retries, and
releases each future as soon as its result is taken.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dask
from distributed import Client, LocalCluster, as_completed

PRE_SPAWN = "distributed.nanny.pre-spawn-environ"


@dataclass(frozen=True)
class ClusterOptions:
    """Where tasks run: ``workers`` local processes, or an existing scheduler."""

    workers: int | None = None
    scheduler: str | None = None  # tcp://host:8786
    scheduler_file: str | None = None  # written by `dask scheduler --scheduler-file`

    def __post_init__(self) -> None:
        given = [o for o in (self.workers, self.scheduler, self.scheduler_file) if o is not None]
        if len(given) > 1:
            raise ValueError("give only one of --workers, --scheduler and --scheduler-file")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {self.workers}")

    def describe(self) -> str:
        """One line for logs."""
        if self.scheduler:
            return f"existing cluster at {self.scheduler}"
        if self.scheduler_file:
            return f"existing cluster from {self.scheduler_file}"
        return f"local cluster of {self.workers or 1} worker process(es)"


@contextmanager
def dask_client(options: ClusterOptions, wait_seconds: float = 60) -> Iterator[Client]:
    """A connected ``Client``; a local cluster is shut down on exit."""
    if options.scheduler or options.scheduler_file:
        with Client(address=options.scheduler, scheduler_file=options.scheduler_file,
                    timeout=wait_seconds) as client:  # fmt: skip
            client.wait_for_workers(1, timeout=wait_seconds)
            yield client
        return
    # Dask's nanny gives workers MALLOC_TRIM_THRESHOLD_=65536, which turns off glibc's adaptive
    # mmap threshold: every image-sized buffer is then mapped and unmapped per sample, and
    # compositing runs 26% slower (docs/benchmarks.md, Compositing). The nanny also writes its
    # variables into this process's environment; it is restored on exit.
    saved_environ = dict(os.environ)
    try:
        with (
            dask.config.set({f"{PRE_SPAWN}.MALLOC_TRIM_THRESHOLD_": None}),
            LocalCluster(
                n_workers=options.workers or 1,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",  # localhost only, a free port
                silence_logs=logging.ERROR,
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
    finally:
        os.environ.clear()
        os.environ.update(saved_environ)


def dashboard_link(client: Client) -> str | None:
    """The dashboard URL, or None without bokeh (the scheduler then serves no dashboard pages)."""
    if importlib.util.find_spec("bokeh") is None:
        return None
    try:
        return client.dashboard_link
    except Exception:  # noqa: BLE001 - a missing dashboard is never an error
        return None


def map_bounded(
    client: Client,
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    *,
    name: str,
    in_flight: int | None = None,
    retries: int = 2,
) -> Iterator[tuple[Any, Any, BaseException | None]]:
    """Run ``fn`` over ``items`` on the cluster; yield ``(item, result, error)`` as they finish.

    At most ``in_flight`` tasks (default twice the cluster's threads) are submitted at a time, so
    a million items never sit in the scheduler at once. A task that raises is retried
    ``retries`` times (lost workers are handled by the scheduler) before its error is yielded.
    """
    if in_flight is None:
        in_flight = max(2, 2 * sum(client.nthreads().values()))
    token = uuid.uuid4().hex[:8]
    pending = iter(enumerate(items))
    submitted: dict[Any, Any] = {}

    def submit(index: int, item: Any):
        future = client.submit(fn, item, key=f"{name}-{token}-{index}", retries=retries, pure=False)
        submitted[future] = item
        return future

    queue = as_completed([submit(i, item) for i, item in itertools.islice(pending, in_flight)])
    for future in queue:
        item = submitted.pop(future)
        try:
            yield item, future.result(), None
        except Exception as exc:  # noqa: BLE001 - reported per task to the caller
            yield item, None, exc
        finally:
            future.release()
        for index, nxt in itertools.islice(pending, 1):
            queue.add(submit(index, nxt))
