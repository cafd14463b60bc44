"""The DDP trainer: one process, or one per device under ``torchrun`` (NCCL on GPU, gloo on CPU).

``train(cfg, options)`` streams the shards (``training.data``), trains with the reference
recipe (Adam or AdamW with the pretrained backbone at ``learning_rate / backbone_lr_mult``, and the
learning rate of ``lr_factor``: a linear warmup, then steps down at epoch milestones),
building the model through its family's registry entry (``training.models.registry``), and writes
to ``RUN_DIR``:

- ``checkpoints/last.pt`` every epoch and every ``checkpoint_every`` steps (atomic: a temp file,
  then a rename), holding model, optimizer, epoch (the epochs completed), step, resolved
  config and RNG states (the learning rate is a function of the step and the config, so there
  is no scheduler state); ``checkpoints/best.pt`` by validation Grad when validation is on;
- ``train.jsonl``: every ``log_every`` steps the loss terms, learning rates, ms per step, ms
  waiting for data and samples/s; a ``validation`` record per epoch; epochs are numbered from
  1, so the validation of epoch k and a best.pt written then both say k; a ``resume`` record
  when a run continues; a ``skipped`` record per sample replaced under ``loader.corrupt=skip``;
- ``batches.jsonl`` with ``runtime.log_batches``: per global step its keys and input digests;
- ``config.yaml``: the resolved config;
- ``curves.png``: loss, learning rates and validation metrics against the trivial baseline
  (``training.run.curves``), redrawn after each validation and at the end;
- ``tensorboard/``: the same numbers and a few validation samples as TensorBoard event files
  (``training.run.tensorboard_log``), where the tensorboard package is installed.

The trivial baseline (``shards.mattes.trivial_alpha``) is scored on the first validation of a
run and logged once, as a ``baseline`` record.

The data order is ``training.data.order``'s: global batch ``k`` of epoch ``e`` is a function of the
index, the seed, ``e`` and the global batch G = ranks x ``batch_size``, and every rank takes
exactly ``samples // G`` steps per epoch, so uneven shards never leave a rank waiting in an
all-reduce. A non-finite loss on any rank stops every rank before the update, with the last
good checkpoint intact. ``--resume``, or a restart by ``torchrun --max-restarts``, continues
from ``last.pt`` with the next global batch of the uninterrupted run, on any number of ranks
and loader workers that gives the same G.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel

from configs import Config
from configs.schema import flatten
from shards.atomic import atomic_write_bytes
from shards.cache import ShardCache
from shards.reader import resolve_shards, shard_samples, split_shards
from training.checkpoint import load_checkpoint, load_for_inference, save_checkpoint
from training.data.batching import Batch, default_workers, device_inputs, epoch_batches
from training.data.stream import check_order
from training.distributed import all_true, device_for, join_process_group, restarted
from training.models.build import build_model, parameter_groups
from training.models.registry import family_of, get_family
from training.run.optim import build_optimizer, learning_rates, lr_factor
from training.run.tensorboard_log import SHEET_SAMPLES, TensorBoardLog, open_log
from training.run.validate import score_validation

LAST, BEST = "last.pt", "best.pt"
LOG_NAME = "train.jsonl"
BATCHES_NAME = "batches.jsonl"


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message says where and what is kept."""


@dataclass(frozen=True)
class RunOptions:
    """Where and how to run, beyond the recipe in ``Config``."""

    shards: str  # shard set folder or URL, brace pattern, or pipe: command
    out: Path  # run directory
    index: str | None = None  # the set's folder/URL when ``shards`` cannot locate it (pipe:)
    resume: bool = False  # continue from RUN_DIR/checkpoints/last.pt
    max_steps: int | None = None  # stop after this many steps in total (for short runs)
    # DataLoader processes per rank, a divisor of the batch (0: load in the training process;
    # None: data.batching.default_workers, the most up to 4 that divide it and fit the CPUs)
    loader_workers: int | None = None
    device: str = "cpu"  # cpu or cuda
    backbone: Path | None = None  # ImageNet MobileNetV2 weights for a fresh encoder
    # start from these weights with a fresh optimizer and schedule (fine-tuning): our
    # checkpoint, a family's released file, or a transformers-format folder
    init: Path | None = None


@dataclass
class TrainSummary:
    """What a run did (the same on every rank)."""

    step: int = 0  # optimiser steps taken in total (including before a resume)
    epochs: int = 0  # epochs completed
    resumed_from: int | None = None  # the step a resume started at
    last_loss: float = math.nan
    best_grad: float | None = None  # best validation Grad so far
    checkpoint: Path | None = None  # the last checkpoint written
    seconds: float = 0.0
    skipped: int = 0  # corrupt shards or samples skipped (policy "skip"), all ranks
    world_size: int = 1


