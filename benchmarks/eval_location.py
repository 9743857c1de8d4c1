"""Evaluation: GeoCLIP's pretrained location features against the coordinates k-NN (issue #17).

Data (the argument): ``beijing/regions.csv`` of the shared evaluation data, 4,587 Beijing
regions with their WGS84 centre, population (WorldPop), carbon (ODIAC) and GDP (exactly 10000.0
is a fill value, treated as missing). Each centre goes through GeoCLIP's location encoder with
the weights the geoclip wheel ships (:func:`urbangeo.model.encoders.geoclip.encode_latlon`, the
code behind ``embed --encoder geoclip-location`` and predict's ``location`` baseline; nothing is
downloaded). The 512 values are scored with :func:`urbangeo.downstream.predict.evaluate`
(ln(1+y), 6:2:2, ridge and the MLP head, ``--seeds`` seeds) under the random split and a spatial
block split (``--block-size`` metres, default 5000), beside the coordinates-only k-NN on the
same splits. Run from the repository root (needs ``pip install '.[location]'``)::

    .venv/bin/python benchmarks/eval_location.py ../shared/data/beijing/regions.csv
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import _evaluation as ev
import numpy as np
import pandas as pd

from urbangeo import constants as C
from urbangeo.downstream.tables import align, indicators_frame
from urbangeo.model.encoders.geoclip import encode_latlon, geoclip_version
from urbangeo.progress import set_mode

COLUMNS = {
    "split": "split",
    "target": "target",
    "n": "n",
    "GeoCLIP ridge R²": "ridge_r2",
    "GeoCLIP MLP R²": "mlp_r2",
    "coords k-NN R²": "coords_r2",
}


def load_regions(csv: Path) -> pd.DataFrame:
    """Region id (the tile), lon, lat and the targets (GDP fill values as missing)."""
    return ev.beijing_regions(csv)[[C.REGION_ID, "lon", "lat", *ev.BEIJING_TARGETS]]


def location_features(regions: pd.DataFrame, device: str) -> tuple[pd.DataFrame, float]:
    """GeoCLIP's 512 location values per region, and the seconds they took."""
    started = time.perf_counter()
    vectors = encode_latlon(regions[["lat", "lon"]].to_numpy(np.float64), device=device)
    seconds = time.perf_counter() - started
    return ev.vectors_frame(regions[C.REGION_ID].to_numpy(), vectors), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path, help="The shared beijing/regions.csv.")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--block-size", type=float, default=5000.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, help="Write results.md and results.json here.")
    args = parser.parse_args()
    set_mode("none")

    regions = load_regions(args.csv)
    indicators = indicators_frame(regions)  # lon/lat: the coordinates of k-NN and the blocks
    features, encode_seconds = location_features(regions, args.device)
    dataset = align(features, indicators, name="beijing geoclip-location")
    rows, timings = [], {"encode": round(encode_seconds, 1)}
    splits = ev.each_split(
        dataset, ev.BEIJING_TARGETS, seeds=args.seeds, block_size=args.block_size
    )
    for split, report, seconds in splits:
        timings[split] = round(seconds, 1)
        for target, result in report.targets.items():
            m = result.metrics
            rows.append(
                {
                    "split": split if split == "random" else f"block {args.block_size:g} m",
                    "target": target,
                    "n": result.n_regions,
                    "ridge_r2": ev.score_cell(m, "ridge"),
                    "mlp_r2": ev.score_cell(m, "mlp"),
                    "coords_r2": ev.score_cell(m, "coords_knn"),
                }
            )
        print(ev.markdown(rows[-len(report.targets) :], COLUMNS), flush=True)
    table = ev.markdown(rows, COLUMNS)
    print(f"\ngeoclip {geoclip_version()}, {len(features):,} regions, {args.seeds} seeds\n")
    print(table)
    print(json.dumps(timings))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.md").write_text(table + "\n")
        (args.out / "results.json").write_text(
            json.dumps({"rows": rows, "seconds": timings}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
