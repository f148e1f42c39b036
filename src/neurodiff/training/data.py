"""Training data as tensors or datasets, served in seeded, resumable batch order."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset


class TensorData:
    """Named tensors with a common first dimension; a batch is a dict of slices.

    >>> data = TensorData(x=features, cond=labels)
    >>> batch = data.take(torch.tensor([0, 5, 7]))   # {"x": ..., "cond": ...}
    """

    def __init__(self, **tensors: torch.Tensor):
        if not tensors:
            raise ValueError("TensorData needs at least one tensor")
        lengths = {name: len(t) for name, t in tensors.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"all tensors must have the same number of rows, got {lengths}")
        self.tensors = {name: torch.as_tensor(t) for name, t in tensors.items()}

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def take(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: t[index] for name, t in self.tensors.items()}


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of `n` rows used in `epoch`: a pure function of (seed, epoch)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


def batches_per_epoch(n: int, batch_size: int, processes: int = 1) -> int:
    """Batches of one epoch; with several processes a last batch too small to share is left out."""
    full, rest = divmod(n, batch_size)
    return full + (rest >= processes)


def iterate_batches(
    data: TensorData | Dataset,
    order: torch.Tensor,
    batch_size: int,
    start: int = 0,
    num_workers: int = 0,
    *,
    group: Any = None,
    with_sizes: bool = False,
    loader_seed: int = 0,
) -> Iterator[Any]:
    """Yield the batches of `order` from batch number `start` on (to resume mid-epoch).

    With a torchrun `group` (:class:`~neurodiff.training.distributed.ProcessGroup`), each batch is
    this process's share of the global batch; `with_sizes` yields ``(batch, global batch size)``.
    A torch Dataset goes through a DataLoader whose workers' seed comes from `loader_seed` (the trainer
    passes one per epoch), not from torch's global generator: drawing from that would shift every later
    random draw (e.g. dropout) each time an epoch is started, so a resumed run would differ from an
    unbroken one.
    """
    chunks = list(torch.split(order, batch_size))
    processes = group.world_size if group is not None else 1
    if len(chunks[-1]) < processes:  # a last batch too small to give every process a row
        chunks.pop()
    sizes = [len(c) for c in chunks][start:]
    chunks = [group.shard(c) if group is not None else c for c in chunks[start:]]
    if isinstance(data, TensorData):
        batches = (data.take(index) for index in chunks)
    else:
        batches = iter(DataLoader(data, batch_sampler=[c.tolist() for c in chunks], num_workers=num_workers,
                                  generator=torch.Generator().manual_seed(loader_seed)))
    if with_sizes:
        yield from zip(batches, sizes)
    else:
        yield from batches


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor inside a (nested) batch to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch
