"""Colours shared by the maps and the plots, so that a cluster has one colour everywhere."""

from __future__ import annotations

import numpy as np

#: matplotlib's "tab10" palette (categorical: clusters).
CATEGORICAL = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
#: Sequential ramp (viridis at 0, 0.25, 0.5, 0.75, 1) for indicator values.
SEQUENTIAL = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725")
#: Diverging ramp (blue, white, red) for residuals: under- and over-prediction.
DIVERGING = ("#2166ac", "#67a9cf", "#f7f7f7", "#ef8a62", "#b2182b")


def cluster_color(label: int) -> str:
    """The colour of cluster ``label`` (the palette repeats after 10)."""
    return CATEGORICAL[int(label) % len(CATEGORICAL)]


def ramp(values: np.ndarray, lo: float, hi: float, stops: tuple[str, ...]) -> list[str | None]:
    """Hex colours of ``values`` on a linear ramp between ``lo`` and ``hi`` (None for NaN)."""
    rgb = np.array([[int(s[i : i + 2], 16) for i in (1, 3, 5)] for s in stops], dtype=float)
    values = np.asarray(values, dtype=np.float64)
    span = hi - lo if hi > lo else 1.0
    t = np.clip((values - lo) / span, 0, 1) * (len(stops) - 1)
    out: list[str | None] = []
    for v, pos in zip(values, t, strict=True):
        if not np.isfinite(v):
            out.append(None)
            continue
        i = min(int(pos), len(stops) - 2)
        c = rgb[i] + (rgb[i + 1] - rgb[i]) * (pos - i)
        out.append("#{:02x}{:02x}{:02x}".format(*np.round(c).astype(int)))
    return out
