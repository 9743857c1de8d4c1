"""Static plots (PNG, matplotlib's Agg backend, no display needed)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from urbangeo.viz.colors import cluster_color


def cluster_density_plot(
    values: pd.DataFrame,
    labels: np.ndarray,
    path: str | os.PathLike,
    *,
    log: bool = True,
    title: str = "Indicator density per cluster",
) -> Path:
    """One panel per indicator: a KDE curve (scipy's gaussian_kde) of each cluster's values.

    ``values``: one column per indicator, rows aligned with ``labels``; values are shown as
    ln(1 + y) with ``log``. A cluster with fewer than two distinct values is drawn as a
    vertical line. Written as a PNG at ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from scipy.stats import gaussian_kde

    path = Path(path)
    names = list(values.columns)
    fig = Figure(figsize=(4.2 * max(1, len(names)), 3.4), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(1, len(names)), squeeze=False)[0]
    clusters = sorted(set(int(c) for c in labels))
    for ax, name in zip(axes, names, strict=False):
        column = values[name].to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            column = np.log1p(column) if log else column
        finite = np.isfinite(column)
        if not finite.any():
            ax.set_title(f"{name} (no values)")
            continue
        lo, hi = np.nanmin(column[finite]), np.nanmax(column[finite])
        pad = 0.05 * (hi - lo or 1.0)
        grid = np.linspace(lo - pad, hi + pad, 256)
        for c in clusters:
            v = column[(labels == c) & finite]
            color = cluster_color(c)
            label = f"cluster {c} (n={v.size})"
            if v.size >= 2 and np.ptp(v) > 0:
                ax.plot(grid, gaussian_kde(v)(grid), color=color, label=label, lw=2)
                ax.fill_between(grid, gaussian_kde(v)(grid), color=color, alpha=0.15)
            elif v.size:
                ax.axvline(v[0], color=color, label=label, lw=2)
        ax.set_xlabel(f"ln(1 + {name})" if log else name)
        ax.set_ylabel("density")
        ax.set_title(name)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
