"""GeoCLIP's pretrained location encoder: ``embed --encoder geoclip-location`` and predict's
``location`` baseline (issue #17).

The expected vectors come from the geoclip package's own API (``geoclip.LocationEncoder()``,
which loads its packaged weights itself) at centroids computed here with pyproj; the network
is blocked while urbangeo encodes, so nothing may be downloaded. The tests need the optional
extra ``location`` (installed by ``.[dev]``, so they run in CI); without it they are skipped,
except the ones that check what happens then.
"""

from __future__ import annotations

import importlib.util
import json
import socket
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import pyogrio
import pytest
import shapely
from pyproj import Transformer

from tests.conftest import require
from tests.downstream.helpers import make_run
from tests.helpers import qgis_metadata_document
from urbangeo import constants as C
from urbangeo.downstream.heads import MLPConfig
from urbangeo.downstream.stages import predict_stage
from urbangeo.errors import MissingExtraError
from urbangeo.io.gpkg import read_layer, write_layers
from urbangeo.io.runs import read_stage_records
from urbangeo.model.encoders import ENCODERS
from urbangeo.model.encoders import geoclip as gc
from urbangeo.model.encoders.region_encoder import RegionEncoder
from urbangeo.model.stages import embed_stage
from urbangeo.progress import set_mode

#: geoclip's rff module uses torch.jit.script, which torch now deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")

UTM = "EPSG:32635"
X0, Y0 = 490_000.0, 6_700_000.0  # near Kotka (60.4 N, 26.8 E)
FAST = MLPConfig(hidden=16, max_epochs=40, patience=6)
#: Far-apart places, the equator, the dateline and near a pole (latitude, longitude).
PLACES = [
    (39.9042, 116.4074),
    (-23.5505, -46.6333),
    (60.1699, 24.9384),
    (0.0, 0.0),
    (-89.9, 179.9),
    (51.5007, -0.1246),
]
#: float32 outputs of the same computation (values up to about 0.06); equal in practice.
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(autouse=True)
def _quiet():
    set_mode("none")
    yield
    set_mode("bar")


def _geoclip_importable() -> bool:
    if importlib.util.find_spec("geoclip") is None:
        return False
    try:
        import geoclip  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture
def geoclip_package():
    """The geoclip package (skipped locally without the extra; a failure in CI)."""
    require(
        _geoclip_importable(),
        "geoclip (the optional extra urbangeo[location])",
        "pip install 'urbangeo[location]'",
    )
    import geoclip

    return geoclip


@pytest.fixture
def offline(monkeypatch):
    """No network: any connection attempt fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def package_vectors(geoclip, latlon) -> np.ndarray:
    """The package's own location features (its own loading of the packaged weights)."""
    import torch

    model = geoclip.LocationEncoder()  # from_pretrained=True: the packaged weights file
    with torch.no_grad():
        return model(torch.tensor(np.asarray(latlon), dtype=torch.float32)).numpy()


def utm_grid(cols: int, rows: int, size: float = 1000.0) -> gpd.GeoDataFrame:
    """Squares in UTM 35N, ids ``c{col}r{row}``."""
    cells, ids = [], []
    for r in range(rows):
        for c in range(cols):
            x, y = X0 + c * size, Y0 - r * size
            cells.append(shapely.box(x, y - size, x + size, y))
            ids.append(f"c{c}r{r}")
    return gpd.GeoDataFrame({C.REGION_ID: ids}, geometry=cells, crs=UTM)


def centre_latlon(regions: gpd.GeoDataFrame) -> np.ndarray:
    """The squares' centres (their bounds' midpoints) in WGS84 latitude, longitude."""
    bounds = regions.geometry.bounds.to_numpy()
    x, y = (bounds[:, 0] + bounds[:, 2]) / 2, (bounds[:, 1] + bounds[:, 3]) / 2
    lon, lat = Transformer.from_crs(UTM, C.WGS84, always_xy=True).transform(x, y)
    return np.column_stack([lat, lon])


# --- the encoder ------------------------------------------------------------------------------


def test_vectors_equal_the_package_location_encoder(geoclip_package, offline) -> None:
    ours = gc.encode_latlon(np.array(PLACES), device="cpu", batch_size=4)  # two batches
    expected = package_vectors(geoclip_package, PLACES)
    assert ours.shape == (len(PLACES), 512) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, rtol=RTOL, atol=ATOL)
    assert np.abs(ours).max() > 1e-3  # not all zeros: the weights were loaded
    # the weights are the packaged file, read from disk
    path = gc.weights_path()
    assert path is not None and path.parent.parent.parent == Path(geoclip_package.__file__).parent
    assert len(gc.weights_sha256(path)) == 64


def test_registered_as_a_region_encoder() -> None:
    implementation = ENCODERS.get("geoclip-location")
    assert implementation is gc.GeoClipLocationEncoder
    assert issubclass(implementation, RegionEncoder)


