"""GPU check of the model stages: AMP training speed, embedding speed, a 2-process DDP smoke run.

On a CUDA machine::

    .venv/bin/python benchmarks/gpu_check.py                 # ViT-B-16, bf16, batch 64
    .venv/bin/python benchmarks/gpu_check.py --json gpu.json --batch 128 --workers 8

It measures (random initialisation, synthetic JPEGs and long captions, nothing downloaded):

1. training steps/s of the real trainer (UrbanLN: 248 tokens, EMA teacher, 4096 queues) with
   bf16 autocast, and of plain open_clip contrastive training of the same model and batch;
2. embedding images/s: ``embed_images`` end to end (JPEG decoding in DataLoader workers) and
   the bare ``encode_image`` forward on preprocessed images;
3. a DDP smoke run: with 2+ GPUs, ``torchrun --nproc_per_node 2`` NCCL training of the tiny
   model; both ranks must end with identical weights.

Without CUDA everything falls back to the CPU (fp32, small batch, 2 gloo processes for the
smoke run) and says so: the script runs anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import long_captions, machine, synthetic_images

from urbangeo.model.data import collate_images, open_rgb
from urbangeo.progress import set_mode


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _per_second(count: float, started: float, device: torch.device) -> float:
    """``count`` per second since ``started``, once ``device`` has finished its work."""
    _sync(device)
    return count / (time.perf_counter() - started)


def check_training(model: str, batch: int, steps: int, device: torch.device, tmp: Path) -> dict:
    """Steps/s of the UrbanLN trainer (bf16 on CUDA) and of plain open_clip training."""
    import open_clip

    from urbangeo.model.clip import create_model
    from urbangeo.model.data import autocast, resolve_precision
    from urbangeo.model.training import DistInfo, Trainer, param_groups
    from urbangeo.settings import TrainSettings

    n = batch * (steps + 2)
    folder = tmp / "train"
    paths = synthetic_images(folder / "images", n, 256)
    pd.DataFrame({"path": paths, "caption": long_captions(n, 120)}).to_csv(
        folder / "pairs.csv", index=False
    )
    precision = "bf16" if device.type == "cuda" else "fp32"
    cfg = TrainSettings(
        model=model, epochs=1, batch_size=batch, lr=1e-5, val_fraction=0.0, warmup_steps=0,
        checkpoint_every=10**9, precision=precision, device=str(device), name="gpu-check",
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = Trainer(
            cfg, folder / "pairs.csv", folder, DistInfo(), resume=False, overwrite=True
        )
    batches = [
        collate_images([trainer.train_set[i] for i in range(k * batch, (k + 1) * batch)])
        for k in range(steps + 2)
    ]

    class _Bar:
        def update(self, *a, **k) -> None:
            pass

    def run_trainer(trainer: Trainer) -> float:
        for k, b in enumerate(batches):
            if k == 2:
                _sync(device)
                started = time.perf_counter()
            trainer.position, trainer.n_batches = 0, 1
            trainer._train_step(iter([b]), _Bar())
        return _per_second(steps, started, device)

    urbanln = run_trainer(trainer)
    tokens77 = open_clip.get_tokenizer(model)(
        trainer.pairs.train["caption"].tolist(), context_length=77
    )
    del trainer
    torch.manual_seed(0)
    plain = create_model(model, context_length=77, device=device).model.train()
    opt = torch.optim.AdamW(param_groups(plain, 0.1), lr=1e-5, fused=True)
    loss_fn = open_clip.ClipLoss()
    dtype = resolve_precision(precision, device)
    for k, b in enumerate(batches):
        if k == 2:
            _sync(device)
            started = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            img, txt, scale = plain(b["images"].to(device), tokens77[b["index"]].to(device))
            loss = loss_fn(img.float(), txt.float(), scale)
        loss.backward()
        opt.step()
    plain_rate = _per_second(steps, started, device)
    return {
        "model": model,
        "batch": batch,
        "precision": precision,
        "urbanln_steps_per_s": round(urbanln, 3),
        "plain_clip_steps_per_s": round(plain_rate, 3),
        "urbanln_step_cost_vs_plain": round(plain_rate / urbanln, 3),
        "urbanln_images_per_s": round(urbanln * batch, 1),
    }


def check_embedding(
    model: str, n: int, batch: int, workers: int, device: torch.device, tmp: Path
) -> dict:
    """Images/s of the embed pipeline (files → vectors) and of the bare forward."""
    from urbangeo.model.data import autocast, resolve_precision
    from urbangeo.model.embed import embed_images
    from urbangeo.model.encoders import build_encoder

    paths = synthetic_images(tmp / "embed", n, 256, seed=1)
    encoder = build_encoder("random", model=model).to(device)
    embed_images(encoder, paths[:batch], batch_size=batch, device=device)  # warm-up
    started = time.perf_counter()
    embed_images(encoder, paths, batch_size=batch, num_workers=workers, device=device)
    pipeline = _per_second(n, started, device)

    pixels = torch.stack([encoder.transform(open_rgb(p)) for p in paths])
    dtype = resolve_precision("auto", device)
    with torch.inference_mode():
        _sync(device)
        started = time.perf_counter()
        for start in range(0, n, batch):
            with autocast(device, dtype):
                encoder.module(pixels[start : start + batch].to(device, non_blocking=True))
    bare = _per_second(n, started, device)
    return {
        "model": model,
        "images": n,
        "batch": batch,
        "workers": workers,
        "pipeline_images_per_s": round(pipeline, 1),
        "bare_forward_images_per_s": round(bare, 1),
        "ratio": round(pipeline / bare, 3),
    }


def ddp_worker(gpkg: str, out: str) -> None:
    """One rank of the smoke run (started by torchrun through ``--ddp-worker``)."""
    from urbangeo.model.training import train

    result = train(
        gpkg, run_dir=out, model="urbangeo-tiny-vit", epochs=2, batch_size=8, lr=1e-3,
        queue_size=32, val_fraction=0.2, overwrite=True,
    )  # fmt: skip
    rank = int(os.environ["RANK"])
    torch.save(
        {k: v.cpu() for k, v in result.model.state_dict().items()}, Path(out) / f"rank{rank}.pt"
    )


def check_ddp(tmp: Path) -> dict:
    """2 processes under torchrun: NCCL on 2 GPUs, else gloo on the CPU."""
    gpus = torch.cuda.device_count()
    backend = "nccl (2 GPUs)" if gpus >= 2 else "gloo (CPU fallback: fewer than 2 GPUs)"
    folder = tmp / "ddp"
    paths = synthetic_images(folder / "images", 48, 64, seed=2)
    pd.DataFrame({"path": paths, "caption": long_captions(48, 60)}).to_csv(
        folder / "pairs.csv", index=False
    )
    env = dict(os.environ)
    if gpus < 2:
        env["CUDA_VISIBLE_DEVICES"] = ""
        env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", __file__, "--ddp-worker"]
    command += [str(folder / "pairs.csv"), str(folder)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        return {"backend": backend, "ok": False, "error": done.stderr[-2000:]}
    a, b = (torch.load(folder / f"rank{r}.pt") for r in (0, 1))
    same = all(torch.equal(a[k], b[k]) for k in a)
    return {"backend": backend, "ok": same, "identical_weights": same, "seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--batch", type=int, default=None, help="default: 64 on GPU, 4 on CPU")
    parser.add_argument("--steps", type=int, default=None, help="default: 20 on GPU, 2 on CPU")
    parser.add_argument("--images", type=int, default=None, help="default: 2048 / 32")
    parser.add_argument("--workers", type=int, default=None, help="default: 8 on GPU, 0 on CPU")
    parser.add_argument("--skip", choices=("train", "embed", "ddp"), action="append", default=[])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--ddp-worker", nargs=2, metavar=("PAIRS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    set_mode("none")
    if args.ddp_worker:
        ddp_worker(*args.ddp_worker)
        return {}
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        print("No CUDA GPU: falling back to the CPU (fp32, small batches).", flush=True)
    results: dict = {"machine": machine(), "device": str(device)}
    with tempfile.TemporaryDirectory(prefix="urbangeo-gpu-check-") as tmp_name:
        tmp = Path(tmp_name)
        if "train" not in args.skip:
            batch, steps = args.batch or (64 if cuda else 4), args.steps or (20 if cuda else 2)
            results["train"] = check_training(args.model, batch, steps, device, tmp)
            print("train:", json.dumps(results["train"]), flush=True)
        if "embed" not in args.skip:
            n, workers = args.images or (2048 if cuda else 32), args.workers
            workers = workers if workers is not None else (8 if cuda else 0)
            batch = args.batch or (128 if cuda else 16)
            results["embed"] = check_embedding(args.model, n, batch, workers, device, tmp)
            print("embed:", json.dumps(results["embed"]), flush=True)
        if "ddp" not in args.skip:
            results["ddp"] = check_ddp(tmp)
            print("ddp:", json.dumps(results["ddp"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
