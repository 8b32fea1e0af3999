"""torch.distributed for sharded evaluation and data-parallel training: one process per device,
launched by torchrun. `vlmbench run` and `vlmbench train` both set up through `init_distributed`.

No home-made launcher: the standard environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT)
set by torchrun, or by Slurm through torchrun, is all this reads. Backend gloo on CPU, nccl on GPU.
Every collective has a timeout so that a dead rank fails the run instead of hanging it.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from vlmbench.errors import UserError


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool = False  # this call created the process group, so `shutdown` destroys it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (any picklable object produced by our own code)."""
        if not self.active:
            return value
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_ok(self, ok: bool) -> bool:
        """True when every rank reports ok (used after each task to fail together, not hang)."""
        if not self.active:
            return ok
        flag = torch.tensor([0 if ok else 1], dtype=torch.int64)
        if self.device.type == "cuda":
            flag = flag.to(self.device)
        dist.all_reduce(flag)
        return int(flag.item()) == 0


def init_distributed(device: str | None = None, timeout_s: float = 1800.0) -> DistContext:
    """Set up the process group when launched by torchrun; a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wanted = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if wanted.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError("--device cuda was requested but CUDA is not available here; use --device cpu")
        torch_device = torch.device("cuda", local_rank if world > 1 else torch.cuda.current_device())
        torch.cuda.set_device(torch_device)
    else:
        torch_device = torch.device("cpu")
    owns = world > 1 and not dist.is_initialized()
    if owns:
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend,
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=torch_device if torch_device.type == "cuda" else None,
        )
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=torch_device, owns_group=owns)


def shutdown(ctx: DistContext) -> None:
    """Destroy the process group if `ctx`'s call created it (a caller that set one up, such as
    `vlmbench sweep` running several evaluations under one torchrun, keeps it)."""
    if ctx.active and ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()
