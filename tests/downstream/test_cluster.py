import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, silhouette_score

from tests.downstream.helpers import embeddings_table, make_run
from urbangeo import constants as C
from urbangeo.downstream.cluster import cluster_embeddings
from urbangeo.downstream.stages import cluster_stage
from urbangeo.downstream.tables import embeddings_frame
from urbangeo.errors import InputError
from urbangeo.io.gpkg import read_layer
from urbangeo_cli.downstream import cluster


def blobs(sizes=(50, 30, 20), dim=12, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10, size=(len(sizes), dim))
    truth = np.repeat(np.arange(len(sizes)), sizes)
    X = centres[truth] + rng.normal(size=(len(truth), dim))
    ids = [f"r{i}" for i in range(len(truth))]
    return embeddings_frame(embeddings_table(ids, X)), truth


def test_blobs_are_recovered_and_numbered_by_size():
    features, truth = blobs()
    result = cluster_embeddings(features, k=3, components=5)
    assert adjusted_rand_score(truth, result.labels) == 1.0
    assert np.bincount(result.labels).tolist() == [50, 30, 20]
    Z = PCA(n_components=5).fit_transform(features.to_numpy())
    assert np.allclose(np.abs(result.components), np.abs(Z), atol=1e-6)
    assert result.silhouettes[3] == pytest.approx(silhouette_score(Z, result.labels))
    assert set(result.silhouettes) == set(range(2, 9))


def test_auto_k_takes_the_best_silhouette():
    features, _ = blobs(sizes=(40, 40, 40, 40))
    result = cluster_embeddings(features, k="auto")
    assert result.k == 4 == max(result.silhouettes, key=result.silhouettes.get)


def test_too_few_regions():
    features, _ = blobs(sizes=(2, 1))
    with pytest.raises(InputError, match="too few"):
        cluster_embeddings(features, k=3)


def test_stage_writes_layer_and_density_plot(tmp_path):
    gpkg, _, _ = make_run(tmp_path / "run")
    result = cluster_stage(gpkg, k_range=(2, 4))
    layer = read_layer(gpkg, C.LAYER_CLUSTERS)
    assert len(layer) == 120 and set(layer["cluster"]) == {0, 1, 2}
    assert {"pc1", "pc2", C.REGION_ID} <= set(layer.columns)
    png = tmp_path / "run" / C.MAPS_DIR / "cluster_density.png"
    assert result.files == (png,)
    image = Image.open(png).convert("RGB")
    assert image.size[0] > 400 and len(image.getcolors(1 << 24)) > 50


def test_cli_cluster_on_files(tmp_path):
    features, _ = blobs()
    frame = features.reset_index()
    frame.to_parquet(tmp_path / "e.parquet")
    pd.DataFrame({C.REGION_ID: frame[C.REGION_ID], "pop": np.arange(100.0)}).to_csv(
        tmp_path / "i.csv", index=False
    )
    args = [
        "--embeddings",
        tmp_path / "e.parquet",
        "--indicators",
        tmp_path / "i.csv",
        "-o",
        tmp_path / "c.csv",
        "--plot",
        tmp_path / "d.png",
        "--k",
        "auto",
    ]
    result = CliRunner().invoke(cluster, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "<- chosen" in result.stdout
    table = pd.read_csv(tmp_path / "c.csv")
    assert list(table.columns) == [C.REGION_ID, "cluster", "pc1", "pc2"]
    assert (tmp_path / "d.png").stat().st_size > 10_000
    bad = CliRunner().invoke(cluster, ["--embeddings", str(tmp_path / "e.parquet"), "--k", "x"])
    assert bad.exit_code == 1 and "--k" in bad.output


def test_cli_k_range_is_min_max_and_refused_reversed(tmp_path):
    """Issue #14: `--k-range 8 2` is refused by the settings, before any work."""
    features, _ = blobs()
    features.reset_index().to_parquet(tmp_path / "e.parquet")
    base = ["--embeddings", str(tmp_path / "e.parquet"), "-q"]
    bad = CliRunner().invoke(cluster, [*base, "--k-range", "8", "2", "-o", str(tmp_path / "c.csv")])
    assert bad.exit_code == 1, bad.output
    assert "--k-range" in bad.output and "MIN <= MAX" in bad.output
    assert "Traceback" not in bad.output and not (tmp_path / "c.csv").exists()
    good = CliRunner().invoke(cluster, [*base, "--k-range", "2", "4", "--k", "auto"])
    assert good.exit_code == 0, good.output
    with pytest.raises(InputError, match="MIN <= MAX"):
        cluster_stage(None, embeddings=tmp_path / "e.parquet", k_range=(8, 2))
