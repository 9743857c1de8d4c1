"""Benchmark: ``urbangeo.downstream.predict.evaluate`` at the paper's scale on synthetic data.

5,000 regions × 512-dimensional embeddings × 5 indicators × 5 seeds (25 MLP heads, 25 ridge
fits, 25 coordinate k-NN fits), random 6:2:2 splits. Each indicator is a known function of
the embedding (a linear part, a non-linear part and noise), so the R² printed beside the
timings shows that the heads learned something. Timings are wall-clock seconds of one run
after a warm-up run on a tenth of the data (torch import, first calls); the MLP, ridge and
k-NN parts are timed separately by calling the same functions ``evaluate`` calls.

Run from the repository root (not part of the test suite)::

    .venv/bin/python benchmarks/bench_downstream.py            # the default size
    .venv/bin/python benchmarks/bench_downstream.py --regions 1000 --dims 128 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time

import numpy as np
import pandas as pd

from urbangeo import constants as C
from urbangeo.downstream.heads import DEFAULT_MLP, HeadTask, fit_knn, fit_mlp_heads, fit_ridge
from urbangeo.downstream.predict import evaluate
from urbangeo.downstream.splits import random_split
from urbangeo.downstream.tables import align, embeddings_frame, indicators_frame
from urbangeo.progress import set_mode


def synthetic(n: int, dims: int, targets: int, seed: int = 0):
    """Embeddings and ``targets`` indicators with ln(1+y) = linear + tanh part + noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, dims)).astype(np.float64)
    side = int(np.ceil(np.sqrt(n)))
    ids = [f"{i % side}_{i // side}" for i in range(n)]
    table = {
        C.REGION_ID: ids,
        "x": (np.arange(n) % side) * 1000.0,
        "y": (np.arange(n) // side) * 1000.0,
    }
    for t in range(targets):
        w = rng.normal(size=dims) / np.sqrt(dims)
        v = rng.normal(size=dims) / np.sqrt(dims)
        log_y = 4 + X @ w + np.tanh(X @ v) + 0.3 * rng.normal(size=n)
        table[f"indicator_{t}"] = np.expm1(log_y)
    emb = pd.DataFrame(X, columns=[f"e{i}" for i in range(dims)])
    emb.insert(0, C.REGION_ID, ids)
    return align(embeddings_frame(emb), indicators_frame(pd.DataFrame(table)), name="synthetic")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regions", type=int, default=5000)
    parser.add_argument("--dims", type=int, default=512)
    parser.add_argument("--targets", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--json", help="Also write the numbers as JSON to this file.")
    args = parser.parse_args()
    set_mode("none")

    evaluate(synthetic(max(50, args.regions // 10), args.dims, 1), seeds=1)  # warm-up
    ds = synthetic(args.regions, args.dims, args.targets)

    started = time.perf_counter()
    report = evaluate(ds, seeds=args.seeds)
    total = time.perf_counter() - started

    # The parts, with the same calls evaluate makes.
    X = ds.features.to_numpy(np.float64)
    xy = ds.coords.to_numpy(np.float64)
    tasks = []
    for k, name in enumerate(ds.indicators.columns.drop(["x", "y"])):
        y = np.log1p(ds.indicators[name].to_numpy(np.float64))
        for seed in range(args.seeds):
            train, val, _ = random_split(len(y), seed)
            tasks.append(HeadTask(y, train, val, seed, key=k))
    parts = {}
    t0 = time.perf_counter()
    fit_mlp_heads(X, tasks)
    parts["mlp_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cache: dict = {}
    for task in tasks:
        fit_ridge(X, task, cache=cache)
    parts["ridge_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for task in tasks:
        fit_knn(xy, task)
    parts["coords_knn_s"] = time.perf_counter() - t0

    r2 = {
        model: float(np.mean([r.metrics[model]["r2"]["mean"] for r in report.targets.values()]))
        for model in ("mlp", "ridge", "coords_knn")
    }
    epochs = [e for r in report.targets.values() for e in r.chosen["mlp"]]
    result = {
        "regions": args.regions,
        "dims": args.dims,
        "targets": args.targets,
        "seeds": args.seeds,
        "heads": len(tasks),
        "evaluate_s": round(total, 2),
        **{k: round(v, 2) for k, v in parts.items()},
        "mean_test_r2": {k: round(v, 3) for k, v in r2.items()},
        "mlp_best_epoch_mean": round(float(np.mean(epochs)), 1),
        "mlp_config": vars(DEFAULT_MLP) if hasattr(DEFAULT_MLP, "__dict__") else {},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
