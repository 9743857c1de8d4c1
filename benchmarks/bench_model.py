"""Model benchmarks: UrbanLN training-step cost and embedding throughput.

1. Training step (targets: UrbanLN <= 1.6x plain CLIP). One optimizer step of the real
   trainer (``urbangeo.model.training.Trainer``: 248-token IPSI text, EMA teacher forward, two
   4096-feature queues, distillation loss, AdamW, schedule, metrics row) against plain
   open_clip contrastive training of the same architecture and batch (77 tokens, ``ClipLoss``,
   the same AdamW), on the same decoded images and the same long captions, measured
   alternately in one process. The other trainer modes are timed too, as a breakdown.
2. Embedding (target: >= 0.9x). ``urbangeo.model.embed.embed_images`` end to end (JPEG files
   on disk: decoding, preprocessing, batching, forward) against the bare model forward
   (``encode_image`` under ``inference_mode``) on the same images preprocessed beforehand.

Random initialisation (no downloads). Run from the repository root::

    .venv/bin/python benchmarks/bench_model.py                      # tiny + ViT-B-16, CPU
    .venv/bin/python benchmarks/bench_model.py --models urbangeo-tiny-vit --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from urbangeo.model.data import collate_images, open_rgb
from urbangeo.progress import set_mode

WORDS = tuple(
    " ".join(
        [
            "street building tree car road sidewalk shop window facade roof balcony sign lamp",
            "pedestrian bicycle fence park bench brick glass concrete residential commercial",
            "tall low old new busy quiet wide narrow green grey red white parking crossing",
            "traffic light bus stop apartment office restaurant cafe market church school",
        ]
    ).split(" ")
)


def synthetic_images(folder: Path, n: int, size: int, seed: int = 0) -> list[str]:
    """``n`` noisy JPEGs (smooth colour fields plus noise: realistic decode cost)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    xx = np.mgrid[0:size, 0:size][1] / size
    for i in range(n):
        base = np.stack([np.sin(6 * xx * rng.uniform(0.5, 2) + c) for c in range(3)], -1)
        pixels = 127 + 80 * base + rng.normal(0, 20, (size, size, 3))
        path = folder / f"img{i:05d}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths


def long_captions(n: int, words: int, seed: int = 0) -> list[str]:
    """Captions of ``words`` random words (about 1.3 BPE tokens each)."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, words)) + "." for _ in range(n)]


def _median_times(
    fns: dict[str, Callable[[], object]], reps: int, warmup: int
) -> dict[str, dict[str, float]]:
    """Median wall and CPU seconds (this process, all its threads) of each function.

    The functions run alternately, so that changes in machine load hit all of them alike. On a
    shared machine the CPU time is the steadier measure (with one thread it is the work done).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for key, fn in fns.items():
            started, started_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[key].append(time.perf_counter() - started)
            cpu[key].append(time.process_time() - started_cpu)
    return {k: {"wall": statistics.median(wall[k]), "cpu": statistics.median(cpu[k])} for k in fns}


def bench_training(model: str, batch: int, reps: int, warmup: int, words: int, tmp: Path) -> dict:
    """Seconds per optimizer step: trainer modes vs plain open_clip contrastive training."""
    import open_clip

    from urbangeo.model.clip import create_model
    from urbangeo.model.training import DistInfo, Trainer, param_groups
    from urbangeo.settings import TrainSettings

    n = batch * (reps + warmup)
    folder = tmp / f"train-{model}"
    paths = synthetic_images(folder / "images", n, 256)
    captions = long_captions(n, words)
    pd.DataFrame({"path": paths, "caption": captions}).to_csv(folder / "pairs.csv", index=False)

    def make_trainer(mode: str) -> Trainer:
        cfg = TrainSettings(
            model=model, mode=mode, epochs=1, batch_size=batch, lr=1e-5, val_fraction=0.0,
            warmup_steps=0, checkpoint_every=10**9, name=f"bench-{mode}",
        )  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Trainer(
                cfg, folder / "pairs.csv", folder, DistInfo(), resume=False, overwrite=True
            )

    ref = make_trainer("urbanln")
    batches = [
        collate_images([ref.train_set[i] for i in range(k * batch, (k + 1) * batch)])
        for k in range(reps + warmup)
    ]
    token_len = float((ref.pairs.train_tokens != 0).sum(1).float().mean())

    # plain open_clip: same architecture, native 77 tokens, ClipLoss, the same AdamW
    torch.manual_seed(0)
    plain = {"model": create_model(model, context_length=77).model.train()}
    tok77 = open_clip.get_tokenizer(model)(ref.pairs.train["caption"].tolist(), context_length=77)
    plain["opt"] = torch.optim.AdamW(param_groups(plain["model"], 0.1), lr=1e-5, fused=True)
    loss_fn = open_clip.ClipLoss()
    state = {"k": 0}

    def plain_step() -> None:
        b = batches[state["k"] % len(batches)]
        state["k"] += 1
        plain["opt"].zero_grad(set_to_none=True)
        img, txt, scale = plain["model"](b["images"], tok77[b["index"]])
        loss_fn(img, txt, scale).backward()
        plain["opt"].step()

    class _Bar:
        def update(self, *a, **k) -> None:
            pass

    def trainer_step(trainer: Trainer) -> Callable[[], None]:
        counter = {"k": 0}

        def step() -> None:
            b = batches[counter["k"] % len(batches)]
            counter["k"] += 1
            trainer.position = 0  # one-batch window; the data order does not matter here
            trainer.n_batches = 1
            trainer._train_step(iter([b]), _Bar())

        return step

    # the target pair alternately, in one loop; then the other modes one at a time (memory)
    times = _median_times({"plain_clip": plain_step, "urbanln": trainer_step(ref)}, reps, warmup)
    queue_size = ref.cfg.queue_size
    del ref
    plain.clear()
    for mode in ("no-ipsi", "no-distill", "urbanclip"):
        trainer = make_trainer(mode)
        times.update(_median_times({mode: trainer_step(trainer)}, reps, warmup))
        del trainer
    wall = {k: v["wall"] for k, v in times.items()}
    cpu = {k: v["cpu"] for k, v in times.items()}
    return {
        "model": model,
        "batch": batch,
        "caption_tokens_mean": round(token_len, 1),
        "queue_size": queue_size,
        "wall_s_per_step": {k: round(v, 4) for k, v in wall.items()},
        "cpu_s_per_step": {k: round(v, 4) for k, v in cpu.items()},
        "ratio_urbanln_vs_plain_wall": round(wall["urbanln"] / wall["plain_clip"], 3),
        "ratio_urbanln_vs_plain_cpu": round(cpu["urbanln"] / cpu["plain_clip"], 3),
        "ratio_urbanclip_mode_vs_plain_cpu": round(cpu["urbanclip"] / cpu["plain_clip"], 3),
    }


