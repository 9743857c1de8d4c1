"""Peak memory (RSS) and time of ``embed``, ``predict`` and ``cluster`` by run size.

Synthetic runs (no OSM, no captions): a ``regions`` layer of N square cells, an ``images``
layer of N overhead rows pointing at a handful of small PNG files (the files repeat: what
matters is rows), ``embeddings.parquet`` of N x D float32 vectors and an ``indicators`` table
with one indicator. Each stage runs in a fresh subprocess, which reports its peak RSS
(``VmHWM`` of ``/proc/self/status``: ``ru_maxrss`` would carry the peak of the parent that
built the run) and seconds; the peak RSS of the imports alone is reported beside it.

    .venv/bin/python benchmarks/bench_memory.py --n 10000 100000          # embed, predict, cluster
    .venv/bin/python benchmarks/bench_memory.py --n 1000000 --stages predict cluster
    .venv/bin/python benchmarks/bench_memory.py --n 10000 --embed-encoder random  # tiny CLIP

``predict`` runs one seed, the ridge head and an MLP head of one short epoch (the MLP's
training time is not what is measured here), without baselines; ``cluster`` runs k=3.
Results: ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("embed", "predict", "cluster")
#: Distinct image files the synthetic images layer cycles through.
N_FILES = 16


def build_run(folder: Path, n: int, dim: int) -> Path:
    """A synthetic run of ``n`` regions (see the module docstring); returns its GeoPackage."""
    import geopandas as gpd
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    import shapely
    from PIL import Image

    from urbangeo import constants as C
    from urbangeo.io.gpkg import write_layers

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    side = int(np.ceil(np.sqrt(n)))
    col, row = np.arange(n) % side, np.arange(n) // side
    ids = np.array([f"{c}_{r}" for c, r in zip(col, row, strict=True)], dtype=object)
    x0, y0 = 500_000 + 100.0 * col, 6_700_000 + 100.0 * row
    regions = gpd.GeoDataFrame(
        {C.REGION_ID: ids, C.COL: col, C.ROW: row},
        geometry=shapely.box(x0, y0, x0 + 100, y0 + 100),
        crs="EPSG:32635",
    )
    files = []
    for i in range(N_FILES):
        rel = Path("images") / C.KIND_OVERHEAD / f"f{i}.png"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / rel)
        files.append(rel.as_posix())
    images = pd.DataFrame(
        {
            C.IMAGE_ID: [f"ov_{r}" for r in ids],
            C.KIND: C.KIND_OVERHEAD,
            C.REGION_ID: ids,
            C.PATH: [files[i % N_FILES] for i in range(n)],
            C.STATUS: C.STATUS_OK,
        }
    )
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    indicator = np.exp(vectors[:, :4].sum(1) * 0.5 + 1.0)
    indicators = pd.DataFrame({C.REGION_ID: ids, "population": indicator})
    gpkg = folder / "run.gpkg"
    write_layers(
        gpkg,
        {C.LAYER_REGIONS: regions, C.LAYER_IMAGES: images, C.LAYER_INDICATORS: indicators},
        overwrite=True,
    )
    columns = {C.REGION_ID: pa.array(ids.astype(str))}
    columns.update({f"e{i}": pa.array(vectors[:, i]) for i in range(dim)})
    meta = {"kind": C.KIND_OVERHEAD, "dim": dim, "encoder": "synthetic"}
    table = pa.table(columns).replace_schema_metadata({"urbangeo": json.dumps(meta)})
    pq.write_table(table, folder / C.EMBEDDINGS_PARQUET)
    return gpkg


def run_stage(stage: str, gpkg: Path, encoder: str) -> None:
    """Run one stage on ``gpkg`` (in this process)."""
    if stage == "embed":
        from urbangeo.model.stages import embed_stage

        # the synthetic parquet is the input of predict/cluster: embed elsewhere
        embed_stage(gpkg, encoder=encoder, model="urbangeo-tiny-vit", overwrite=True)
    elif stage == "predict":
        from urbangeo.downstream.heads import MLPConfig
        from urbangeo.downstream.stages import predict_stage

        predict_stage(
            gpkg,
            seeds=1,
            baselines=("none",),
            overwrite=True,
            mlp=MLPConfig(max_epochs=1, patience=1, min_steps_per_epoch=1, batch_size=4096),
        )
    elif stage == "cluster":
        from urbangeo.downstream.stages import cluster_stage

        cluster_stage(gpkg, k=3, overwrite=True)
    else:
        raise SystemExit(f"unknown stage {stage}")


CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
from benchmarks.bench_memory import run_stage, import_stage
from pathlib import Path
def hwm_mb():  # VmHWM starts afresh at exec; ru_maxrss would carry the parent's peak
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
import_stage({stage!r})
base = hwm_mb()
t = time.perf_counter()
if {run}:
    run_stage({stage!r}, Path({gpkg!r}), {encoder!r})
out = {{"base_mb": base, "peak_mb": hwm_mb(), "seconds": time.perf_counter() - t}}
print("RESULT " + json.dumps(out))
"""


def import_stage(stage: str) -> None:
    """Import what the stage imports, so that the baseline RSS counts the libraries."""
    import numpy  # noqa: F401
    import pandas  # noqa: F401

    import urbangeo.downstream.stages
    import urbangeo.model.stages

    if stage == "embed":
        import torch

        import urbangeo.model.embed
    else:
        import sklearn.cluster  # noqa: F401
        import torch  # noqa: F401

        import urbangeo.downstream.predict  # noqa: F401


def measure(stage: str, gpkg: Path, encoder: str) -> dict:
    """Peak RSS (MB) and seconds of ``stage`` on ``gpkg`` in a fresh process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "URBANGEO_QUIET": "1"}
    code = CHILD.format(root=str(ROOT), stage=stage, gpkg=str(gpkg), encoder=encoder, run=True)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr or proc.stdout)[-1500:]}
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    """Build runs of each size and measure each stage."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--embed-encoder", default="image-stats")
    parser.add_argument("--keep", type=Path, help="build the runs here (kept) instead of /tmp")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        for n in args.n:
            t = time.perf_counter()
            gpkg = base / f"run-{n}" / "run.gpkg"
            if not gpkg.exists():
                gpkg = build_run(gpkg.parent, n, args.dim)
            print(f"N={n:,} (D={args.dim}): built in {time.perf_counter() - t:.0f} s", flush=True)
            for stage in args.stages:
                if stage == "embed":  # keep the synthetic N x D parquet for predict/cluster
                    target = gpkg.parent.with_name(gpkg.parent.name + "-embed")
                    if not (target / "run.gpkg").exists():
                        import shutil

                        shutil.copytree(gpkg.parent, target)
                    out = measure(stage, target / "run.gpkg", args.embed_encoder)
                else:
                    out = measure(stage, gpkg, args.embed_encoder)
                if "error" in out:
                    print(f"  {stage:8} FAILED: {out['error']}", flush=True)
                    continue
                print(
                    f"  {stage:8} peak RSS {out['peak_mb']:8.0f} MB (imports {out['base_mb']:.0f}"
                    f" MB)  {out['seconds']:7.1f} s",
                    flush=True,
                )


if __name__ == "__main__":
    main()
