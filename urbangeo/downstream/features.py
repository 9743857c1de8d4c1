"""Feature sets for ``predict --features``: embeddings tables combined by region_id.

Each ``--features`` value is one feature set: sources separated by commas. A source is a file
(``.parquet``, ``.csv``: ``region_id`` plus numeric columns, as ``--embeddings``) or a name
resolved in the run's folder (the folder of ``--gpkg``):

* ``run`` (or ``embeddings``, or the encoder name the run's embed stage recorded, e.g.
  ``clip``): the run's own embeddings (``--embeddings FILE`` when given, else
  ``embeddings.parquet`` beside the GeoPackage or its ``region_embeddings`` layer);
* ``NAME``: ``embeddings_NAME.parquet`` (or ``embeddings-NAME.parquet``) beside the GeoPackage,
  else the same file in its ``baselines/`` folder, where ``predict`` caches the image baselines
  (``random``, ``image-stats``) and other encoders cache theirs.

The sources of a set are joined by region_id into blocks, each column standardised to zero
mean and unit variance over the regions scored (population standard deviation; a constant
column becomes 0) and weighted by sqrt(D / (B·d)) for a block of d of the set's D columns in B
blocks: every block gets the same total variance (D / B), so that none dominates by its width,
and the set as a whole the variance of its D columns standardised (a set of one block is scaled
as a plain embedding). The heads standardise every column again on their own training rows,
which would undo the weighting, so each set also carries its column weights
(:attr:`FeatureSets.weights`) and the heads apply them after their own scaling
(:mod:`urbangeo.downstream.heads`): the weighting reaches the ridge penalty and the MLP's
inputs. All sets are scored on the same regions (those every source covers, less the edge
cells the run excludes), so their splits, seeds and heads are the same; regions missing from a
source are dropped with a warning naming how many. ``compare`` adds each source alone and
all of them together.

The first set fills the ``predictions`` layer (its models are ``mlp`` and ``ridge`` in the
report); every other set is scored as ``NAME:mlp`` and ``NAME:ridge`` beside it, and
:func:`comparison_table` shows every set's R² side by side.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from urbangeo import constants as C
from urbangeo.downstream.baselines import BASELINES_DIR, embed_record
from urbangeo.downstream.report import HEAD_LABELS, PredictionReport
from urbangeo.downstream.tables import (
    Dataset,
    align,
    coords_from_regions,
    dataset_from_files,
    dataset_from_gpkg,
    gpkg_embeddings,
    gpkg_indicators,
    kept,
    load_embeddings,
    load_indicators,
    without_excluded,
)
from urbangeo.errors import InputError, UrbangeoWarning
from urbangeo.io.gpkg import read_layer
from urbangeo.settings import PredictSettings

#: Names of the run's own embeddings.
RUN_NAMES = ("run", "embeddings")
#: File types read as a source by path.
FILE_SUFFIXES = (".parquet", ".pq", ".csv", ".txt", ".tsv", ".tab")
#: How the blocks are scaled, as metrics.json records it.
STANDARDISATION = (
    "per block: each column z-scored (population std, constant columns 0) on each head's "
    "training rows, then weighted by sqrt(D / (B d)) for a block of d of the set's D columns "
    "in B blocks (every block the same total variance)"
)


@dataclass(frozen=True)
class Source:
    """One block of a feature set: its label and where its vectors come from."""

    label: str
    text: str
    path: Path | None  # None: the run's own embeddings (from its GeoPackage)


def named_files(gpkg: str | os.PathLike) -> dict[str, Path]:
    """The names ``--features`` resolves in a run's folder, with their files: every
    ``embeddings*.parquet`` beside the GeoPackage and in its ``baselines/`` folder (the
    run's folder first; ``embeddings.parquet`` itself is ``run``)."""
    folder = Path(gpkg).parent
    found: dict[str, Path] = {}
    for where in (folder, folder / BASELINES_DIR):
        for path in sorted(where.glob("embeddings*.parquet")):
            name = path.stem[len("embeddings") :].lstrip("_-.")
            if name and name not in found:
                found[name] = path
    return found


def _is_file(text: str) -> bool:
    return Path(text).suffix.lower() in FILE_SUFFIXES or os.sep in text or "/" in text


def resolve(text: str, gpkg: str | os.PathLike | None) -> Source:
    """The source ``text`` names (a file, ``run``, or a name in the run's folder)."""
    text = text.strip()
    if not text:
        raise InputError("An empty feature source in --features.", hint="e.g. --features run,a")
    if _is_file(text):
        path = Path(text)
        if not path.is_file():
            raise InputError(f"The feature file {path} (--features) does not exist.")
        return Source(path.stem, text, path)
    recorded = embed_record(gpkg).get("encoder") if gpkg is not None else None
    if text in RUN_NAMES or (recorded and text == recorded):
        return Source(text, text, None)
    if gpkg is None:
        raise InputError(
            f"The feature source {text!r} is a name, and names are looked up in a run's folder.",
            hint="Give the run's GeoPackage (--gpkg), or a file (FILE.parquet).",
        )
    files = named_files(gpkg)
    if text not in files:
        known = ", ".join(["run", *files]) if files else "run"
        raise InputError(
            f"No feature source named {text!r} in {Path(gpkg).parent}.",
            hint=f"Names found there: {known} (embeddings_NAME.parquet beside the GeoPackage "
            f"or in {BASELINES_DIR}/, where `urbangeo predict` caches the baselines it scores); "
            "or give a file path.",
        )
    return Source(text, text, files[text])


def plan(specs: Sequence[str], *, compare: bool = False) -> list[list[str]]:
    """The feature sets (lists of source texts) of ``--features`` values, in order: the
    values as given, then with ``compare`` each source alone and all of them together (each
    set once)."""
    sets: list[list[str]] = []

    def add(items: list[str]) -> None:
        if items and items not in sets:
            sets.append(items)

    for spec in specs:
        add(list(dict.fromkeys(p.strip() for p in str(spec).split(",") if p.strip())))
    if not sets:
        raise InputError("--features names no source.", hint="e.g. --features run,text.parquet")
    if compare:
        every = list(dict.fromkeys(s for items in sets for s in items))
        for source in every:
            add([source])
        add(every)
    return sets


def standardise_blocks(blocks: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """``blocks`` (same index) side by side, columns ``LABEL:column``: each column z-scored
    (population std; constant columns 0) and weighted as :func:`block_weights` says."""
    parts = []
    weights = block_weights(blocks)
    start = 0
    for label, frame in blocks.items():
        values = frame.to_numpy(dtype=np.float64)
        sd = values.std(axis=0)
        sd[sd == 0] = 1.0
        w = weights[start : start + values.shape[1]]
        start += values.shape[1]
        scaled = (values - values.mean(axis=0)) / sd * w
        columns = [f"{label}:{c}" for c in frame.columns]
        parts.append(pd.DataFrame(scaled, index=frame.index, columns=columns))
    return pd.concat(parts, axis=1)


def block_weights(blocks: Mapping[str, pd.DataFrame]) -> np.ndarray:
    """One weight per column of :func:`standardise_blocks` (same order): sqrt(D / (B·d)) for
    a block of d of the D columns in B blocks, what the heads apply after standardising
    (1 for every column of a single block)."""
    widths = [frame.shape[1] for frame in blocks.values()]
    total = sum(widths)
    return np.concatenate([np.full(d, np.sqrt(total / (len(widths) * d))) for d in widths])


def common_regions(blocks: Mapping[str, pd.DataFrame]) -> tuple[pd.Index, int]:
    """The regions every block covers (in the first block's order), and how many regions
    some block covers are dropped (with a warning naming how many each block lacks)."""
    frames = list(blocks.values())
    union = frames[0].index
    common = frames[0].index
    for frame in frames[1:]:
        union = union.union(frame.index, sort=False)
        common = common.intersection(frame.index, sort=False)
    dropped = len(union) - len(common)
    if len(common) == 0:
        raise InputError(
            f"The feature sources {', '.join(blocks)} share no region.",
            hint=f"Their '{C.REGION_ID}' values must name the same regions.",
        )
    if dropped:
        lacking = {label: len(union.difference(frame.index)) for label, frame in blocks.items()}
        missing = ", ".join(f"{label} lacks {n}" for label, n in lacking.items() if n)
        warnings.warn(
            f"{dropped} region(s) are missing from a feature source ({missing}) and are "
            "dropped from every feature set, so that all sets are scored on the same regions.",
            UrbangeoWarning,
            stacklevel=2,
        )
    return common, dropped


@dataclass
class FeatureSets:
    """The feature sets of one ``predict`` (empty without ``--features``)."""

    #: The set whose predictions fill the layer (its models are ``mlp`` and ``ridge``).
    main: str = ""
    #: Every other set's standardised features, by name (region_id-indexed).
    extra: dict[str, pd.DataFrame] = field(default_factory=dict)
    #: Per set: its sources, files and column counts.
    info: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Regions dropped because some source lacked them.
    dropped: int = 0
    #: Per set: the weight of each column (see :func:`block_weights`).
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    def column_weights(self) -> dict[str, np.ndarray]:
        """The weights as :func:`~urbangeo.downstream.predict.evaluate` takes them (the main
        set under ``""``, the others by name)."""
        return {"" if name == self.main else name: w for name, w in self.weights.items()}

    def merge(
        self, baselines: dict[str, pd.DataFrame], done: dict[str, dict[str, Any]]
    ) -> dict[str, pd.DataFrame]:
        """The extra features ``evaluate`` scores: the other sets, then the image
        ``baselines`` not named like a set (those are marked skipped in ``done``)."""
        out = dict(self.extra)
        for name, frame in baselines.items():
            if name in self.info:
                done[name] = {**done.get(name, {}), "skipped": "scored as a feature set"}
            else:
                out[name] = frame
        return out

    def prefix(self, name: str) -> str:
        """The report's model prefix of set ``name`` ('' for the main set)."""
        return "" if name == self.main else f"{name}:"

    def annotate(self, report: PredictionReport) -> None:
        """Add the sets and their R² per target and head to ``report.protocol``
        (``feature_sets``: what metrics.json shows side by side)."""
        if not self.info:
            return
        sets = {}
        for name, info in self.info.items():
            r2: dict[str, dict[str, dict[str, float]]] = {}
            models: list[str] = []
            for target, result in report.targets.items():
                for head in HEAD_LABELS:
                    values = result.metrics.get(self.prefix(name) + head)
                    if values is None:
                        continue
                    r2.setdefault(target, {})[head] = {
                        "mean": values["r2"]["mean"],
                        "std": values["r2"]["std"],
                    }
                    if self.prefix(name) + head not in models:
                        models.append(self.prefix(name) + head)
            sets[name] = {**info, "models": models, "r2": r2}
        report.protocol["feature_sets"] = {
            "main": self.main,
            "standardisation": STANDARDISATION,
            "dropped_regions": self.dropped,
            "sets": sets,
        }

    def params(self, s: PredictSettings) -> dict[str, Any]:
        """The record's parameters of the sets (none without ``--features``)."""
        if not self.info:
            return {}
        return {"features": list(self.info), "compare": s.compare}


def _blocks(
    sources: list[Source], gpkg: Path | None, embeddings: Path | None
) -> dict[str, pd.DataFrame]:
    """Each distinct source's vectors, by label."""
    out: dict[str, pd.DataFrame] = {}
    for source in sources:
        if source.path is not None:
            out[source.label] = load_embeddings(source.path)
        elif embeddings is not None:
            out[source.label] = load_embeddings(embeddings)
        else:
            assert gpkg is not None  # resolve() refuses names without a GeoPackage
            out[source.label] = gpkg_embeddings(gpkg)
    return out


def _labels(sources: list[Source]) -> list[Source]:
    """Sources with unique labels without ':' (the report's model separator)."""
    out: list[Source] = []
    seen: set[str] = set()
    for source in sources:
        label = source.label.replace(":", "_").replace("+", "_") or "features"
        if label in seen:
            label = source.text.replace(":", "_").replace("+", "_")
        k = 2
        while label in seen:
            label, k = f"{source.label}_{k}", k + 1
        seen.add(label)
        out.append(Source(label, source.text, source.path))
    return out


def feature_sets(
    gpkg: Path | None,
    s: PredictSettings,
    status: pd.DataFrame | None,
) -> tuple[dict[str, pd.DataFrame], FeatureSets, int]:
    """The standardised features of every set of ``s.features`` by name (the main one
    first), their description, and the regions all sources cover before the run's
    exclusions."""
    sets = plan(s.features or (), compare=s.compare)
    texts = list(dict.fromkeys(t for items in sets for t in items))
    sources = dict(zip(texts, _labels([resolve(t, gpkg) for t in texts]), strict=True))
    if s.embeddings is not None and not any(src.path is None for src in sources.values()):
        warnings.warn(
            f"--embeddings {s.embeddings} is not used: --features names no 'run' source.",
            UrbangeoWarning,
            stacklevel=2,
        )
    blocks = _blocks(list(sources.values()), gpkg, s.embeddings)
    common, dropped = common_regions(blocks)
    regions = kept(common, status)
    frames: dict[str, pd.DataFrame] = {}
    described = FeatureSets(dropped=dropped)
    for items in sets:
        chosen = [sources[t] for t in items]
        name = "+".join(src.label for src in chosen)
        part = {src.label: blocks[src.label].loc[regions] for src in chosen}
        frames[name] = standardise_blocks(part)
        described.weights[name] = block_weights(part)
        described.info[name] = {
            "sources": [src.text for src in chosen],
            "files": [str(src.path) if src.path else "run" for src in chosen],
            "blocks": {label: int(frame.shape[1]) for label, frame in part.items()},
            "columns": int(frames[name].shape[1]),
            "regions": len(regions),
        }
    described.main = next(iter(frames))
    described.extra = {k: v for k, v in frames.items() if k != described.main}
    return frames, described, len(common)


def predict_dataset(
    gpkg: Path | None, s: PredictSettings, status: pd.DataFrame | None
) -> tuple[Dataset, int, FeatureSets]:
    """``predict``'s dataset (without the regions the run excludes), the number of regions
    before those exclusions, and the feature sets (empty without ``s.features``)."""
    if not s.features:
        if gpkg is not None:
            data = dataset_from_gpkg(gpkg, embeddings=s.embeddings, indicators=s.indicators)
        else:
            data = dataset_from_files(s.embeddings, s.indicators)  # type: ignore[arg-type]
        return without_excluded(data, status), len(data.features), FeatureSets()
    frames, sets, n_all = feature_sets(gpkg, s, status)
    features = frames[sets.main]
    if gpkg is not None:
        regions = read_layer(gpkg, C.LAYER_REGIONS)
        regions[C.REGION_ID] = regions[C.REGION_ID].astype(str)
        table = load_indicators(s.indicators) if s.indicators else gpkg_indicators(gpkg)
        data = align(
            features, table, coords=coords_from_regions(regions), regions=regions, name=str(gpkg)
        )
    else:
        assert s.indicators is not None  # predict_stage refuses files without indicators
        data = align(features, load_indicators(s.indicators), name=sets.main)
    return data, n_all, sets


def comparison_table(report: PredictionReport) -> str:
    """Every feature set's test R² (mean ± std) per target and head, side by side; '' when
    the report scored no ``--features``."""
    block = report.protocol.get("feature_sets")
    if not block:
        return ""
    targets = list(report.targets)
    names = list(block["sets"])
    w = max([11, *(len(n) + 2 for n in names)])
    cw = max([15, *(len(t) for t in targets)])
    head = f"{'feature set':<{w}} {'dims':>6}  {'head':<8} " + " ".join(
        f"{t:>{cw}}" for t in targets
    )
    lines = [
        "Feature sets: test R² (mean ± std) on the same regions, splits and seeds; "
        "* fills the predictions layer",
        head,
        "-" * len(head),
    ]
    entries = block["sets"]
    heads = [  # the heads every set was scored with (--head ridge: ridge only)
        h
        for h in HEAD_LABELS
        if all(any(h in e["r2"].get(t, {}) for t in targets) for e in entries.values())
    ]
    for name in names:
        entry = entries[name]
        label = f"{name} *" if name == block["main"] else name
        for i, head_name in enumerate(heads):
            cells = []
            for t in targets:
                value = entry["r2"].get(t, {}).get(head_name)
                cells.append("–" if value is None else f"{value['mean']:.3f} ± {value['std']:.3f}")
            left = f"{label:<{w}} {entry['columns']:>6}" if i == 0 else " " * (w + 7)
            row = f"{left}  {HEAD_LABELS[head_name]:<8} "
            lines.append(row + " ".join(f"{c:>{cw}}" for c in cells))
    return "\n".join(lines)
