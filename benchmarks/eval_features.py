"""Evaluation: caption text, location and their combinations as feature sets (issue #17).

Every feature set of a city is scored in one :func:`urbangeo.downstream.predict.evaluate` call
per split, so all of them share the regions, splits, seeds and heads (ln(1 + y), 6:2:2, ridge
and the MLP head, ``--seeds`` seeds), beside the coordinates-only k-NN; sets of several blocks
are built as ``predict --features`` builds them (:func:`urbangeo.downstream.features.
standardise_blocks`, weights :func:`~urbangeo.downstream.features.block_weights` applied by the
heads). ``A+B (no block weights)`` is the same combination with every column weighted alike,
as the heads saw it before the block weights reached them.

``beijing DIR`` (the shared ``beijing`` folder): 4,587 regions (``regions.csv``; GDP exactly
10000.0 is a fill value, dropped); blocks ``captions``: each tile's LLM caption
(``satellite_captions.jsonl``, the sentences joined) through all-MiniLM-L6-v2, and
``geoclip``: GeoCLIP's location encoder at the tile centre; ``xy``: the centre's projected
coordinates (2 values). Blocks of 5 km by default.

``run GPKG`` (a run of ``urbangeo run``, e.g. the default São Paulo run that ``make run``
writes): blocks ``image``: the run's own ``embeddings.parquet`` (the trained image tower);
``captions-clip``: the run's selected captions through the run's trained text tower, and
``captions-minilm``: through MiniLM (both :class:`urbangeo.model.encoders.caption_text.
CaptionTextEncoder`, the code of ``embed --encoder caption-text``); ``geoclip`` at the region
centroids; ``xy`` their projected coordinates. The run's indicators; the regions it excludes
(edge cells) left out. Blocks of 1 km by default. ``--sets`` scores other combinations.

Vectors are cached in ``--out`` (not in the repository). Run from the repository root,
single-threaded on a shared machine::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_features.py beijing \\
        ../shared/data/beijing --out /tmp/eval-features-bj
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_features.py run sao-paulo/run.gpkg \\
        --out /tmp/eval-features-sp
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import _evaluation as ev
import numpy as np
import pandas as pd

from urbangeo import constants as C
from urbangeo.downstream.features import block_weights, standardise_blocks
from urbangeo.downstream.heads import DEFAULT_MLP
from urbangeo.downstream.tables import (
    Dataset,
    coords_from_regions,
    coords_from_table,
    embeddings_frame,
    gpkg_indicators,
    indicators_frame,
    kept,
    run_status,
)
from urbangeo.progress import set_mode

UNWEIGHTED = " (no block weights)"
COLUMNS = {
    "split": "split",
    "target": "target",
    "n": "n",
    "features": "features",
    "dims": "dims",
    "ridge R²": "ridge",
    "MLP R²": "mlp",
}


def cached(path: Path, make: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """A region-indexed vector table, computed once and kept as parquet in ``path``."""
    if path.is_file():
        return pd.read_parquet(path)
    started = time.perf_counter()
    frame = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path)
    print(f"  {path.name}: {frame.shape} in {time.perf_counter() - started:.0f} s", flush=True)
    return frame


# --- Beijing ---------------------------------------------------------------------------------


def beijing(data: Path, out: Path, device: str) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Blocks, indicators and coordinates of the Beijing regions."""
    regions = ev.beijing_regions(data / "regions.csv")
    texts = {t: ev.joined(s) for t, s in ev.satellite_sentences(data).items() if s}
    ids = [t for t in regions[C.REGION_ID] if t in texts]

    def captions() -> pd.DataFrame:
        from urbangeo.model.encoders.caption_text import minilm_text_model
        from urbangeo.model.encoders.region_encoder import unit_rows

        model = minilm_text_model(device=device)
        return ev.vectors_frame(ids, unit_rows(model.encode([texts[t] for t in ids])))

    def location() -> pd.DataFrame:
        from urbangeo.model.encoders.geoclip import encode_latlon

        latlon = regions.set_index(C.REGION_ID).loc[ids, ["lat", "lon"]].to_numpy(np.float64)
        return ev.vectors_frame(ids, encode_latlon(latlon, device=device))

    indicators = indicators_frame(regions[[C.REGION_ID, *ev.BEIJING_TARGETS]])
    coords = coords_from_table(regions.set_index(C.REGION_ID)[["lon", "lat"]])
    assert coords is not None
    blocks = {
        "captions": cached(out / "beijing_captions_minilm.parquet", captions),
        "geoclip": cached(out / "beijing_geoclip.parquet", location),
        "xy": coords.loc[ids],
    }
    return blocks, indicators.loc[ids], coords.loc[ids]


