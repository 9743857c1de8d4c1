"""What the evaluation scripts share: the Beijing regions and captions, region-indexed vector
tables, the two splits and the result tables.

The scripts import it as ``from _evaluation import ...``: run as ``python benchmarks/x.py``,
their own folder is first on ``sys.path``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from urbangeo import constants as C
from urbangeo.downstream.predict import PredictionReport, evaluate
from urbangeo.downstream.tables import Dataset, embeddings_frame

#: The Beijing targets: WorldPop population, ODIAC carbon and GDP.
BEIJING_TARGETS = ("population", "carbon_t", "gdp_myuan")
#: A GDP of exactly this value is a fill value of the source, treated as missing.
GDP_FILL = 10000.0
SPLITS = ("random", "block")


def beijing_regions(csv: Path) -> pd.DataFrame:
    """``beijing/regions.csv`` with the region id (the tile) added and GDP fill values as
    missing."""
    regions = pd.read_csv(csv)
    regions[C.REGION_ID] = regions["tile"]
    regions.loc[regions["gdp_myuan"] == GDP_FILL, "gdp_myuan"] = np.nan
    return regions


def satellite_sentences(data: Path) -> dict[str, list[str]]:
    """Each tile's satellite caption as its sentences, stripped, empty ones dropped (a tile
    may have none)."""
    sentences = {}
    with open(data / "satellite_captions.jsonl", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            sentences[row["tile"]] = [s.strip() for s in row["sentences"] if s.strip()]
    return sentences


def joined(sentences: Sequence[str]) -> str:
    """Sentences as one text, each ended by exactly one full stop."""
    return ". ".join(s.rstrip(".") for s in sentences) + "."


def vectors_frame(ids: Sequence[str], vectors: np.ndarray) -> pd.DataFrame:
    """Vectors ``[n, dim]`` as a region-indexed embeddings table (columns ``e0``...)."""
    table = pd.DataFrame(vectors, columns=[f"e{i}" for i in range(vectors.shape[1])])
    table.insert(0, C.REGION_ID, list(ids))
    return embeddings_frame(table)


def each_split(
    dataset: Dataset,
    targets: Sequence[str] | None,
    *,
    seeds: int,
    block_size: float,
    **options: Any,
) -> Iterator[tuple[str, PredictionReport, float]]:
    """:func:`~urbangeo.downstream.predict.evaluate` under the random split, then the spatial
    block split (blocks of ``block_size`` metres): the split, the report and its seconds."""
    for split in SPLITS:
        started = time.perf_counter()
        report = evaluate(
            dataset,
            targets,
            seeds=seeds,
            split=split,
            block_size=block_size if split == "block" else None,
            **options,
        )
        yield split, report, time.perf_counter() - started


def score_cell(metrics: dict, model: str, metric: str = "r2") -> str:
    """``mean ± std`` of a model's metric over the seeds (``–``: the model was not scored)."""
    if model not in metrics:
        return "–"
    v = metrics[model][metric]
    return f"{v['mean']:.3f} ± {v['std']:.3f}"


def markdown(rows: list[dict], columns: dict[str, str]) -> str:
    """``rows`` as a Markdown table; ``columns``: header → key of the rows."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(str(r[key]) for key in columns.values()) + " |")
    return "\n".join(lines)
