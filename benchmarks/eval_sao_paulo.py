"""The whole method on real data: São Paulo's OSM extract and its population and jobs.

Runs the pipeline (rendered OSM tiles, OSM-grounded captions with CAPTURE consensus, a tiny
CLIP pre-trained on the CPU) on ``spo_osm.pbf``, with the real population and jobs of the H3
cells in ``spo_hexgrid_EPSG32723.gpkg.zip`` interpolated to 500 m square regions by area, and
compares, under a random and a spatial-block split, each beside the coordinates-only baseline:
UrbanLN, UrbanCLIP mode (77 tokens, plain contrastive), UrbanLN without IPSI, without
distillation, a randomly initialised encoder and simple image statistics.

    .venv/bin/python benchmarks/eval_sao_paulo.py --data ../shared/data/sao_paulo --out /tmp/sp-eval
"""

from __future__ import annotations

import argparse
import json
import zipfile
from pathlib import Path

from urbangeo.downstream.stages import predict_stage
from urbangeo.pipeline import run_pipeline
from urbangeo.progress import set_mode

VARIANTS = {
    "UrbanLN": ({"mode": "urbanln"}, "trained"),
    "UrbanCLIP mode": ({"mode": "urbanclip"}, "trained"),
    "UrbanLN without IPSI": ({"mode": "no-ipsi"}, "trained"),
    "UrbanLN without distillation": ({"mode": "no-distill"}, "trained"),
    "random encoder": ({"mode": "urbanln"}, "random"),
    "image statistics": ({"mode": "urbanln"}, "image-stats"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/sao_paulo"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/sp-eval"))
    parser.add_argument("--cell-size", type=float, default=500.0)
    parser.add_argument("--block-size", type=float, default=1500.0)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    set_mode("none")
    args.out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(args.data / "spo_hexgrid_EPSG32723.gpkg.zip") as archive:
        archive.extractall(args.out)
    hexes = args.out / "spo_hexgrid_EPSG32723.gpkg"
    pbf = str(args.data / "spo_osm.pbf")
    base = {
        "grid": {"boundary_file": str(hexes), "cell_size": args.cell_size},
        "sample": {"roads": pbf},
        "tiles": {"osm": pbf},
        "caption": {"osm": pbf},
        "indicators": {"osm": False, "polygons": str(hexes), "columns": ["population", "jobs"]},
        "predict": {"seeds": args.seeds},
    }
    rows = []
    run_dir = args.out / "run"
    for name, (train, encoder) in VARIANTS.items():
        config = json.loads(json.dumps(base))
        config["train"] = {**train, "epochs": args.epochs}
        config["embed"] = {"encoder": encoder}
        run_pipeline(run_dir, config=config)
        gpkg = run_dir / "run.gpkg"
        for split in ("random", "block"):
            out = args.out / f"metrics-{name.replace(' ', '_')}-{split}.json"
            predict_stage(
                gpkg,
                seeds=args.seeds,
                split=split,
                block_size=args.block_size if split == "block" else None,
                output=out,
                overwrite=True,
            )
            report = json.loads(out.read_text())
            for target, result in report["targets"].items():
                m = result["metrics"]
                rows.append(
                    (name, split, target, m["mlp"]["r2"], m["ridge"]["r2"], m["coords_knn"]["r2"])
                )
    print("| features | split | target | MLP R² | ridge R² | coordinates k-NN R² |")
    print("|---|---|---|---|---|---|")
    for name, split, target, mlp, ridge, coords in rows:
        cells = [f"{r['mean']:.2f} ± {r['std']:.2f}" for r in (mlp, ridge, coords)]
        print(f"| {name} | {split} | {target} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