class TrainProgress:
    """Callbacks a front end overrides to show progress (called on rank 0 only)."""

    def start(self, total_steps: int, first_step: int, steps_per_epoch: int) -> None:
        """Training begins at ``first_step`` (after a resume) of ``total_steps``."""

    def step(self, record: dict) -> None:
        """A step ended; ``record`` holds step, epoch (from 1), loss terms, lr, ms per step and
        data wait."""

    def validated(self, epoch: int, metrics: dict) -> None:
        """The validation split was scored after ``epoch`` (numbered from 1)."""

    def stop(self) -> None:
        """Training ended or failed."""


def _changed(saved: dict, current: dict) -> list[str]:
    """``section.key: old -> new`` for every value of ``current`` that differs from ``saved``
    (both nested config dicts; ``saved`` as ``load_checkpoint`` gives it, in the current shape
    whatever version wrote it, so a version-2 checkpoint's ``train.learning_rate`` is compared
    with ``optim.learning_rate``)."""
    before = flatten(saved)
    return [
        f"{key}: {before[key]!r} -> {value!r}"
        for key, value in flatten(current).items()
        if key in before and before[key] != value
    ]


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(saved: dict) -> None:
    """Restore what ``_rng_state`` saved: the CPU generator, and each CUDA device's that this
    process also has (a resume on fewer GPUs restores those; a CPU-only resume of a GPU run
    has none to restore)."""
    torch.set_rng_state(saved["torch"])
    cuda = saved.get("cuda")
    if cuda and torch.cuda.is_available():
        for device, state in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, device)


def _init_from(model: torch.nn.Module, path: Path) -> None:
    """Copy every weight of ``path`` into ``model`` (``--init``); the family and the variant
    must be the run's.

    Raises:
        ValueError: a file or folder that does not load, or another family or variant (both
            named).
    """
    source = load_for_inference(path, model.cfg)
    theirs, ours = getattr(source, "cfg", None), model.cfg
    if family_of(source).name != ours.family:
        raise ValueError(
            f"--init {path} holds a {family_of(source).title} model, and this run trains "
            f"{get_family(ours.family).title} (model.family={ours.family}); pass "
            f"--set model.family={family_of(source).name} or another --init"
        )
    there, here = (theirs.variant() if theirs is not None else {}), ours.variant()
    differ = [
        f"{key}: {there[key]!r} there, {value!r} here"
        for key, value in here.items()
        if key in there and there[key] != value
    ]
    if differ:
        raise ValueError(
            f"--init {path} is another {get_family(ours.family).title} variant than this run's: "
            + "; ".join(differ)
            + f"; set the run's model.{ours.family} section to match it"
        )
    model.load_state_dict(source.state_dict())


def _has_baseline(log: Path) -> bool:
    """Whether ``log`` (a ``train.jsonl``, maybe absent) holds a ``baseline`` record."""
    if not log.exists():
        return False
    with open(log, encoding="utf-8", errors="replace") as f:
        return any(line.startswith('{"baseline"') for line in f)