# --- a run ----------------------------------------------------------------------------------


def run_blocks(gpkg: Path, out: Path, device: str) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Blocks, indicators and coordinates of a run's regions (its exclusions left out)."""
    from urbangeo.io.gpkg import read_layer
    from urbangeo.model.encoders.caption_text import CaptionTextEncoder
    from urbangeo.model.encoders.geoclip import GeoClipLocationEncoder

    regions = read_layer(gpkg, C.LAYER_REGIONS)
    regions[C.REGION_ID] = regions[C.REGION_ID].astype(str)

    def captions(text_model: str) -> Callable[[], pd.DataFrame]:
        def make() -> pd.DataFrame:
            encoder = CaptionTextEncoder(gpkg, text_model=text_model, device=device)
            result = encoder.encode(regions)
            print(f"  captions ({text_model}): {json.dumps(result.counts)}", flush=True)
            return embeddings_frame(result.frame)  # regions without captions left out

        return make

    def location() -> pd.DataFrame:
        return embeddings_frame(GeoClipLocationEncoder(device=device).encode(regions).frame)

    tag = gpkg.parent.name
    coords = coords_from_regions(regions).set_index(regions[C.REGION_ID])
    blocks = {
        "xy": coords,
        "image": embeddings_frame(pd.read_parquet(gpkg.parent / C.EMBEDDINGS_PARQUET)),
        "captions-clip": cached(out / f"{tag}_captions_clip.parquet", captions("trained")),
        "captions-minilm": cached(out / f"{tag}_captions_minilm.parquet", captions("minilm")),
        "geoclip": cached(out / f"{tag}_geoclip.parquet", location),
    }
    return blocks, gpkg_indicators(gpkg), coords


# --- scoring --------------------------------------------------------------------------------


def score(
    blocks: dict[str, pd.DataFrame],
    sets: list[list[str]],
    indicators: pd.DataFrame,
    coords: pd.DataFrame,
    *,
    targets: list[str] | None,
    seeds: int,
    block_size: float,
    heads: tuple[str, ...],
    status: pd.DataFrame | None = None,
) -> tuple[list[dict], dict]:
    """Every set (and each combination unweighted) on the same regions, splits and seeds."""
    common = indicators.index
    for frame in blocks.values():
        common = common.intersection(frame.index, sort=False)
    common = kept(common, status)
    frames, weights = {}, {}
    for items in sets:
        part = {name: blocks[name].loc[common] for name in items}
        name = "+".join(items)
        frames[name] = standardise_blocks(part)
        weights[name] = block_weights(part)
        if len(items) > 1:
            frames[name + UNWEIGHTED] = frames[name] / weights[name]
    main = next(iter(frames))
    dataset = Dataset(
        features=frames[main],
        indicators=indicators.loc[common],
        coords=coords.loc[common],
        name=main,
    )
    extra = {k: v for k, v in frames.items() if k != main}
    column_weights = {("" if k == main else k): w for k, w in weights.items()}
    rows, seconds = [], {}
    splits = ev.each_split(
        dataset,
        targets,
        seeds=seeds,
        block_size=block_size,
        mlp=DEFAULT_MLP,
        cv="split",
        extra_features=extra,
        baseline_heads=heads,
        column_weights=column_weights,
    )
    for split, report, took in splits:
        label = "random" if split == "random" else f"{block_size / 1000:g} km blocks"
        seconds[label] = round(took, 1)
        for target, result in report.targets.items():
            m = result.metrics
            rows.append(
                {
                    "split": label,
                    "target": target,
                    "n": result.n_regions,
                    "features": "coordinates k-NN",
                    "dims": 2,
                    "ridge": ev.score_cell(m, "coords_knn"),
                    "mlp": "",
                }
            )
            for name, frame in frames.items():
                prefix = "" if name == main else f"{name}:"
                rows.append(
                    {
                        "split": label,
                        "target": target,
                        "n": result.n_regions,
                        "features": name,
                        "dims": int(frame.shape[1]),
                        "ridge": ev.score_cell(m, prefix + "ridge"),
                        "mlp": ev.score_cell(m, prefix + "mlp") if "mlp" in heads else "–",
                    }
                )
        print(table([r for r in rows if r["split"] == label]), flush=True)
    return rows, seconds


