"""Evaluation: CAPTURE and consensus selection on real LLM captions of Beijing.

Data (``--data``, the folder ``beijing`` of the shared evaluation data):
``satellite_captions.jsonl`` (one LLaMA-Adapter V2 caption per satellite tile, as sentences),
``streetview_captions.jsonl.gz`` (long captions of street-view images) and
``tile_streetview.json`` (tile -> street-view images in it).

What it measures, with the offline stack (rule-based spaCy parser, WordNet synonyms,
all-MiniLM-L6-v2 soft matching):

1. Parsing: time per caption, objects / attributes / relations per caption, the most frequent
   objects (what CAPTURE actually compares in urban captions).
2. Discrimination: CAPTURE between street-view captions of the same tile (different photos of
   one ~1 km region) versus captions of random other tiles: means and the AUC (probability
   that a same-tile pair outscores a cross-tile pair). Consensus only helps if agreement
   tracks content.
3. Selection under controlled noise: for each satellite caption, five candidates of "the same
   image": the original, an omission (last sentences dropped), a hallucination (one sentence
   swapped for a sentence of another tile), a paraphrase-free shuffle (sentence order
   reversed, same content) and a wrong-image caption (another tile's caption). Consensus
   should never select the wrong-image caption and rank the faithful ones above the noisy
   ones. Reported: how often each candidate is selected and its mean consensus score.
4. Street-view consensus within a tile: which of a tile's street-view captions is selected,
   and whether the choice is driven by length (Spearman correlation of consensus score and
   word count).

Run from the repository root::

    .venv/bin/python benchmarks/eval_captions_beijing.py --data ../shared/data/beijing
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np

from urbangeo.captions.capture import CaptureScorer
from urbangeo.captions.consensus import select_caption
from urbangeo.captions.scenegraph import CachedParser, RuleParser
from urbangeo.captions.wordnet import wordnet_available

KINDS = ("original", "reversed", "omission", "hallucination", "wrong image")


def load(data: Path) -> tuple[dict[str, list[str]], dict[str, str], dict[str, list[str]]]:
    """Satellite sentences per tile, street-view caption per image, images per tile."""
    sat = {}
    with open(data / "satellite_captions.jsonl", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            sentences = [s.strip().rstrip(".") + "." for s in row["sentences"] if s.strip()]
            if sentences:
                sat[row["tile"]] = sentences
    sv = {}
    with gzip.open(data / "streetview_captions.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            sv[row["image"]] = " ".join(row["caption"].split())
    tiles = json.loads((data / "tile_streetview.json").read_text())
    return sat, sv, tiles


def auc(pos: list[float], neg: list[float]) -> float:
    """P(a positive outscores a negative), ties counted half."""
    p, n = np.asarray(pos), np.asarray(neg)
    greater = (p[:, None] > n[None, :]).mean()
    ties = (p[:, None] == n[None, :]).mean()
    return float(greater + ties / 2)


def spearman(a: list[float], b: list[float]) -> float:
    ra = np.argsort(np.argsort(a))
    rb = np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="the shared beijing folder")
    ap.add_argument("--tiles", type=int, default=150, help="satellite tiles for test 3")
    ap.add_argument("--sv-tiles", type=int, default=120, help="tiles with >=3 street views")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    rng = random.Random(args.seed)

    sat, sv, tiles = load(args.data)
    parser = CachedParser(RuleParser())
    scorer = CaptureScorer(parser=parser, synonyms=wordnet_available(), soft=True)
    results: dict = {"synonyms": scorer.synonyms}
    print(
        f"{len(sat)} satellite captions, {len(sv)} street-view captions; "
        f"WordNet synonyms: {scorer.synonyms}"
    )

    # 1. parsing
    sat_tiles = sorted(t for t in sat if len(sat[t]) >= 3)
    rng.shuffle(sat_tiles)
    sample_sat = [" ".join(sat[t]) for t in sat_tiles[:100]]
    sample_sv = rng.sample(sorted(sv.values()), 100)
    for name, texts in (("satellite", sample_sat), ("streetview", sample_sv)):
        started = time.perf_counter()
        graphs = [parser.parse(t) for t in texts]
        ms = 1000 * (time.perf_counter() - started) / len(texts)
        stats = {
            "ms_per_caption": round(ms, 1),
            "words": round(float(np.mean([len(t.split()) for t in texts])), 1),
            "objects": round(float(np.mean([len(g.objects) for g in graphs])), 1),
            "attributes": round(float(np.mean([len(g.attributes) for g in graphs])), 1),
            "relations": round(float(np.mean([len(g.relations) for g in graphs])), 1),
            "top_objects": Counter(o for g in graphs for o in g.objects).most_common(12),
        }
        results[f"parse_{name}"] = stats
        print(f"[1] parse {name}: {stats}")

    # 2. discrimination: same-tile vs cross-tile street-view pairs
    multi = sorted(t for t, imgs in tiles.items() if sum(i in sv for i in imgs) >= 3)
    rng.shuffle(multi)
    multi = multi[: args.sv_tiles]
    # Parse and embed everything once: one large embedding batch, not one per tile.
    started = time.perf_counter()
    scorer.prepare([sv[i] for t in multi for i in tiles[t] if i in sv][: 5 * len(multi)])
    scorer.prepare([" ".join(sat[t]) for t in sat_tiles[: args.tiles]])
    results["prepare_s"] = round(time.perf_counter() - started, 1)
    print(f"parsed and embedded in {results['prepare_s']} s")
    same, cross = [], []
    for tile in multi:
        caps = [sv[i] for i in tiles[tile] if i in sv][:4]
        for i in range(len(caps)):
            for j in range(len(caps)):
                if i != j:
                    same.append(scorer.pair(scorer.graph(caps[i]), scorer.graph(caps[j])).score)
        other = rng.choice([t for t in multi if t != tile])
        foreign = [sv[i] for i in tiles[other] if i in sv][:2]
        scorer.prepare(foreign)
        for a in caps[:2]:
            for b in foreign:
                cross.append(scorer.pair(scorer.graph(a), scorer.graph(b)).score)
    disc = {
        "tiles": len(multi),
        "same_tile_mean": round(float(np.mean(same)), 4),
        "cross_tile_mean": round(float(np.mean(cross)), 4),
        "auc": round(auc(same, cross), 4),
        "pairs": [len(same), len(cross)],
    }
    results["discrimination"] = disc
    print(f"[2] street-view same tile vs other tile: {disc}")

    # 3. selection under controlled noise (satellite captions, >= 3 sentences)
    chosen = Counter()
    scores: dict[str, list[float]] = {k: [] for k in KINDS}
    ranks: dict[str, list[int]] = {k: [] for k in KINDS}
    started = time.perf_counter()
    pairs = 0
    for tile in sat_tiles[: args.tiles]:
        sentences = sat[tile]
        other_tile = rng.choice([t for t in sat_tiles if t != tile])
        other = sat[other_tile]
        swap = list(sentences)
        swap[rng.randrange(1, len(swap))] = rng.choice(other)
        candidates = {
            "original": " ".join(sentences),
            "reversed": " ".join(reversed(sentences)),
            "omission": " ".join(sentences[: max(1, len(sentences) // 2)]),
            "hallucination": " ".join(swap),
            "wrong image": " ".join(other),
        }
        consensus = select_caption(list(candidates.values()), scorer=scorer)
        pairs += len(candidates) * (len(candidates) - 1)
        chosen[KINDS[consensus.index]] += 1
        order = np.argsort(-np.asarray(consensus.scores))
        for rank, index in enumerate(order):
            ranks[KINDS[index]].append(rank + 1)
        for kind, score in zip(KINDS, consensus.scores, strict=True):
            scores[kind].append(score)
    n = min(args.tiles, len(sat_tiles))
    noise = {
        "tiles": n,
        "selected_share": {k: round(chosen[k] / n, 3) for k in KINDS},
        "mean_score": {k: round(float(np.mean(scores[k])), 4) for k in KINDS},
        "mean_rank": {k: round(float(np.mean(ranks[k])), 2) for k in KINDS},
        "pairs_per_s": round(pairs / (time.perf_counter() - started), 1),
    }
    results["controlled_noise"] = noise
    print(f"[3] controlled noise: {noise}")

    # 4. street-view consensus within tiles: length bias
    corr, picked_len, mean_len = [], [], []
    for tile in multi:
        caps = [sv[i] for i in tiles[tile] if i in sv][:5]
        consensus = select_caption(caps, scorer=scorer)
        lengths = [len(c.split()) for c in caps]
        if len(set(lengths)) > 1:
            corr.append(spearman(list(consensus.scores), lengths))
        picked_len.append(lengths[consensus.index])
        mean_len.append(float(np.mean(lengths)))
    within = {
        "tiles": len(multi),
        "spearman_score_vs_length": round(float(np.mean(corr)), 3),
        "selected_words": round(float(np.mean(picked_len)), 1),
        "mean_words": round(float(np.mean(mean_len)), 1),
    }
    results["streetview_selection"] = within
    print(f"[4] street-view selection within tiles: {within}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
