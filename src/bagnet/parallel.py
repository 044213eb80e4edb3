"""Data-parallel evaluation under ``torchrun``: each process takes a disjoint shard of the same seeded image list,
the partial results are merged on every rank, and only rank 0 writes files.

Splitting is opt-in: inside ``with sharded():`` (the CLI enters it under ``torchrun`` for the commands that split
their images) the helpers split and merge; outside it — one process, or a process group that belongs to
something else, such as DDP training evaluating on rank 0 alone — every helper is the identity.
Randomness that belongs to an image (scrambling orders, region pairs, random masking orders) is drawn from a
generator seeded by the run's seed and the image's dataset index (:func:`item_generator`), so a result does not
depend on how the images were split among processes.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist


_SHARDED: contextvars.ContextVar[bool] = contextvars.ContextVar("bagnet_sharded", default=False)


@contextlib.contextmanager
def sharded() -> Iterator[None]:
    """Within this block, dataset iteration takes this process's shard and results are merged across the running
    process group (every process must enter it and run the same calls)."""
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("sharded() needs a running process group (launch with torchrun; see init_from_env)")
    token = _SHARDED.set(True)
    try:
        yield
    finally:
        _SHARDED.reset(token)


def world() -> tuple[int, int]:
    """``(rank, number of processes)`` inside :func:`sharded`; ``(0, 1)`` outside it."""
    if _SHARDED.get() and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process writes files and prints results (rank 0 of a :func:`sharded` run, or the only one)."""
    return world()[0] == 0


def launched() -> bool:
    """Whether ``torchrun`` (or another launcher) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: Any = None) -> Any:
    """Join the process group ``torchrun`` describes (NCCL on CUDA, Gloo otherwise) and return the device this
    rank uses: ``cuda`` becomes ``cuda:LOCAL_RANK``. Without a launcher, ``device`` unchanged."""
    if not launched():
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device is not None and str(device).startswith("cuda")
    if cuda:
        device = f"cuda:{local}" if str(device) == "cuda" else device
        torch.cuda.set_device(torch.device(device))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return device


def same_on_every_rank(module: torch.nn.Module) -> torch.nn.Module:
    """Inside :func:`sharded`, give every rank rank 0's parameters and buffers (in place; returned for chaining).

    For models whose weights were not read from a file (a named random model such as ``bagnet9``): each process
    drew its own, so without this the ranks of one run would evaluate different models. The global random state is
    left alone. Outside :func:`sharded` (one process, or someone else's process group) it does nothing."""
    rank, size = world()
    if size == 1:
        return module
    nccl = dist.get_backend() == "nccl"
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if nccl and tensor.device.type != "cuda":  # NCCL moves CUDA tensors only
                staged = tensor.detach().to(torch.device("cuda", torch.cuda.current_device()))
                dist.broadcast(staged, src=0)
                tensor.copy_(staged.to(tensor.device))
            else:
                dist.broadcast(tensor.data, src=0)
    return module


def shard(order: Sequence[int]) -> list[int]:
    """This rank's part of ``order``: every ``world``-th item from its rank on (all of it for one process)."""
    rank, size = world()
    return list(order)[rank::size]


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` for one process)."""
    rank, size = world()
    if size == 1:
        return [obj]
    out: list[Any] = [None] * size
    dist.all_gather_object(out, obj)
    return out


def merged_sum(value: Any) -> Any:
    """``value`` summed over ranks: numbers, and lists and dicts of them (element by element)."""
    parts = gather(value)
    return _add_all(parts)


def merged_dict(value: dict) -> dict:
    """The union of every rank's dict (rank order)."""
    out: dict = {}
    for part in gather(value):
        out.update(part)
    return out


def merged_cat(*tensors: torch.Tensor, key: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every rank's tensors concatenated along dim 0 and ordered by ``key`` (e.g. dataset indices), on the CPU."""
    parts = gather([t.cpu() for t in (*tensors, key)])
    joined = [_cat([p[i] for p in parts]) for i in range(len(tensors) + 1)]
    order = joined[-1].argsort(stable=True)
    return tuple(t[order] for t in joined[:-1])


def _cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate, leaving out the empty parts of processes that had no images (their shapes may differ)."""
    full = [t for t in tensors if t.numel()]
    return torch.cat(full) if full else tensors[0]


def item_generator(seed: int, index: int) -> torch.Generator:
    """The generator for the randomness of dataset item ``index`` in a run seeded ``seed``."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(index)) % (2**63))


def _add_all(parts: list[Any]) -> Any:
    first = parts[0]
    if isinstance(first, dict):
        return {k: _add_all([p[k] for p in parts]) for k in first}
    if isinstance(first, (list, tuple)):
        return type(first)(_add_all([p[i] for p in parts]) for i in range(len(first)))
    total = first
    for p in parts[1:]:
        total = total + p
    return total
