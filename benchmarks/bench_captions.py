"""Benchmark: CAPTURE scoring throughput and captioning concurrency.

1. CAPTURE on CPU with cached parses: captions are parsed and their elements embedded once
   (as the caption stage does per image), then full CAPTURE (exact, WordNet synonym and
   all-MiniLM-L6-v2 soft matching) is timed over every ordered pair within groups of five
   captions (the consensus workload). Captions: synthetic urban descriptions by default, or
   real Beijing street-view captions with ``--data`` (the shared ``beijing`` folder).
   Target: >= 200 caption pairs/s.
2. Captioning against an OpenAI-compatible endpoint on 127.0.0.1 that answers after 200 ms:
   the same calls with 1 and with 8 requests in flight (the stage's thread pool and retry
   code, a fresh cache each time). Target: >= 6x faster with 8.

Run from the repository root::

    .venv/bin/python benchmarks/bench_captions.py [--data ../shared/data/beijing]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from urbangeo import constants as C
from urbangeo.captions.cache import CaptionCache, call_key, sha256_bytes
from urbangeo.captions.calls import Call, run_calls
from urbangeo.captions.captioners import ImageItem
from urbangeo.captions.captioners.openai import OpenAICaptioner
from urbangeo.captions.capture import CaptureScorer
from urbangeo.captions.scenegraph import CachedParser, RuleParser
from urbangeo.captions.wordnet import wordnet_available
from urbangeo.io.http import RetryPolicy
from urbangeo.progress import set_mode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for tests.helpers
from tests.helpers import Loopback, QuietHandler

OBJECTS = [
    "building",
    "tree",
    "car",
    "road",
    "bus",
    "pedestrian",
    "sidewalk",
    "shop",
    "park",
    "river",
    "bridge",
    "parking lot",
    "traffic light",
    "bicycle",
    "house",
    "factory",
    "lake",
    "field",
    "tower",
    "wall",
    "fence",
    "lamp post",
    "truck",
    "crosswalk",
]
ATTRS = [
    "tall",
    "green",
    "red",
    "busy",
    "wide",
    "narrow",
    "old",
    "modern",
    "small",
    "large",
    "quiet",
    "white",
    "dense",
    "parked",
    "leafy",
    "concrete",
]
RELS = ["next to", "along", "behind", "in front of", "across", "near", "on", "under"]


def synthetic_captions(n: int, rng: random.Random) -> list[str]:
    """Urban descriptions of about 80 words with overlapping vocabularies."""
    out = []
    for _ in range(n):
        sentences = ["The image shows an urban scene."]
        for _ in range(7):
            a, b = rng.sample(OBJECTS, 2)
            sentences.append(
                f"A {rng.choice(ATTRS)} {a} stands {rng.choice(RELS)} the {rng.choice(ATTRS)} {b}."
            )
        sentences.append(f"Several {rng.choice(OBJECTS)}s line the {rng.choice(OBJECTS)}.")
        out.append(" ".join(sentences))
    return out


def bench_capture(captions: list[str], group: int = 5) -> dict:
    parser = CachedParser(RuleParser())
    scorer = CaptureScorer(parser=parser, synonyms=wordnet_available(), soft=True)
    started = time.perf_counter()
    graphs = scorer.prepare(captions)
    prepare_s = time.perf_counter() - started
    groups = [graphs[i : i + group] for i in range(0, len(graphs) - group + 1, group)]
    pairs = 0
    started = time.perf_counter()
    for g in groups:
        for i, cand in enumerate(g):
            for j, ref in enumerate(g):
                if i != j:
                    scorer.pair(cand, ref)
                    pairs += 1
    seconds = time.perf_counter() - started
    return {
        "captions": len(captions),
        "synonyms": scorer.synonyms,
        "parse_and_embed_s": round(prepare_s, 2),
        "pairs": pairs,
        "pairs_per_s": round(pairs / seconds, 1),
    }


class SlowChat(QuietHandler):
    latency = 0.2

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(self.latency)
        payload = json.dumps({"choices": [{"message": {"content": "A caption."}}]}).encode()
        self.reply(200, payload, {"Content-Type": "application/json"})


def bench_http(n_calls: int, concurrencies: tuple[int, ...]) -> dict:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (256, 256), (90, 120, 80)).save(buf, "PNG")
    image = buf.getvalue()
    server = Loopback(SlowChat, "/v1")
    url = server.url
    out = {"calls": n_calls, "latency_s": SlowChat.latency}
    try:
        for workers in concurrencies:
            captioner = OpenAICaptioner(
                ["m"], base_url=url, retry=RetryPolicy(max_retries=0), pool_size=workers
            )
            with tempfile.TemporaryDirectory() as tmp:
                cache = CaptionCache(Path(tmp) / C.CAPTIONS_JSONL)
                calls = []
                for i in range(n_calls):
                    item = ImageItem(f"img{i}", C.KIND_OVERHEAD)
                    key = call_key(
                        sha256_bytes(image + bytes([i % 256, i // 256])), "openai", "m", "p", {}
                    )
                    calls.append((Call(item, "m", key), image, "p"))
                started = time.perf_counter()
                run_calls(captioner, calls, cache, concurrency=workers)
                seconds = time.perf_counter() - started
            assert all(c.caption for c, _, _ in calls)
            out[f"c{workers}_s"] = round(seconds, 2)
            out[f"c{workers}_calls_per_s"] = round(n_calls / seconds, 2)
            captioner.close()
    finally:
        server.close()
    first, last = concurrencies[0], concurrencies[-1]
    out["speedup"] = round(out[f"c{first}_s"] / out[f"c{last}_s"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, help="the shared beijing folder (real captions)")
    ap.add_argument("--captions", type=int, default=200)
    ap.add_argument("--calls", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    set_mode("none")
    rng = random.Random(args.seed)
    if args.data:
        with gzip.open(args.data / "streetview_captions.jsonl.gz", "rt", encoding="utf-8") as fh:
            texts = [" ".join(json.loads(line)["caption"].split()) for line in fh]
        captions = rng.sample(texts, args.captions)
        source = "beijing street view"
    else:
        captions = synthetic_captions(args.captions, rng)
        source = "synthetic"
    capture = bench_capture(captions)
    print(f"CAPTURE ({source}): {capture}")
    http = bench_http(args.calls, (1, 8))
    print(f"captioning at 200 ms latency: {http}")


if __name__ == "__main__":
    main()