def test_embed_stage_writes_the_layer_and_parquet_with_attribution(
    tmp_path: Path, geoclip_package, offline
) -> None:
    regions = utm_grid(3, 2)
    tmp_path.joinpath("run").mkdir()
    gpkg = write_layers(tmp_path / "run" / "run.gpkg", {C.LAYER_REGIONS: regions})
    embed_stage(gpkg, encoder="geoclip-location", device="cpu")

    expected = package_vectors(geoclip_package, centre_latlon(regions))
    columns = [f"e{i}" for i in range(512)]
    table = pq.read_table(gpkg.parent / C.EMBEDDINGS_PARQUET)
    assert table.column_names == [C.REGION_ID, *columns]
    frame = table.to_pandas().set_index(C.REGION_ID).loc[regions[C.REGION_ID]]
    np.testing.assert_allclose(frame.to_numpy(), expected, rtol=RTOL, atol=ATOL)
    meta = json.loads(table.schema.metadata[b"urbangeo"])
    assert meta["encoder"] == "geoclip-location" and meta["licence"] == "MIT"
    assert "Vivanco Cepeda" in meta["attribution"] and "NeurIPS 2023" in meta["attribution"]
    assert meta["geoclip_version"] == "1.3.0" and len(meta["weights_sha256"]) == 64

    layer = read_layer(gpkg, C.LAYER_REGION_EMBEDDINGS)
    assert len(layer) == 6 and layer.crs == regions.crs
    layer = layer.set_index(C.REGION_ID).loc[regions[C.REGION_ID]]
    np.testing.assert_allclose(layer[columns].to_numpy(), expected, rtol=RTOL, atol=ATOL)
    description = pyogrio.read_info(gpkg, layer=C.LAYER_REGION_EMBEDDINGS)["layer_metadata"]
    assert "Vivanco Cepeda" in description["DESCRIPTION"]
    xml = qgis_metadata_document(gpkg, C.LAYER_REGION_EMBEDDINGS)
    assert "<license>MIT</license>" in xml and "Vivanco Cepeda" in xml
    record = read_stage_records(gpkg)["embed"]
    assert record.params["encoder"] == "geoclip-location"
    assert "Vivanco Cepeda" in record.params["attribution"]
    assert record.counts["regions"] == 6


def test_centroids_of_a_geographic_layer_are_taken_in_its_utm_zone() -> None:
    regions = utm_grid(2, 1)
    latlon = gc.region_latlon(regions.to_crs(C.WGS84))
    np.testing.assert_allclose(latlon, centre_latlon(regions), atol=1e-6)


# --- the location baseline of predict ---------------------------------------------------------


def test_location_baseline_in_predict_metrics_and_cached(
    tmp_path: Path, geoclip_package, offline
) -> None:
    gpkg, _, _ = make_run(tmp_path / "run", cols=5, rows=4)
    first = predict_stage(gpkg, targets=["population"], seeds=2, mlp=FAST)  # the default
    saved = json.loads((tmp_path / "run" / C.METRICS_JSON).read_text())
    models = saved["targets"]["population"]["metrics"]
    for model in ("location:mlp", "location:ridge", "coords_knn"):
        assert "mean" in models[model]["r2"] and model in first.report.protocol["models"]
    info = saved["protocol"]["baselines"]["location"]
    assert info["reused"] is False and info["dim"] == 512 and info["geoclip"] == "1.3.0"
    assert saved["protocol"]["baseline_features"]["location"] == 512

    cache = pq.read_table(tmp_path / "run" / "baselines" / "embeddings_location.parquet")
    regions = read_layer(gpkg, C.LAYER_REGIONS)
    frame = cache.to_pandas().set_index(C.REGION_ID).loc[regions[C.REGION_ID]]
    np.testing.assert_allclose(
        frame.to_numpy(), package_vectors(geoclip_package, gc.region_latlon(regions)), atol=ATOL
    )

    second = predict_stage(
        gpkg, targets=["population"], seeds=2, mlp=FAST, baselines="coords,location", overwrite=True
    )
    assert second.report.protocol["baselines"]["location"]["reused"] is True
    same = second.report.targets["population"].metrics["location:ridge"]["r2"]["values"]
    assert same == first.report.targets["population"].metrics["location:ridge"]["r2"]["values"]


def test_location_baseline_without_the_extra(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(gc, "weights_path", lambda: None)  # as if geoclip were not installed
    gpkg, _, _ = make_run(tmp_path / "run", cols=5, rows=4)
    result = predict_stage(gpkg, targets=["population"], seeds=1, mlp=FAST)  # the default
    skipped = result.report.protocol["baselines"]["location"]["skipped"]
    assert "urbangeo[location]" in skipped
    assert not any(m.startswith("location:") for m in result.report.protocol["models"])
    with pytest.raises(MissingExtraError, match=r"urbangeo\[location\]"):
        predict_stage(
            gpkg, targets=["population"], seeds=1, mlp=FAST, baselines="location", overwrite=True
        )
    with pytest.raises(MissingExtraError, match=r"urbangeo\[location\]"):
        embed_stage(gpkg, encoder="geoclip-location", overwrite=True)
