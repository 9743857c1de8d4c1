"""One rank of the 2-process DDP training test; run by ``torch.distributed.run``.

``python -m torch.distributed.run --standalone --nproc_per_node 2 ddp_train_worker.py GPKG OUT
MODE``: trains the tiny model on GPKG and writes ``OUT/rank{r}.pt`` with the final student,
teacher and queue of this rank.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from urbangeo.model.training import train
from urbangeo.progress import set_mode


def main(gpkg: str, out: str, mode: str) -> None:
    set_mode("none")
    torch.set_num_threads(1)
    result = train(
        gpkg,
        run_dir=out,
        model="urbangeo-tiny-vit",
        mode=mode,
        epochs=6,
        batch_size=4,
        lr=1e-3,
        warmup_steps=1,
        weight_decay=0.0,
        queue_size=8 if mode == "urbanln" else None,
        val_fraction=0.2,
        overwrite=True,
    )
    rank = int(__import__("os").environ["RANK"])
    assert not dist.is_initialized()  # train() tore down the group it created
    torch.save(
        {
            "model": result.model.state_dict(),
            "teacher": result.teacher.state_dict() if result.teacher is not None else None,
            "queue": result.img_queue.features if result.img_queue is not None else None,
            "step": result.step,
            "total_steps": result.total_steps,
            "pairs_train": result.counts["pairs_train"],
        },
        Path(out) / f"rank{rank}.pt",
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
