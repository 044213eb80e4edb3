"""Distributed training on CPU: two Gloo processes (spawned here, no torchrun) whose global BatchNorm computes what one
BatchNorm computes over the whole batch, and whose precise-BN pass agrees on every batch."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bagnet.train import TrainConfig
from bagnet.train.splits import EpochBatches

SEED, BATCH, N = 5, 4, 24


def _images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    scale, shift = torch.tensor([1.0, 3.0, 0.5])[:, None, None], torch.tensor([2.0, -1, 0])[:, None, None]
    return torch.randn(N, 3, 5, 5, generator=g) * scale + shift


def _loss_weights() -> torch.Tensor:
    """Per-value weights of a linear loss over one 16-image batch (its gradients reach the BatchNorm's statistics)."""
    return torch.randn(16, 3, 5, 5, generator=torch.Generator().manual_seed(1))


class _Images(torch.utils.data.Dataset):
    """The images with label 0; the first ``broken`` items read are all NaN (skipped by the batch's collation)."""

    def __init__(self, images: torch.Tensor, broken: int = 0) -> None:
        self.images, self.broken, self.reads = images, broken, 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        self.reads += 1
        return (torch.full_like(self.images[i], float("nan")) if self.reads <= self.broken else self.images[i]), 0


def _rank(rank: int, world: int, port: int, out: str) -> None:
    from bagnet.train.distributed import use_global_batchnorm
    from bagnet.train.transfer import precise_bn

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        images, device = _images(), torch.device("cpu")
        # 1. a training-mode step over this rank's half of one batch
        model = use_global_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(3)), device).train()
        half = images[rank * 8:(rank + 1) * 8].clone().requires_grad_()  # its gradient needs the other rank's
        y = model(half)
        (y * _loss_weights()[rank * 8:(rank + 1) * 8]).sum().backward()
        step = {"out": y.detach(), "grad": model[0].weight.grad.clone(), "bias": model[0].bias.grad.clone(),
                "input": half.grad.clone(),
                "mean": model[0].running_mean.clone(), "var": model[0].running_var.clone()}
        # 2. precise BN where the first global batch has its rank-1 half (2 images) all unreadable
        model = use_global_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(3)), device).train()
        config = TrainConfig(precise_bn=2, batch_size=BATCH, seed=SEED, workers=0)
        broken = _Images(images, broken=BATCH // 2 if rank == 1 else 0)
        layers = precise_bn(model, broken, config, 0, device, rank, world)
        torch.save({"step": step, "layers": layers, "mean": model[0].running_mean, "var": model[0].running_var,
                    "tracked": int(model[0].num_batches_tracked)}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(300)
def test_two_gloo_ranks_batchnorm_and_precise_bn_equal_one_process_over_the_whole_batch(tmp_path):
    mp.spawn(_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    images = _images()
    # one BatchNorm over the whole 16-image batch: the reference for the two halves
    plain = torch.nn.BatchNorm2d(3).train()
    batch = images[:16].clone().requires_grad_()
    whole = plain(batch)
    (whole * _loss_weights()).sum().backward()
    torch.testing.assert_close(torch.cat([r["step"]["out"] for r in ranks]), whole.detach())
    torch.testing.assert_close(ranks[0]["step"]["grad"] + ranks[1]["step"]["grad"], plain.weight.grad)
    torch.testing.assert_close(ranks[0]["step"]["bias"] + ranks[1]["step"]["bias"], plain.bias.grad)
    torch.testing.assert_close(torch.cat([r["step"]["input"] for r in ranks]), batch.grad)  # through the statistics
    for r in ranks:
        torch.testing.assert_close(r["step"]["mean"], plain.running_mean)
        torch.testing.assert_close(r["step"]["var"], plain.running_var)
    # precise BN: rank 1's first batch was unreadable, so both ranks skipped their first batch and read the next two;
    # the statistics are the average over those four batches' global statistics, computed here from the images
    used = [b for rank in (0, 1) for b in list(EpochBatches(N, BATCH, SEED, 0, rank, 2))[1:3]]
    pairs = [[i for i, _ in a] + [i for i, _ in b] for a, b in zip(used[:2], used[2:])]  # step k: both ranks' batch k
    means = torch.stack([images[p].mean((0, 2, 3)) for p in pairs])
    variances = torch.stack([images[p].transpose(0, 1).reshape(3, -1).var(1) for p in pairs])
    for r in ranks:
        assert r["layers"] == 1 and r["tracked"] == 2
        torch.testing.assert_close(r["mean"], means.mean(0))
        torch.testing.assert_close(r["var"], variances.mean(0))
