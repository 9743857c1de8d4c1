"""Clusters of regions in the embedding space: PCA, then KMeans (the paper's case study).

The embeddings are centred and projected on their first principal components (default 10,
fewer when there are fewer regions or dimensions); KMeans (10 restarts, fixed seed) partitions
the projected regions. The silhouette score (on the same projection; on a seeded sample of
5,000 regions when there are more) is reported for every k of a small range, and ``k="auto"``
picks the best one. Clusters are numbered by size, 0 the largest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from urbangeo.errors import InputError

DEFAULT_K = 3
DEFAULT_K_RANGE = (2, 8)
DEFAULT_COMPONENTS = 10
SILHOUETTE_SAMPLE = 5000


@dataclass
class ClusterResult:
    """Cluster labels, principal-component coordinates and the silhouette of each k."""

    region_ids: pd.Index
    labels: np.ndarray
    components: np.ndarray
    explained: list[float]
    k: int
    silhouettes: dict[int, float]

    def frame(self) -> pd.DataFrame:
        """region_id-indexed ``cluster``, ``pc1``, ``pc2`` (0 when there is one component)."""
        pcs = self.components
        return pd.DataFrame(
            {
                "cluster": self.labels.astype(np.int64),
                "pc1": pcs[:, 0],
                "pc2": pcs[:, 1] if pcs.shape[1] > 1 else 0.0,
            },
            index=self.region_ids,
        )

    def table(self) -> str:
        """The silhouette of each k, the chosen one marked."""
        lines = ["k   silhouette"]
        for k, s in self.silhouettes.items():
            lines.append(f"{k:<3} {s:>10.3f}{'   <- chosen' if k == self.k else ''}")
        sizes = np.bincount(self.labels, minlength=self.k)
        lines.append("cluster sizes: " + ", ".join(f"{c}: {n}" for c, n in enumerate(sizes)))
        return "\n".join(lines)


def cluster_embeddings(
    features: pd.DataFrame,
    *,
    k: int | str = DEFAULT_K,
    k_range: tuple[int, int] = DEFAULT_K_RANGE,
    components: int = DEFAULT_COMPONENTS,
    seed: int = 0,
) -> ClusterResult:
    """PCA + KMeans of region embeddings (see the module docstring)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score

    X = features.to_numpy(dtype=np.float64)
    n, d = X.shape
    lo, hi = k_range
    if k != "auto" and (not isinstance(k, int) or k < 2):
        raise InputError(f"k must be 2 or more, or 'auto', not {k!r}.")
    need = max(k if isinstance(k, int) else hi, 2) + 1
    if n < need:
        raise InputError(
            f"{n} region(s) are too few for {k if k != 'auto' else hi} clusters.",
            hint="Cluster more regions, or ask for fewer clusters with --k.",
        )
    n_comp = max(1, min(components, n - 1, d))
    pca = PCA(n_components=n_comp, random_state=seed)
    Z = pca.fit_transform(X)
    sample = min(n, SILHOUETTE_SAMPLE)
    ks = list(range(max(2, lo), min(hi, n - 1) + 1))
    if isinstance(k, int) and k not in ks:
        ks = sorted({*ks, k})
    fits, silhouettes = {}, {}
    for kk in ks:
        model = KMeans(n_clusters=kk, n_init=10, random_state=seed).fit(Z)
        fits[kk] = model.labels_
        if len(set(model.labels_)) < 2:
            silhouettes[kk] = float("nan")
            continue
        silhouettes[kk] = float(
            silhouette_score(Z, model.labels_, sample_size=sample, random_state=seed)
        )
    chosen = k if isinstance(k, int) else max(silhouettes, key=lambda j: silhouettes[j])
    raw = fits[chosen]
    order = np.argsort(-np.bincount(raw, minlength=chosen), kind="stable")
    relabel = np.empty_like(order)
    relabel[order] = np.arange(chosen)
    return ClusterResult(
        region_ids=features.index,
        labels=relabel[raw],
        components=Z,
        explained=[float(v) for v in pca.explained_variance_ratio_],
        k=int(chosen),
        silhouettes=silhouettes,
    )
