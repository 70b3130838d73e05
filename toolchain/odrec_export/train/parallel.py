"""Data-parallel training on PyTorch's own engine: processes started by torchrun
(``torch.distributed.run``), gradients averaged by DistributedDataParallel (gloo on CPU, NCCL on GPU).

``odrec-export train ... --nproc N`` starts N processes on this machine through torch's launcher;
several machines run the same ``torchrun`` command each (README). Every process builds the same
batches in the same order (one seed) and trains on its own slice of each: ``--batch-size`` is the
global batch, so N processes of B/N rows take the same step as one process of B rows (tested). Shared
negatives are drawn from one seeded generator on every process, so they agree too. Rank 0 alone
evaluates on validation, decides (best epoch, early stop) and writes the checkpoint, in the same format
as a single-process run; the others follow its decision.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn


@dataclass
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This process's slice of a global batch (rows split as evenly as possible)."""
        if self.size == 1:
            return batch
        return torch.tensor_split(batch, self.size)[self.rank]

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` under DistributedDataParallel (parameters broadcast from rank 0 now, gradients
        averaged in backward); itself in a single process."""
        if self.size == 1:
            return module
        # Buffers (codes, masks) were made identically on every process and are synced once here;
        # re-broadcasting them every step would send the catalogue's codes each time.
        return nn.parallel.DistributedDataParallel(module, broadcast_buffers=False)

    def sum(self, values: list[float]) -> torch.Tensor:
        """Element-wise sums over the processes (float64)."""
        total = torch.tensor(values, dtype=torch.float64)
        if self.size > 1:
            dist.all_reduce(total)
        return total

    def share_state(self, module: nn.Module) -> None:
        """Give every process rank 0's weights (the state it selected on validation)."""
        if self.size > 1:
            for t in module.state_dict().values():
                dist.broadcast(t, src=0)

    def decide(self, value):
        """Rank 0's ``value`` on every process (validation decisions)."""
        if self.size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


_world = World()


def world() -> World:
    return _world


def init(device: str = "cpu") -> World:
    """Join the process group torchrun set up (WORLD_SIZE > 1 in the environment); a no-op otherwise."""
    global _world
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
        if device == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    _world = World(dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else World()
    return _world


def without_nproc(argv: list[str]) -> list[str]:
    """``argv`` without its ``--nproc N`` / ``--nproc=N`` (the launched processes must not relaunch)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``odrec-export <argv>`` in ``nproc`` processes under torchrun on this machine; its exit status."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "odrec_export.cli", *argv]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return subprocess.run(cmd, env=env).returncode