def bench_embedding(
    model: str, n: int, batch: int, workers: list[int], reps: int, size: int, tmp: Path
) -> dict:
    """Images per second: the embed pipeline from JPEG files vs the bare forward."""
    from urbangeo.model.embed import embed_images
    from urbangeo.model.encoders import build_encoder

    paths = synthetic_images(tmp / f"embed-{model}", n, size, seed=1)
    encoder = build_encoder("random", model=model)
    pixels = torch.stack([encoder.transform(open_rgb(p)) for p in paths])

    def bare() -> None:
        with torch.inference_mode():
            for start in range(0, n, batch):
                encoder.module(pixels[start : start + batch])

    fns = {"bare_forward": bare}
    for w in workers:
        fns[f"pipeline_workers{w}"] = lambda w=w: embed_images(
            encoder, paths, batch_size=batch, num_workers=w
        )
    times = _median_times(fns, reps, warmup=1)
    rates = {k: round(n / v["wall"], 2) for k, v in times.items()}
    cpu_rates = {k: round(n / v["cpu"], 2) for k, v in times.items() if k.endswith(("d", "0"))}
    return {
        "model": model,
        "images": n,
        "image_size": size,
        "batch": batch,
        "images_per_s_wall": rates,
        "ratio_pipeline_vs_bare_wall": {
            k: round(v / rates["bare_forward"], 3) for k, v in rates.items() if k != "bare_forward"
        },
        # CPU time of this process: meaningful without workers (theirs is not counted)
        "images_per_cpu_s": cpu_rates,
        "ratio_pipeline_workers0_vs_bare_cpu": round(
            cpu_rates["pipeline_workers0"] / cpu_rates["bare_forward"], 3
        )
        if "pipeline_workers0" in cpu_rates
        else None,
    }


def machine() -> dict:
    """Where the numbers come from."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="urbangeo-tiny-vit,ViT-B-16")
    parser.add_argument("--train-batch", type=int, default=None, help="default: 32 tiny, 8 B-16")
    parser.add_argument("--train-reps", type=int, default=5)
    parser.add_argument("--caption-words", type=int, default=120)
    parser.add_argument("--embed-images", type=int, default=None, help="default: 512 / 64")
    parser.add_argument("--embed-batch", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--workers", default="0,2")
    parser.add_argument("--embed-reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip", choices=("train", "embed"), action="append", default=[])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    set_mode("none")
    results: dict = {"machine": machine(), "train": [], "embed": []}
    with tempfile.TemporaryDirectory(prefix="urbangeo-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for model in args.models.split(","):
            tiny = model.startswith("urbangeo-tiny")
            if "train" not in args.skip:
                batch = args.train_batch or (32 if tiny else 8)
                warmup = 2 if tiny else 1
                out = bench_training(model, batch, args.train_reps, warmup, args.caption_words, tmp)
                results["train"].append(out)
                print(json.dumps(out), flush=True)
            if "embed" not in args.skip:
                n = args.embed_images or (512 if tiny else 64)
                workers = [int(w) for w in args.workers.split(",")]
                out = bench_embedding(
                    model, n, args.embed_batch, workers, args.embed_reps, args.image_size, tmp
                )
                results["embed"].append(out)
                print(json.dumps(out), flush=True)
    results["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
