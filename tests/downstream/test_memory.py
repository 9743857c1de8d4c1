"""predict and cluster hold the float32 embedding matrix once: on a run whose embeddings the
whole-matrix code copied several times over (float64 included), they finish under an
address-space limit a little above the matrix, with the values of an independent
computation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import run_limited
from urbangeo import constants as C

N, DIM = 150_000, 256
#: Address space the stage may add after its imports and a warm-up: the float32 matrix
#: (146 MB) plus blocks of rows, the silhouette's 5,000-region sample and the outputs.
BUDGET_MB = 600

CHILD = r"""
import json, resource, sys
import numpy as np
from urbangeo.downstream.cluster import cluster_embeddings
from urbangeo.downstream.heads import MLPConfig
from urbangeo.downstream.predict import evaluate
from urbangeo.downstream.tables import dataset_from_files, load_embeddings

what, small, big, indicators, out = sys.argv[1:6]
mlp = MLPConfig(max_epochs=1, patience=1, min_steps_per_epoch=1, batch_size=4096)

def work(parquet):
    if what == "cluster":
        result = cluster_embeddings(load_embeddings(parquet), k=3)
        return {"labels": result.labels, "pcs": result.components}
    data = dataset_from_files(parquet, indicators)
    report = evaluate(data, ["y"], seeds=1, mlp=mlp, coords_baseline=False, cv="split", log=False)
    target = report.targets["y"]
    return {"ridge": target.predictions["ridge"][0], "sets": target.sets[0],
            "alpha": np.array(target.chosen["ridge"][:1]),
            "mlp": target.predictions["mlp"][0]}

work(small)  # warm-up: every library and kernel loaded
limit = int((vm_mb() + BUDGET) * 2**20)
hard = resource.getrlimit(resource.RLIMIT_AS)[1]
resource.setrlimit(resource.RLIMIT_AS, (limit, hard))  # the soft limit: lifted to save
arrays = work(big)
resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
np.savez(out, **arrays)
print("RESULT " + json.dumps({"limit_mb": limit / 2**20}))
"""


def _write(folder: Path, vectors: np.ndarray, y: np.ndarray) -> tuple[Path, Path]:
    ids = [f"r{i:06d}" for i in range(len(vectors))]
    columns = {C.REGION_ID: pa.array(ids)}
    columns.update({f"e{i}": pa.array(vectors[:, i]) for i in range(vectors.shape[1])})
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), folder / "embeddings.parquet")
    pd.DataFrame({C.REGION_ID: ids, "y": y}).to_csv(folder / "indicators.csv", index=False)
    return folder / "embeddings.parquet", folder / "indicators.csv"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """Three separated clusters in the first dimensions, noise in the others; an indicator
    linear in the first four."""
    folder = tmp_path_factory.mktemp("memory")
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, N)
    vectors = rng.normal(size=(N, DIM)).astype(np.float32)
    vectors[:, :3] += 6.0 * np.eye(3, dtype=np.float32)[truth]
    y = vectors[:, :4].astype(np.float64) @ [1.0, -0.5, 0.3, 0.2] + rng.normal(0, 0.1, N) + 5
    small = _write(folder / "small", vectors[:500], y[:500])
    big = _write(folder / "big", vectors, y)
    # what the whole-matrix reading alone held: the table, its frame, two copies, two float64
    assert N * DIM * (4 * 4 + 8 * 2) / 2**20 > 1.5 * BUDGET_MB
    return {"vectors": vectors, "y": y, "truth": truth, "small": small, "big": big}


def _child(what: str, data: dict, out: Path) -> dict:
    code = CHILD.replace("BUDGET", str(BUDGET_MB))
    run_limited(code, what, data["small"][0], data["big"][0], data["big"][1], out)
    return dict(np.load(out))


def test_cluster_under_a_memory_limit(data: dict, tmp_path: Path) -> None:
    from sklearn.decomposition import PCA
    from sklearn.metrics import adjusted_rand_score

    got = _child("cluster", data, tmp_path / "out.npz")
    assert adjusted_rand_score(data["truth"], got["labels"]) > 0.99
    expected = PCA(n_components=10).fit_transform(data["vectors"].astype(np.float64))
    pcs = got["pcs"]
    signs = np.sign((pcs * expected).sum(axis=0))
    np.testing.assert_allclose(pcs[:, :3] * signs[:3], expected[:, :3], atol=1e-4)


def test_predict_under_a_memory_limit(data: dict, tmp_path: Path) -> None:
    got = _child("predict", data, tmp_path / "out.npz")
    X, y = data["vectors"].astype(np.float64), data["y"]
    train = np.flatnonzero(got["sets"] == 0)
    assert len(train) == round(0.6 * N)
    mu, sd = X[train].mean(0), X[train].std(0)
    Xs = (X[train] - mu) / sd
    ymu, ysd = y[train].mean(), y[train].std()
    alpha = float(got["alpha"][0])
    coef = np.linalg.solve(Xs.T @ Xs + alpha * np.eye(DIM), Xs.T @ ((y[train] - ymu) / ysd))
    expected = ((X - mu) / sd @ coef) * ysd + ymu
    np.testing.assert_allclose(got["ridge"], expected, rtol=1e-6, atol=1e-8)
    test = got["sets"] == 2
    assert np.corrcoef(got["mlp"][test], y[test])[0, 1] > 0.5  # one epoch: it learned
