"""Clusters of regions in the embedding space: PCA, then KMeans (the paper's case study).

The embeddings are centred and projected on their first principal components (default 10,
fewer when there are fewer regions or dimensions); KMeans (10 restarts, fixed seed) partitions
the projected regions. The silhouette score (on the same projection; on a seeded sample of
5,000 regions when there are more) is reported for every k of a small range, and ``k="auto"``
picks the best one. Clusters are numbered by size, 0 the largest.

Above :data:`LARGE` regions the embeddings stay float32 (no float64 copy of the matrix; the
PCA solves the D x D covariance, accumulated in float64, instead of an SVD of the centred
matrix) and ``MiniBatchKMeans`` (batches of 4,096, 3 restarts) replaces KMeans, whose every
iteration passes over all regions: memory grows with the float32 matrix alone.
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
#: Above this many regions: float32, covariance PCA and MiniBatchKMeans (module docstring).
LARGE = 50_000


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
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score

    large = len(features) > LARGE
    X = features.to_numpy(dtype=np.float32 if large else np.float64)
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
    if large:
        Z, explained = _covariance_pca(X, n_comp)
    else:
        pca = PCA(n_components=n_comp, random_state=seed)
        Z = pca.fit_transform(X)
        explained = [float(v) for v in pca.explained_variance_ratio_]
    del X
    sample = min(n, SILHOUETTE_SAMPLE)
    ks = list(range(max(2, lo), min(hi, n - 1) + 1))
    if isinstance(k, int) and k not in ks:
        ks = sorted({*ks, k})
    fits, silhouettes = {}, {}
    for kk in ks:
        if large:
            model = MiniBatchKMeans(
                n_clusters=kk, n_init=3, batch_size=4096, random_state=seed
            ).fit(Z)
        else:
            model = KMeans(n_clusters=kk, n_init=10, random_state=seed).fit(Z)
        fits[kk] = model.labels_
        if len(np.unique(model.labels_)) < 2:
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
        explained=explained,
        k=int(chosen),
        silhouettes=silhouettes,
    )


#: Rows per block of :func:`_covariance_pca`.
_BLOCK = 16_384


def _covariance_pca(X: np.ndarray, n_comp: int) -> tuple[np.ndarray, list[float]]:
    """PCA of the rows of ``X`` through its covariance (float64 sums over row blocks, so
    that no copy of ``X`` is made): the coordinates ``[n, n_comp]`` (float64) and the
    explained variance ratios. Component signs as sklearn's (largest loading positive)."""
    n, d = X.shape
    mean = np.zeros(d)
    for start in range(0, n, _BLOCK):
        mean += X[start : start + _BLOCK].sum(axis=0, dtype=np.float64)
    mean /= n
    cov = np.zeros((d, d))
    for start in range(0, n, _BLOCK):
        block = X[start : start + _BLOCK].astype(np.float64) - mean
        cov += block.T @ block
    cov /= max(n - 1, 1)
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1][:n_comp]
    values, vectors = np.clip(evals[order], 0.0, None), evecs[:, order]
    flip = np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(n_comp)])
    vectors *= np.where(flip == 0, 1.0, flip)
    Z = np.empty((n, n_comp))
    for start in range(0, n, _BLOCK):
        Z[start : start + _BLOCK] = (X[start : start + _BLOCK].astype(np.float64) - mean) @ vectors
    total = float(np.clip(evals, 0.0, None).sum()) or 1.0
    return Z, [float(v / total) for v in values]
