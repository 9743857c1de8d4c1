"""Two gloo ranks on CPU for test_distill: uneven concat_all_gather, shared queue, EMA via DDP.

Run as ``python ddp_gather_worker.py OUT_DIR``; each rank writes ``OUT_DIR/rank{r}.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from urbangeo.model.distill import FeatureQueue, concat_all_gather, ema_update


def run(rank: int, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=2
    )
    try:
        local = torch.full((3 + 2 * rank, 4), float(rank))  # 3 rows on rank 0, 5 on rank 1
        gathered = concat_all_gather(local)
        queue = FeatureQueue(4, size=16)
        queue.enqueue(concat_all_gather(torch.randn(3 + 2 * rank, 4)))

        torch.manual_seed(0)  # same initial weights on both ranks, as DDP requires
        student = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 2))
        teacher = torch.nn.Linear(4, 2)
        with torch.no_grad():
            teacher.weight.zero_()
            teacher.bias.zero_()
        ema_update(teacher, student, momentum=0.5)
        ema_ok = torch.allclose(teacher.weight, 0.5 * student.module.weight)

        torch.save(
            {"gathered": gathered, "queue": queue.features, "ema_ok": ema_ok},
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    # fork: the children reuse this fresh interpreter instead of importing torch again
    mp.start_processes(run, args=(sys.argv[1],), nprocs=2, join=True, start_method="fork")