class _Run:
    """One training run on one rank: set up in ``__init__``, trained by ``fit()``."""

    def __init__(self, cfg: Config, options: RunOptions, progress: TrainProgress) -> None:
        self.start_time = time.perf_counter()
        self.cfg, self.options, self.progress = cfg, options, progress
        t, run = cfg.train, cfg.runtime
        self.owns_group = not dist.is_initialized()
        self.rank, self.world, local_rank = join_process_group(options.device)
        self.device = device_for(options.device, local_rank)
        if run.sync_bn and self.device.type != "cuda":
            raise ValueError(
                "runtime.sync_bn needs --device cuda: SyncBatchNorm has no CPU kernels"
            )
        storage = cfg.storage  # the store's options and the node's shard cache ride on the lists
        cache = ShardCache.of(storage.cache_dir, storage.cache_limit_gb)
        self.shards = resolve_shards(options.shards, "train", options.index, storage.options, cache)
        self.validation = split_shards(self.shards.index, "validation", storage.options, cache)
        if cfg.validation.enabled and not self.shards.index.split("validation"):
            raise ValueError(
                f"{options.shards}: the shard set has no validation shards to score after each "
                "epoch; pass --set validation.enabled=false to train without validation"
            )
        self.global_batch = self.world * t.batch_size
        self.workers = options.loader_workers
        if self.workers is None:
            self.workers = default_workers(t.batch_size)
        self.per_epoch = check_order(self.shards, cfg, self.world, self.workers).steps
        self.layout = shard_samples(self.shards)  # where each sample lies, for every epoch
        self.total_steps = self.per_epoch * t.epochs
        if options.max_steps is not None:
            self.total_steps = min(self.total_steps, options.max_steps)

        out = Path(options.out)
        self.ckpt_dir = out / "checkpoints"
        if not (options.resume or restarted()) and (self.ckpt_dir / LAST).exists():
            raise ValueError(
                f"{out} holds a run already ({self.ckpt_dir / LAST}); pass --resume to continue "
                "it, or choose another --out"
            )
        if self.rank == 0:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(
                out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode()
            )

        torch.manual_seed(t.seed)  # the same initial weights on every rank
        if options.init is not None and (options.resume or options.backbone is not None):
            raise ValueError(
                "--init starts a new run from every weight of a checkpoint; "
                + ("--resume continues a run" if options.resume else "--backbone sets only the "
                   "encoder") + ": pass one of them"
            )  # fmt: skip
        model = build_model(cfg.model, options.backbone)
        if options.init is not None:  # a resume (or a restart) then loads its checkpoint over it
            _init_from(model, options.init)
        self.backbone_report = model.backbone_report
        self.family = get_family(cfg.model.family)
        self.make_input = self.family.make_input
        self.family.freeze_norm(model)  # as the family's own section of cfg.model says
        if run.sync_bn and self.world > 1:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(self.device)
        if run.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.optimizer = build_optimizer(model, cfg.optim)
        self.groups = parameter_groups(model)
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.summary = TrainSummary(world_size=self.world)
        self.step = 0
        self.saved_step = -1
        self._resume()
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.net = DistributedDataParallel(model, device_ids=ids) if self.world > 1 else model
        self.skipped = torch.multiprocessing.get_context("fork").Value("i", 0)
        self.out = out
        # a resumed run has its baseline already (rank 0 reads the log; all ranks score it
        # on their first validation, since the sums are reduced together)
        self.baseline_logged = self.rank == 0 and _has_baseline(out / LOG_NAME)
        self.baseline_scored = False
        self.log = open(out / LOG_NAME, "a") if self.rank == 0 else None  # noqa: SIM115
        self.drawn_at = -1  # the log's size when curves.png was last drawn
        self.draw_failed = False
        self.board: TensorBoardLog | None = open_log(out) if self.rank == 0 else None
        self.batch_log = None
        if run.log_batches and self.rank == 0:
            self.batch_log = open(out / BATCHES_NAME, "a")  # noqa: SIM115

    def _resume(self) -> None:
        last = self.ckpt_dir / LAST
        if not (self.options.resume or restarted()):
            return
        state = load_checkpoint(last) if last.exists() else None
        if self.world > 1:
            # without a shared disk only the node that ran rank 0 before has the run folder,
            # and a restarted group may give rank 0 to another node: the newest checkpoint any
            # rank holds is sent to all (the lowest such rank sends it)
            steps: list[int] = [0] * self.world
            dist.all_gather_object(steps, -1 if state is None else int(state["step"]))
            src = max(range(self.world), key=lambda r: (steps[r], -r))
            box = [state if self.rank == src else None]
            dist.broadcast_object_list(box, src=src, device=self.device)
            state = box[0]
        if state is None:
            if self.options.resume:
                raise ValueError(f"--resume: no checkpoint at {last}")
            return  # restarted before the first checkpoint: start over
        saved_batch = state.get("global_batch")
        if saved_batch is not None and saved_batch != self.global_batch:
            raise ValueError(
                f"{last} was trained with a global batch of {saved_batch}, and this run has "
                f"{self.world} rank(s) x --batch-size {self.cfg.train.batch_size} = "
                f"{self.global_batch}; resume with ranks x batch size = {saved_batch} to "
                "continue its data order"
            )
        changed = [
            change
            for change in _changed(state.get("config") or {}, self.cfg.to_dict())
            if not (change.startswith("train.batch_size:") and saved_batch is not None)
            and not change.startswith("storage.")  # where shards come from, not what they are
        ]
        if changed and self.rank == 0:
            print(
                f"warning: resuming {last} with a config that differs from its own in "
                f"{', '.join(changed)}; the optimizer state continues as saved, and the "
                "learning rate follows this config's schedule",
                file=sys.stderr,
                flush=True,
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"])
        self.step = self.saved_step = int(state["step"])
        self.summary.best_grad = state.get("best_grad")
        self.summary.resumed_from = self.step

    def _write(self, record: dict) -> None:
        if self.log is not None:
            self.log.write(json.dumps(record) + "\n")
            self.log.flush()

    def _checkpoint(self, name: str) -> Path:
        """Write ``name`` on rank 0 (all ranks hold the same weights); refuse non-finite ones."""
        path = self.ckpt_dir / name
        if self.rank != 0:
            return path
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            raise TrainingError(
                f"weights are not finite at step {self.step}; not overwriting {path}, "
                f"the last good checkpoint is {self.ckpt_dir / LAST}"
            )
        save_checkpoint(
            path,
            self.model,
            self.cfg,
            optimizer=self.optimizer.state_dict(),
            epoch=self.step // self.per_epoch,
            step=self.step,
            step_in_epoch=self.step % self.per_epoch,
            global_batch=self.global_batch,
            rng=_rng_state(),
            best_grad=self.summary.best_grad,
        )
        if name == LAST:
            self.saved_step = self.step
            self.summary.checkpoint = path
        return path

    def _validate(self, epoch: int) -> None:
        """Score the validation split (shared over ranks); keep ``best.pt`` by Grad."""
        scored = score_validation(
            self.model,
            self.validation,
            self.device,
            self.cfg.validation.max_samples,
            self.rank,
            self.world,
            baseline=not self.baseline_scored,
            keep=SHEET_SAMPLES if self.board is not None else 0,
        )
        self.baseline_scored = True
        metrics = scored.metrics
        elapsed = round(time.perf_counter() - self.start_time, 2)
        # epochs are numbered from 1 wherever a person reads them (train.jsonl, curves, report,
        # the console), and the k-th epoch's validation sits beside best.pt's epoch k (epochs
        # completed); only batches.jsonl keeps the data order's 0-based epoch
        where = {"epoch": epoch + 1, "step": self.step, "time_s": elapsed}
        baseline = None
        if scored.baseline is not None and not self.baseline_logged:
            baseline = scored.baseline
            self._write({"baseline": baseline} | where)
            self.baseline_logged = True
        self._write({"validation": metrics} | where)
        if self.rank == 0:
            self.progress.validated(epoch + 1, metrics)
            if self.board is not None:
                self.board.validation(metrics, self.step, scored.kept, baseline)
        if self.summary.best_grad is None or metrics["grad"] < self.summary.best_grad:
            self.summary.best_grad = metrics["grad"]
            self._checkpoint(BEST)
        self._draw_curves()

    def _draw_curves(self) -> None:
        """Rank 0 redraws ``curves.png`` from the log when it has grown; a failure only warns,
        once: the curves are a view of the run, never a reason to stop it."""
        if self.log is None or self.log.tell() == self.drawn_at:
            return
        from training.run.curves import CURVES_NAME, draw, read_run

        try:
            draw([read_run(self.out)], self.out / CURVES_NAME)
            self.drawn_at = self.log.tell()
        except Exception as exc:  # any failure to draw must leave training be
            if not self.draw_failed:
                print(
                    f"warning: could not draw {self.out / CURVES_NAME} ({type(exc).__name__}: "
                    f"{exc}); training goes on, and indexnet report {self.out} draws it later",
                    file=sys.stderr,
                    flush=True,
                )
            self.draw_failed = True

    def _log_batch(self, batch: Batch, epoch: int) -> None:
        """Rank 0 appends the global batch (every rank's slice, rank 0 first) to batches.jsonl;
        every rank records the samples it replaced under ``loader.corrupt=skip``."""
        mine = (batch.keys, batch.digests)
        if self.cfg.runtime.log_batches:
            slices = [mine]
            if self.world > 1:
                slices = [None] * self.world
                dist.all_gather_object(slices, mine)
            if self.batch_log is not None:
                keys = [key for got, _ in slices for key in got]
                digests = [digest for _, got in slices for digest in got]
                record = {"epoch": epoch, "step": self.step, "keys": keys, "digests": digests}
                self.batch_log.write(json.dumps(record) + "\n")
                self.batch_log.flush()
        for reason in filter(None, batch.skipped):
            self._write({"skipped": reason, "rank": self.rank, "step": self.step})

    def _train_step(self, tensors: dict[str, torch.Tensor], epoch: int) -> dict[str, float]:
        run = self.cfg.runtime
        batch = device_inputs(tensors, self.device, self.make_input, run.channels_last)
        with torch.autocast(self.device.type, torch.bfloat16, enabled=run.bf16):
            pred = self.net(batch["image"])
        terms = self.family.loss(pred, batch, self.cfg.model)  # "loss" and "loss_<term>"
        total = terms["loss"]
        if not all_true(bool(torch.isfinite(total)), self.device, self.world):
            raise TrainingError(
                f"the loss is not finite at epoch {epoch + 1} step {self.step + 1} (on some rank); "
                f"training stopped before the update, and the last good checkpoint is "
                f"{self.ckpt_dir / LAST}. Lower optim.learning_rate or check the data."
            )
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        factor = lr_factor(self.cfg.optim, self.step, self.per_epoch)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor
        self.optimizer.step()
        return {name: float(value.detach()) for name, value in terms.items()}

    def _epoch(self, epoch: int, in_epoch: int) -> None:
        """Steps ``in_epoch .. per_epoch`` of ``epoch`` (fewer when ``total_steps`` comes first)."""
        cfg = self.cfg
        loader = epoch_batches(
            self.shards,
            cfg,
            self.rank,
            self.world,
            epoch,
            in_epoch,
            self.workers,
            self.layout,
            pin=self.device.type == "cuda",
            skipped=self.skipped,
        )
        self.net.train()
        tick = time.perf_counter()
        while in_epoch < self.per_epoch and self.step < self.total_steps:
            batch = next(loader)
            got = time.perf_counter()
            losses = self._train_step(batch.tensors, epoch)
            self.step += 1
            in_epoch += 1
            self._log_batch(batch, epoch)
            done = time.perf_counter()
            self.summary.last_loss = losses["loss"]
            if self.rank == 0:
                record = {
                    "step": self.step,
                    "epoch": epoch + 1,
                    **losses,
                    **learning_rates(self.optimizer, self.groups),
                    "ms_per_step": round((done - tick) * 1000, 2),
                    "data_wait_ms": round((got - tick) * 1000, 2),
                    "samples_per_s": round(
                        cfg.train.batch_size * self.world / max(done - tick, 1e-9), 2
                    ),
                    "time_s": round(done - self.start_time, 2),
                }
                self.progress.step(record)
                if self.step % cfg.runtime.log_every == 0 or self.step == self.total_steps:
                    self._write(record)
                    if self.board is not None:
                        self.board.step(record)
            every = cfg.runtime.checkpoint_every
            if every and self.step % every == 0:
                self._checkpoint(LAST)
            tick = time.perf_counter()
        del loader  # ends this epoch's loader workers
        if in_epoch == self.per_epoch:
            self.summary.epochs = epoch + 1
            v = cfg.validation
            if v.enabled and ((epoch + 1) % v.every == 0 or epoch + 1 == cfg.train.epochs):
                self._validate(epoch)
            self._checkpoint(LAST)

    def fit(self) -> TrainSummary:
        if self.options.init is not None and self.summary.resumed_from is None:
            self._write({"init": str(self.options.init)})
        if self.summary.resumed_from is not None:
            self._write(
                {"resume": self.step, "restarts": os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")}
            )
        if self.rank == 0:
            self.progress.start(self.total_steps, self.step, self.per_epoch)
        try:
            while self.step < self.total_steps:
                self._epoch(*divmod(self.step, self.per_epoch))
            if self.saved_step != self.step:
                self._checkpoint(LAST)
        finally:
            if self.rank == 0:
                self.progress.stop()
                self._draw_curves()  # also after a failure: the curves up to it
                if self.board is not None:
                    self.board.close()
        skipped = torch.tensor([float(self.skipped.value)], device=self.device)
        if self.world > 1:
            dist.all_reduce(skipped)  # also keeps every rank here until all have finished
        s = self.summary
        s.step, s.skipped = self.step, int(skipped.item())
        s.epochs = max(s.epochs, self.step // self.per_epoch)
        s.checkpoint = self.ckpt_dir / LAST
        s.seconds = time.perf_counter() - self.start_time
        return s

    def close(self) -> None:
        if self.board is not None:  # flushed and closed by fit(); here if setup failed after it
            self.board.close()
        for log in (self.log, self.batch_log):
            if log is not None:
                log.close()
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def train(cfg: Config, options: RunOptions, progress: TrainProgress | None = None) -> TrainSummary:
    """Train ``cfg.model`` (of any model family) on the shards; the module docstring says what.

    Args:
        cfg: the resolved config (every section but ``data``).
        options: shard source, run directory, device and run length.
        progress: callbacks for a progress display (rank 0).

    Returns:
        What the run did.

    Raises:
        ValueError: bad options or shard sources (named).
        TrainingError: a non-finite loss or weights (the last good checkpoint is kept).
        shards.reader.ShardError: a corrupt shard or sample under the ``stop`` policy.
    """
    run = _Run(cfg, options, progress or TrainProgress())
    try:
        return run.fit()
    finally:
        run.close()
