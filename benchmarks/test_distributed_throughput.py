"""Kernel throughput of ``ntkcheck.distributed_ntk`` on 1 and 2 ranks of a gloo process group (CPU).

Each case spawns ``world`` CPU processes (one intra-op thread each) that join a gloo group
and compute the same float64 MLP kernel gathered to rank 0: one warm-up call, then
``REPEATS`` timed calls between barriers.  Rank 0 reports the median of its wall-clock
times, which is the group's time (the gather ends on rank 0).  pytest-benchmark times the
whole spawn (process start-up included, one round); ``extra_info`` holds the in-group
median ``kernel_s`` and ``throughput`` = kernel entries per second from it, the figure to
compare between 1 and 2 ranks (on a 2-core machine, 2 ranks share the cores with nothing
else only when the machine is otherwise idle).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import size_set

import ntkcheck as nk

REPEATS = 5


@dataclass(frozen=True)
class RankCase:
    """An MLP ``d``-``width``-``width``-1 kernel on N inputs, computed on ``world`` ranks."""

    n: int
    width: int
    world: int
    d: int = 8

    @property
    def id(self) -> str:
        return f"mlp-N{self.n}-d{self.d}-m{self.width}x2-ranks{self.world}-float64"


CASES = {
    "smoke": [RankCase(64, 8, 1), RankCase(64, 8, 2)],
    "cpu": [RankCase(4096, 256, 1), RankCase(4096, 256, 2)],
    "gpu": [RankCase(4096, 256, 1), RankCase(4096, 256, 2)],
}


def _problem(case: RankCase) -> tuple[torch.nn.Module, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    model = nk.MLP(case.d, [case.width] * 2, 1, generator=g, dtype=torch.float64)
    return model, torch.randn(case.n, case.d, generator=g, dtype=torch.float64)


def _worker(rank: int, case: RankCase, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=case.world)
    try:
        model, x = _problem(case)
        nk.distributed_ntk(model, x)  # warm-up
        times = []
        for _ in range(REPEATS):
            dist.barrier()
            start = time.perf_counter()
            k = nk.distributed_ntk(model, x)
            times.append(time.perf_counter() - start)
        if rank == 0:
            assert k is not None and k.shape == (case.n, case.n)
            Path(folder, "kernel_s").write_text(repr(statistics.median(times)))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("case", CASES[size_set()], ids=lambda c: c.id)
def test_distributed_kernel_throughput(benchmark, tmp_path, case: RankCase):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available")

    def run() -> float:
        folder = tmp_path / f"run-{time.monotonic_ns()}"
        folder.mkdir()
        mp.start_processes(_worker, args=(case, str(folder)), nprocs=case.world, join=True, start_method="spawn")
        return float(Path(folder, "kernel_s").read_text())

    kernel_s = benchmark.pedantic(run, rounds=1, iterations=1)
    if benchmark.stats is None:  # --benchmark-disable
        return
    benchmark.extra_info.update(
        family="mlp",
        case=case.id,
        library="ntkcheck",
        method=f"distributed_ntk, {case.world} gloo rank{'s' if case.world > 1 else ''}",
        n=case.n,
        ranks=case.world,
        kernel_s=kernel_s,
        throughput=case.n * case.n / kernel_s / 1e6,
        throughput_unit="M kernel entries/s (in-group median)",
    )
