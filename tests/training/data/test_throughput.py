"""training.data.throughput: what --data-only reports (the runs: tests/training/run/)."""

from __future__ import annotations

from training.data.throughput import DataOnlyReport


def _report(**fields) -> DataOnlyReport:
    base = dict(
        samples=96, seconds=1.0, samples_per_s=96.0, loader_workers=2,
        per_process_samples_per_s=48.0, steps=7, batch_size=16, world_size=1, device="cuda:0",
        ms_per_step=166.7, startup_s=0.5, cache_hit_rate=0.9, target_step_ms=50.0,
        samples_per_s_needed=320.0, loader_processes_needed=7, suggested_loader_workers=8,
        lean_train=False, bytes_per_sample=2_600_000, mb_per_s=249.6, per_process_mb_per_s=124.8,
        mb_per_s_needed=832.0, node_mb_per_s_needed=6656.0,
    )  # fmt: skip
    return DataOnlyReport(**{**base, **fields})


def test_the_summary_names_the_loader_workers_to_pass():
    text = _report().summary()
    assert "96.0 samples/s on 1 rank(s)" in text and "48.0 samples/s per loader process" in text
    assert "hit rate 90.0%" in text and "needs 320 samples/s" in text
    assert "7 loader process(es) at this rate: --loader-workers 8" in text


def test_the_summary_says_when_no_divisor_of_the_batch_is_enough_or_the_cache_is_off():
    text = _report(loader_processes_needed=20, suggested_loader_workers=None, cache_hit_rate=None)
    assert "more than --batch-size can have" in text.summary()
    assert "decode cache hit rate off" in text.summary()
    assert "in the training process" in _report(loader_workers=0).summary()


def test_the_summary_gives_the_bytes_budget_per_process_gpu_and_node():
    text = _report().summary()
    assert "bytes read per sample: 2.600 MB (a full set; --lean-train reads less)" in text
    assert "249.6 MB/s here, 124.8 MB/s per loader process" in text
    assert "one GPU needs 832.0 MB/s, one 8-GPU node 6656.0 MB/s" in text
    assert "(a lean set)" in _report(lean_train=True).summary()
