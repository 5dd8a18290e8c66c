"""Several processes, one run: torchrun's environment, the device, and each rank's share of a batch.

torchrun sets WORLD_SIZE / RANK / LOCAL_RANK; a run without it is one process and none of this waits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA GPU is available here; use --device cpu (or auto)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name!r}: use auto, cpu, cuda or cuda:N")
    return device


class GlobalBatchSampler(torch.utils.data.Sampler):
    """This process's share of each global batch of a seeded per-epoch permutation.

    Global batch t is ``perm[t*B:(t+1)*B]`` whatever the number of processes; rank r takes its r-th
    slice. So a run on N processes sees exactly the batches a single process would (only BatchNorm's
    per-process statistics differ), and the order is a function of (seed, epoch) alone.
    """

    def __init__(self, size: int, global_batch: int, seed: int, rank: int = 0, world: int = 1):
        self.size, self.global_batch, self.seed, self.rank, self.world = size, global_batch, seed, rank, world
        self.per_rank = global_batch // world

    def __len__(self) -> int:
        return (self.size // self.global_batch) * self.per_rank

    def __iter__(self):
        perm = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed)).tolist()
        for start in range(0, self.size - self.global_batch + 1, self.global_batch):
            share = start + self.rank * self.per_rank
            yield from perm[share : share + self.per_rank]


def replica_spread(model: nn.Module, world: Dist) -> float:
    """Largest difference between any process's weights and rank 0's (0.0 when DDP kept them in sync)."""
    if world.world == 1:
        return 0.0
    flat = torch.cat(
        [p.detach().float().flatten() for p in model.state_dict().values()]
    )  # on the model device (nccl)
    reference = flat.clone()
    dist.broadcast(reference, 0)
    spread = (flat - reference).abs().max()
    dist.all_reduce(spread, op=dist.ReduceOp.MAX)
    return float(spread)


def all_agree(flag: bool, world: Dist, device: torch.device) -> bool:
    """True only if ``flag`` is true on every process (one all-reduce; every process must call it)."""
    if world.world == 1:
        return flag
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())
