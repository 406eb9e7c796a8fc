"""The process world: torchrun's environment (a world of one without it), and the collectives the
trainers need. Every helper is a no-op in a world of one, so the training code reads the same
for one process and for many."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as tdist

log = logging.getLogger(__name__)


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            tdist.barrier()


def setup(device: str = "auto", timeout_s: int = 900, local_rank_arg: int | None = None) -> Dist:
    """Join torchrun's world; NCCL on CUDA, gloo on CPU. ``device``: auto | cpu | cuda."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", local_rank_arg if local_rank_arg is not None else 0))
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was asked for but torch sees no CUDA device")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)  # by LOCAL rank: correct on every node
    if world > 1:
        # A peer that dies closes its sockets and the next collective fails at once; a peer that
        # hangs is caught by this timeout (NCCL aborts the communicator: async error handling).
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        tdist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(seconds=timeout_s))
    return Dist(rank=rank, world=world, local_rank=local_rank,
                device=torch.device("cuda", local_rank) if use_cuda else torch.device("cpu"))


def shard(n: int, dist: Dist) -> list[int]:
    """This rank's indices of ``n`` items: every item on exactly one rank, none dropped."""
    return list(range(dist.rank, n, dist.world))


def gather_dicts(d: dict, dist: Dist) -> list[dict]:
    """Every rank's dict, in rank order, on every rank."""
    if dist.world == 1:
        return [dict(d)]
    parts: list[Any] = [None] * dist.world
    tdist.all_gather_object(parts, d)
    return parts


def merge_disjoint(parts: list[dict]) -> dict:
    """Merge per-rank dicts; a key on two ranks means the ranks' shares overlapped."""
    merged: dict = {}
    for rank, part in enumerate(parts):
        twice = merged.keys() & part.keys()
        if twice:
            raise RuntimeError(f"rank {rank} returned keys another rank also returned: {sorted(twice)[:5]}")
        merged.update(part)
    return merged


def broadcast_object(obj: Any, dist: Dist) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if dist.world == 1:
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(flag: bool, dist: Dist) -> bool:
    """True on every rank when ``flag`` is true on any rank."""
    if dist.world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=dist.device)
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return bool(t.item())


def sync_buffers(model: torch.nn.Module, dist: Dist) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each training forward, but the last forward of an epoch
    still updates each rank's own copy; without this, ranks would evaluate with statistics that
    differ from each other and from the checkpoint, which stores rank 0's.
    """
    if dist.world == 1:
        return
    for buffer in model.buffers():
        tdist.broadcast(buffer.data, src=0)


def max_replica_difference(model: torch.nn.Module, dist: Dist) -> float:
    """Largest absolute difference from rank 0's copy over every parameter and buffer."""
    if dist.world == 1:
        return 0.0
    worst = torch.zeros((), device=dist.device)
    for tensor in [t for t in [*model.parameters(), *model.buffers()] if t.numel()]:
        ref = tensor.detach().clone()
        tdist.broadcast(ref, src=0)
        worst = torch.maximum(worst, (tensor.detach().double() - ref.double()).abs().max().to(worst))
    tdist.all_reduce(worst, op=tdist.ReduceOp.MAX)
    return float(worst.item())


def explain_failure(exc: BaseException) -> None:
    """One clear line after a failed collective: which rank, why it is most likely, what to do."""
    if not (tdist.is_available() and tdist.is_initialized() and isinstance(exc, RuntimeError)):
        return
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    log.error("rank %d of %d: a collective operation failed (%s). Another process has most likely "
              "died or hung (see its log; a silent peer is given up after train.dist_timeout_s). "
              "Run the same command to resume from the last checkpoint.",
              tdist.get_rank(), tdist.get_world_size(), first_line[:300])


def shutdown() -> None:
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()