def table(rows: list[dict]) -> str:
    """The rows as Markdown; the coordinates k-NN's MLP cell says ``(k-NN)``."""
    return ev.markdown([{**r, "mlp": r["mlp"] or "(k-NN)"} for r in rows], COLUMNS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("beijing", "run"))
    parser.add_argument("path", type=Path, help="The shared beijing folder, or a run.gpkg.")
    parser.add_argument("--out", type=Path, default=Path("/tmp/urbangeo-eval-features"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--block-size", type=float, help="Metres (5000 Beijing, 1000 a run).")
    parser.add_argument("--heads", default="ridge,mlp", help="ridge, or ridge,mlp.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--sets",
        help="Feature sets to score instead of the default ones: blocks joined by ',', sets "
        "by ';' (blocks: captions, geoclip, xy; a run's also image, captions-clip, "
        "captions-minilm), e.g. 'captions,xy;geoclip,xy'.",
    )
    parser.add_argument("--tag", default="", help="Added to the names of the result files.")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    set_mode("none")
    args.out.mkdir(parents=True, exist_ok=True)
    heads = tuple(h.strip() for h in args.heads.split(",") if h.strip())
    if args.kind == "beijing":
        blocks, indicators, coords = beijing(args.path, args.out, args.device)
        sets = [["captions"], ["geoclip"], ["captions", "geoclip"]]
        targets, block_size, status = list(ev.BEIJING_TARGETS), args.block_size or 5000.0, None
    else:
        blocks, indicators, coords = run_blocks(args.path, args.out, args.device)
        sets = [
            ["image"],
            ["captions-clip"],
            ["captions-minilm"],
            ["geoclip"],
            ["captions-clip", "geoclip"],
            ["captions-minilm", "geoclip"],
            ["image", "captions-clip"],
        ]
        targets, block_size = None, args.block_size or 1000.0
        status = run_status(args.path)
    if args.sets:
        sets = [[b.strip() for b in part.split(",")] for part in args.sets.split(";")]
    rows, seconds = score(
        blocks,
        sets,
        indicators,
        coords,
        targets=targets,
        seeds=args.seeds,
        block_size=block_size,
        heads=heads,
        status=status,
    )
    text = table(rows)
    tag = (args.kind if args.kind == "beijing" else args.path.parent.name) + args.tag
    (args.out / f"{tag}_results.md").write_text(text + "\n")
    (args.out / f"{tag}_results.json").write_text(
        json.dumps({"rows": rows, "seconds": seconds, "seeds": args.seeds}, indent=2) + "\n"
    )
    print("\n" + text)
    print(json.dumps(seconds))


if __name__ == "__main__":
    main()
