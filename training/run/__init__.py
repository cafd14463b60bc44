"""A training run: the DDP trainer and what it writes.

- ``trainer``: ``train(cfg, options)``, the loop, resume and the run folder.
- ``optim``: ``build_optimizer`` over a family's parameter groups; ``lr_factor``, the schedule.
- ``validate``: full-resolution validation scored with the benchmark's metrics.
- ``curves``: ``train.jsonl`` -> ``curves.png`` (``read_run``, ``draw``).
- ``tensorboard_log``: TensorBoard event files of a run.
"""
