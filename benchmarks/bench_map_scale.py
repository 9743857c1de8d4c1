"""The offline map at 14,000, 100,000 and 1,000,000 synthetic regions (issue #16): the time
to write it, its size, and in headless Chromium the time to the first draw of the whole view
(from navigation start), a layer switch, and a caption fetched on demand.

    .venv/bin/python benchmarks/bench_map_scale.py [--sizes 14000,100000,1000000]

Each map has 250 m square cells, five clusters, one indicator with prediction, observation and
residual, a second indicator, and a caption of about 330 characters per region (the layers of
a default run). Prints a table; --json writes the rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for tests.viz

from tests.viz.browser import Browser
from tests.viz.test_map_scale import synthetic
from urbangeo.viz.maps import build_map, map_files_dir, write_map

MB = 1024 * 1024


def one(n: int, folder: Path) -> dict:
    side = round(np.sqrt(n))
    regions, observed, clusters, _ = synthetic(side, n // side)
    ids = observed.index
    rng = np.random.default_rng(1)
    pred = observed["population"] * rng.lognormal(0, 0.3, len(ids))
    predictions = pd.DataFrame(
        {
            "population_predicted": pred,
            "population_observed": observed["population"],
            "population_residual": np.log1p(pred) - np.log1p(observed["population"]),
        }
    )
    observed = observed.assign(shops=rng.poisson(5, len(ids)).astype(float))
    captions = pd.Series(
        [f"Region {i}: " + "a street grid with shops, trees and parked cars; " * 6 for i in ids],
        index=ids,
    )
    t0 = time.perf_counter()
    fmap = build_map(
        regions,
        clusters=clusters,
        predictions=predictions,
        observed=observed,
        region_captions=captions,
    )
    page = write_map(fmap, folder / f"map_{n}.html")
    write_s = time.perf_counter() - t0
    folder = map_files_dir(page)
    beside = sum(f.stat().st_size for f in folder.glob("*")) if folder.is_dir() else 0
    row = {"regions": len(ids), "write_s": write_s, "page_mb": page.stat().st_size / MB}
    row["beside_mb"] = beside / MB
    with Browser() as browser:
        browser.open(page.as_uri(), timeout=600)
        row["first_draw_s"] = browser.js("urbangeo.ready()", timeout=600) / 1000
        row["mode"] = browser.js("urbangeo.mode()")
        row["drawn"] = browser.js("urbangeo.drawn()")
        switches = [
            browser.js(f"urbangeo.show({name!r})", timeout=600)
            for name in ("Predicted population", "Residual population", "Clusters")
        ]
        row["switch_first_ms"] = switches[0]
        row["switch_again_ms"] = switches[2]
        rid = browser.js("urbangeo.app.cellsSource ? urbangeo.app.cellsSource.ids[0] : null")
        if rid is None:  # aggregated: the first cell of the first chunk
            rid = browser.js("urbangeo.cellChunk(0).then(s => s.ids[0])", timeout=600)
        t = time.perf_counter()
        text = browser.js(f"urbangeo.caption({rid!r})", timeout=600) or ""
        row["caption_ms"] = (time.perf_counter() - t) * 1000
        row["caption_ok"] = " ".join(captions[rid].split()).startswith(text.rstrip("…"))
        row["errors"] = browser.errors()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="14000,100000,1000000")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(v) for v in args.sizes.split(",")):
            rows.append(one(n, Path(tmp)))
            print(json.dumps(rows[-1]), file=sys.stderr)
    head = (
        f"{'regions':>9} {'mode':>6} {'write s':>8} {'page MB':>8} {'beside MB':>9} "
        f"{'first draw s':>12} {'switch ms':>9} {'again ms':>8} {'caption ms':>10}"
    )
    print(head)
    for r in rows:
        print(
            f"{r['regions']:>9,} {r['mode']:>6} {r['write_s']:>8.1f} {r['page_mb']:>8.1f} "
            f"{r['beside_mb']:>9.1f} {r['first_draw_s']:>12.2f} {r['switch_first_ms']:>9.0f} "
            f"{r['switch_again_ms']:>8.0f} {r['caption_ms']:>10.0f}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
