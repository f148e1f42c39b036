"""Data-parallel training through torch.distributed, for runs launched by ``torchrun``.

Nothing here starts processes: ``torchrun --nproc_per_node K`` (or ``accelerate launch``) starts
them and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address; the
:class:`~neurodiff.training.Trainer` reads them through :func:`current`, joins the process group
(gloo on CPU, NCCL on CUDA) and wraps the model in :class:`~torch.nn.parallel.DistributedDataParallel`.

How a global batch is shared: every rank draws the same seeded permutation of the rows, cuts it
into batches of the *global* batch size, and takes its own contiguous slice of each batch (sizes
differ by at most one row). DDP averages the ranks' gradients; each rank's loss is weighted by
``world · n_rank / n_batch`` first, so the averaged gradient is exactly the gradient of the mean
loss over the whole global batch, as in a one-process run. Gradient manipulation then sees the same
global gradient norm on every rank and takes the same decision; EMA, early stopping and the
optimiser stay identical on every rank. Validation scores are computed on rank 0 and broadcast.

>>> # torchrun --standalone --nproc_per_node 2 -m neurodiff impute fit --data t.csv --out model
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in a (possibly one-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, index: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous part of a global batch's row indices."""
        return torch.tensor_split(index, self.world_size)[self.rank] if self.active else index

    def loss_weight(self, n_rank: int, n_batch: int) -> float:
        """Weight of this rank's mean loss so that DDP's gradient average is the global batch mean."""
        return self.world_size * n_rank / n_batch if self.active else 1.0

    def sum(self, value: float) -> float:
        """Sum of a number over the ranks (the number itself in a one-process run)."""
        if not self.active:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=_collective_device())
        dist.all_reduce(tensor)
        return float(tensor.item())

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (a picklable object)."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, device=_collective_device())
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order (on every rank)."""
        if not self.active:
            return [value]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def _environment_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer (set by torchrun)") from None


def current() -> ProcessGroup:
    """The process group torchrun describes in the environment (one process when it does not)."""
    world = _environment_int("WORLD_SIZE", 1)
    rank = _environment_int("RANK", 0)
    local = _environment_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    return ProcessGroup(rank=rank, world_size=world, local_rank=local)


def is_main_process() -> bool:
    """True on rank 0 of a torchrun launch, and in a plain one-process run: the process that writes outputs."""
    return current().is_main


def join(group: ProcessGroup, device: torch.device) -> None:
    """Join the process group once per process (gloo on CPU, NCCL on CUDA); left at exit."""
    if not group.active or dist.is_initialized():
        return
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed; run with one process")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    atexit.register(_leave)


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def device_for(group: ProcessGroup, requested: torch.device) -> torch.device:
    """On CUDA each rank takes the GPU of its local rank; on CPU every rank shares the machine."""
    if group.active and requested.type == "cuda":
        return torch.device("cuda", group.local_rank)
    return requested


def wrap(model: nn.Module, group: ProcessGroup, device: torch.device) -> nn.Module:
    """The model as the loss function should call it: DDP-wrapped in a multi-process run.

    The loss functions of neurodiff's methods call the network's own methods too (a DiffAE loss
    calls ``net.latent(...)`` before ``net(x_t, t, z)``), so the wrapper forwards attribute access
    to the wrapped module; gradients of every parameter used in the step are averaged by DDP.
    """
    if not group.active:
        return model
    # Every trainable parameter must take part in every step (a part that sits training out is
    # frozen by its method, e.g. DDAE's site head without the adversarial loss); DDP says so if not.
    device_ids = [device.index] if device.type == "cuda" else None
    try:  # buffers are identical at the start and are not averaged (newer PyTorch's spelling first)
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=device_ids, forward_sync_buffers=False)
    except TypeError:
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)
    return Replica(ddp)


class Replica:
    """Calls go through DDP (so its gradient hooks are armed); attributes come from the module.

    `calls` counts the forward calls since the last :meth:`check_one_call`: DDP averages gradients
    only when the step called the wrapper's forward, exactly once.
    """

    def __init__(self, ddp: nn.parallel.DistributedDataParallel):
        self.ddp = ddp
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.ddp(*args, **kwargs)

    def check_one_call(self) -> None:
        calls, self.calls = self.calls, 0
        if calls != 1:
            raise RuntimeError(
                f"distributed training needs the loss function to call the model (its forward) exactly once "
                f"per step, this one called it {calls} times; gradients would not be averaged across processes")

    def __getattr__(self, name: str):
        return getattr(self.ddp.module, name)
