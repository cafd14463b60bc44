"""The process group and the device of one training rank, under torchrun or alone.

``join_process_group`` joins the group torchrun's environment describes (NCCL for CUDA, gloo on
the CPU), with a key prefix per restart; ``device_for`` picks the rank's device;
``all_true`` and-s a flag over every rank; ``restarted`` says whether torchrun restarted this
process (``--max-restarts``).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def join_process_group(device: str) -> tuple[int, int, int]:
    """Join the process group when launched by torchrun; (rank, world size, local rank)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        # torchrun's agent keeps one key-value store across restarts, so a restarted group could
        # read the addresses its dead predecessors left there and hang connecting to them; a
        # prefix per restart keeps each attempt's keys apart
        store, rank, world = next(dist.rendezvous("env://"))
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        store = dist.PrefixStore(f"indexnet/attempt_{attempt}", store)
        backend = "nccl" if device == "cuda" else "gloo"
        dist.init_process_group(backend, store=store, rank=rank, world_size=world)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
    return 0, 1, 0


def device_for(name: str, local_rank: int) -> torch.device:
    """``cpu``, or CUDA device ``local_rank`` (made current); a ValueError for anything else."""
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available; use --device cpu")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise ValueError(f"--device must be cpu or cuda, got {name!r}")
    return torch.device("cpu")


def all_true(flag: bool, device: torch.device, world: int) -> bool:
    """``flag`` and-ed over every rank (on the device: NCCL reduces only CUDA tensors)."""
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    if world > 1:
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def restarted() -> bool:
    """This process is a restart by torchrun (``--max-restarts``): continue the run."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
