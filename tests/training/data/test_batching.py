"""training.data.batching: the default loader processes of a rank (stacking and composing are
exercised by tests/training/data/test_stream.py and the trainer's runs)."""

from __future__ import annotations

import os

import pytest

from training.data.batching import default_workers, usable_cpus


def test_the_default_loader_workers_divide_the_batch():
    assert [default_workers(b, cpus=64) for b in (2, 3, 5, 6, 16)] == [2, 3, 1, 3, 4]


def test_the_default_never_exceeds_the_cpus_of_the_ranks_on_a_node():
    assert [default_workers(16, cpus=c) for c in (1, 2, 3, 4, 8)] == [1, 2, 2, 4, 4]
    assert default_workers(16, cpus=8, local_ranks=4) == 2  # 2 CPUs a rank
    assert default_workers(16, cpus=8, local_ranks=8) == 1
    assert default_workers(16, cpus=2, local_ranks=4) == 1  # at least one


def test_the_cpus_are_the_affinity_mask_and_torchrun_s_local_ranks_count(monkeypatch):
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    assert usable_cpus() == len(os.sched_getaffinity(0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert usable_cpus() == 2 and default_workers(16) == 2  # a 2-core machine: not 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert default_workers(16) == 1
