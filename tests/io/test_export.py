"""``urbangeo export``: a run's layers as GeoParquet that reads back as ``read_layer`` reads the
GeoPackage, written atomically, in the memory of one batch."""

from __future__ import annotations

import json
import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import shapely
from click.testing import CliRunner
from geopandas.testing import assert_geodataframe_equal
from pyproj import CRS

from tests.helpers import modules_loaded_by, run_limited
from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.io.export import export, export_layer, export_run
from urbangeo.io.gpkg import read_layer, write_layers
from urbangeo_cli.main import cli

pytestmark = pytest.mark.usefixtures("quiet_progress")

UTM35 = "EPSG:32635"
N_REGIONS = 11


def _regions(n: int = N_REGIONS) -> gpd.GeoDataFrame:
    """Polygons in a projected CRS with every kind of value a run's layers hold, NULLs too."""
    x = 500_000 + np.arange(n) * 1000.0
    return gpd.GeoDataFrame(
        {
            C.REGION_ID: [f"{i}_7" for i in range(n)],
            "n_images": np.arange(n, dtype=np.int64),
            "col": np.arange(n, dtype=np.int32),
            "population": np.linspace(0, 1e6, n),
            "score": np.linspace(0, 1, n).astype(np.float32),
            "caption": [None if i % 3 == 0 else f"a street {i} – ünïcode" for i in range(n)],
            "cluster": pd.array([None if i % 4 == 0 else i % 3 for i in range(n)], dtype="Int64"),
            "residual": [math.nan if i % 2 else i / 7 for i in range(n)],
            "edge": [i % 5 == 0 for i in range(n)],
            "made": pd.to_datetime(["2024-05-01T10:30:00"] * n),
        },
        geometry=shapely.box(x, 6_700_000, x + 1000, 6_701_000),
        crs=UTM35,
    )


def _run(folder: Path, n: int = N_REGIONS) -> Path:
    """A run-like GeoPackage: regions, images (with an old kind spelling), a mixed layer, a
    table without geometry, urbangeo's record table and QGIS's styles."""
    regions = _regions(n)
    images = gpd.GeoDataFrame(
        {
            C.IMAGE_ID: [f"ov{i}" for i in range(n)],
            C.KIND: ["satellite" if i % 2 else C.KIND_OVERHEAD for i in range(n)],
            C.REGION_ID: regions[C.REGION_ID],
        },
        geometry=regions.centroid,
        crs=UTM35,
    )
    mixed = gpd.GeoDataFrame(
        {"k": [1, 2, 3, 4]},
        geometry=[
            shapely.Point(500_100, 6_699_000),
            shapely.MultiPolygon([shapely.box(499_000, 6_700_000, 499_500, 6_702_500)]),
            None,
            shapely.Polygon(),
        ],
        crs=UTM35,
    )
    indicators = pd.DataFrame(
        {C.REGION_ID: regions[C.REGION_ID], "population": [math.nan, *range(n - 1)]}
    )
    stages = pd.DataFrame({"stage": ["grid"], "finished": ["2024-05-01T10:30:00+00:00"]})
    gpkg = folder / "run.gpkg"
    write_layers(
        gpkg,
        {
            C.LAYER_REGIONS: regions,
            C.LAYER_IMAGES: images,
            "mixed": mixed,
            C.LAYER_INDICATORS: indicators,
            "urbangeo_stages": stages,
        },
        styles=True,
    )
    return gpkg


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return _run(tmp_path / "city")


def _as_read_layer(frame: pd.DataFrame) -> pd.DataFrame:
    """``read_layer``'s frame with its date-times in UTC, as the GeoPackage stores them."""
    frame = frame.copy()
    for name in frame.columns:
        if isinstance(frame[name].dtype, np.dtype) and frame[name].dtype.kind == "M":
            frame[name] = frame[name].dt.tz_localize("UTC")
    return frame


@pytest.mark.parametrize("layer", [C.LAYER_REGIONS, C.LAYER_IMAGES, "mixed"])
def test_a_layer_reads_back_as_read_layer_reads_it(run: Path, tmp_path: Path, layer: str) -> None:
    out = tmp_path / f"{layer}.parquet"
    result = export_layer(run, layer, out, batch_rows=3)
    got = gpd.read_parquet(out)
    expected = _as_read_layer(read_layer(run, layer))
    assert (result.layer, result.path, result.rows) == (layer, out, len(expected))
    assert result.bytes == out.stat().st_size > 0
    assert got.crs == expected.crs == CRS(UTM35)
    assert list(got.columns) == list(expected.columns)
    assert_geodataframe_equal(got, expected, check_dtype=True)
    if layer == C.LAYER_IMAGES:  # old spellings of kinds replaced, as read_layer does
        assert set(got[C.KIND]) == {C.KIND_OVERHEAD}


def test_regions_keep_their_types_and_nulls(run: Path, tmp_path: Path) -> None:
    export_layer(run, C.LAYER_REGIONS, tmp_path / "r.parquet")
    got = gpd.read_parquet(tmp_path / "r.parquet")
    source = _regions()
    assert got["n_images"].dtype == np.int64 and got["col"].dtype == np.int32
    assert got["score"].dtype == np.float32 and got["edge"].dtype == bool
    assert got["caption"].isna().tolist() == source["caption"].isna().tolist()
    assert got["cluster"].isna().tolist() == source["cluster"].isna().tolist()
    np.testing.assert_array_equal(got["residual"], source["residual"])
    assert (got["made"] == pd.Timestamp("2024-05-01T10:30:00", tz="UTC")).all()
    assert shapely.equals(got.geometry.values, source.geometry.values).all()


def test_small_batches_are_row_groups(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    export_layer(run, C.LAYER_REGIONS, out, batch_rows=4)
    meta = pq.ParquetFile(out).metadata
    assert meta.num_rows == N_REGIONS
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [4, 4, 3]
    export_layer(run, C.LAYER_REGIONS, out)
    assert pq.ParquetFile(out).metadata.num_row_groups == 1


@pytest.mark.parametrize("layer", [C.LAYER_REGIONS, "mixed"])
def test_geo_metadata_is_geoparquet(run: Path, tmp_path: Path, layer: str) -> None:
    out = tmp_path / "x.parquet"
    export_layer(run, layer, out, batch_rows=2)
    geo = json.loads(pq.read_schema(out).metadata[b"geo"])
    assert geo["version"] == "1.0.0" and geo["primary_column"] == "geometry"
    column = geo["columns"]["geometry"]
    assert column["encoding"] == "WKB"
    layer_frame = read_layer(run, layer)
    assert CRS.from_json_dict(column["crs"]) == layer_frame.crs
    assert column["geometry_types"] == sorted(set(layer_frame.geom_type.dropna()))
    np.testing.assert_allclose(column["bbox"], layer_frame.total_bounds)
    schema = pq.read_schema(out)
    assert str(schema.field("geometry").type) == "binary" and not schema.field("geometry").metadata


def test_a_table_without_geometry_is_plain_parquet(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "indicators.parquet"
    assert export_layer(run, C.LAYER_INDICATORS, out).rows == N_REGIONS
    assert b"geo" not in (pq.read_schema(out).metadata or {})
    pd.testing.assert_frame_equal(pd.read_parquet(out), read_layer(run, C.LAYER_INDICATORS))


def test_an_empty_layer_has_its_columns_and_crs(run: Path, tmp_path: Path) -> None:
    write_layers(run, {C.LAYER_CLUSTERS: _regions().iloc[:0]})
    out = tmp_path / "clusters.parquet"
    assert export_layer(run, C.LAYER_CLUSTERS, out).rows == 0
    got = gpd.read_parquet(out)
    assert len(got) == 0 and got.crs == CRS(UTM35)
    assert list(got.columns) == list(_regions().columns)


def test_the_run_exports_its_data_layers_not_its_own_tables(run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "new" / "parquet"
    results = export_run(run, folder)
    layers = [C.LAYER_REGIONS, C.LAYER_IMAGES, "mixed", C.LAYER_INDICATORS]
    assert [r.layer for r in results] == layers
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}.parquet" for n in layers)
    assert [r.path for r in results] == [folder / f"{n}.parquet" for n in layers]
    picked = export_run(run, tmp_path / "two", [C.LAYER_INDICATORS, C.LAYER_REGIONS])
    assert [r.layer for r in picked] == [C.LAYER_INDICATORS, C.LAYER_REGIONS]


def test_a_file_output_takes_exactly_one_layer(run: Path, tmp_path: Path) -> None:
    (one,) = export(run, tmp_path / "r.parquet", [C.LAYER_REGIONS])
    assert one.rows == N_REGIONS
    with pytest.raises(InputError, match="exactly one layer") as info:
        export(run, tmp_path / "x.parquet")
    assert "regions" in (info.value.hint or "")
    with pytest.raises(InputError, match="exactly one layer"):
        export(run, tmp_path / "x.parquet", [C.LAYER_REGIONS, C.LAYER_IMAGES])
    assert not (tmp_path / "x.parquet").exists()


def test_clear_errors_before_any_work(run: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        export_layer(tmp_path / "nope.gpkg", C.LAYER_REGIONS, tmp_path / "r.parquet")
    with pytest.raises(InputError, match="'roads'") as info:
        export_run(run, tmp_path / "out", [C.LAYER_REGIONS, C.LAYER_ROADS])
    assert info.value.hint is not None
    assert "regions" in info.value.hint and "indicators" in info.value.hint
    assert "urbangeo_stages" not in info.value.hint
    assert not (tmp_path / "out").exists()  # nothing written, not even the first layer
    with pytest.raises(InputError, match="at least 1 row"):
        export_layer(run, C.LAYER_REGIONS, tmp_path / "r.parquet", batch_rows=0)


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("existing", [True, False])
def test_a_failure_midway_leaves_the_old_file_or_none(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: type, existing: bool
) -> None:
    out = tmp_path / "out" / "regions.parquet"
    if existing:
        export_layer(run, C.LAYER_IMAGES, out)
    before = out.read_bytes() if existing else None
    calls = []
    original = pq.ParquetWriter.write_batch

    def fail_on_the_second(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise error("disk full")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_batch", fail_on_the_second)
    with pytest.raises(error):
        export_layer(run, C.LAYER_REGIONS, out, batch_rows=4)
    assert len(calls) == 2  # it failed half-way
    if existing:
        assert out.read_bytes() == before
        assert sorted(p.name for p in out.parent.iterdir()) == ["regions.parquet"]
    else:
        assert not out.parent.exists()  # nor the folder it made


#: Address space the export may add to the process after its imports and a warm-up.
BUDGET_MB = 96
BIG_ROWS = 50_000
NOTE_BYTES = 4096

CHILD = r"""
import os
os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"  # mimalloc reserves address space ahead
import json, resource, sys
import pyarrow.parquet as pq
from urbangeo.io.export import export_layer

small, big, out = sys.argv[1:4]
export_layer(small, "regions", out, batch_rows=64)  # warm-up: GDAL, Arrow, Parquet loaded
limit = int((vm_mb() + {budget}) * 2**20)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
result = export_layer(big, "regions", out, batch_rows=1024)
try:
    pq.read_table(out)  # the layer whole, to show that the limit binds
    whole = "fits"
except MemoryError:
    whole = "does not fit"
print("RESULT " + json.dumps({{"rows": result.rows, "whole": whole}}))
"""


def _big_regions(n: int) -> gpd.GeoDataFrame:
    """``n`` square regions, each with a distinct ``NOTE_BYTES``-long note."""
    x = np.arange(n) % 1000 * 100.0
    y = 6_700_000 + np.arange(n) // 1000 * 100.0
    pad = "x" * (NOTE_BYTES - 8)
    return gpd.GeoDataFrame(
        {
            C.REGION_ID: [f"{i % 1000}_{i // 1000}" for i in range(n)],
            "note": [f"{i:08d}{pad}" for i in range(n)],
        },
        geometry=shapely.box(x, y, x + 100, y + 100),
        crs=UTM35,
    )


def test_a_layer_larger_than_the_memory_limit_exports(tmp_path: Path) -> None:
    assert BIG_ROWS * NOTE_BYTES / 2**20 > 2 * BUDGET_MB  # the notes alone
    small = tmp_path / "small.gpkg"
    big = tmp_path / "big.gpkg"
    write_layers(small, {C.LAYER_REGIONS: _big_regions(100)})
    write_layers(big, {C.LAYER_REGIONS: _big_regions(BIG_ROWS)})
    out = tmp_path / "big.parquet"
    stdout = run_limited(CHILD.format(budget=BUDGET_MB), small, big, out)
    result = json.loads(stdout.split("RESULT ")[-1])
    assert result == {"rows": BIG_ROWS, "whole": "does not fit"}

    parquet = pq.ParquetFile(out)
    assert parquet.metadata.num_rows == BIG_ROWS
    assert parquet.metadata.num_row_groups == math.ceil(BIG_ROWS / 1024)
    expected = _big_regions(BIG_ROWS)
    for group in (0, 17, parquet.metadata.num_row_groups - 1):
        rows = parquet.read_row_group(group).to_pandas()
        start = group * 1024
        want = expected.iloc[start : start + 1024]
        assert rows[C.REGION_ID].tolist() == want[C.REGION_ID].tolist()
        assert rows["note"].tolist() == want["note"].tolist()
        got = shapely.from_wkb(rows["geometry"].to_numpy())
        assert shapely.equals(got, want.geometry.values).all()
    geo = json.loads(parquet.schema_arrow.metadata[b"geo"])
    np.testing.assert_allclose(geo["columns"]["geometry"]["bbox"], expected.total_bounds)


def test_exporting_imports_no_torch(run: Path, tmp_path: Path) -> None:
    code = f"from urbangeo.io.export import export_run; export_run({str(run)!r}, {str(tmp_path)!r})"
    assert modules_loaded_by(code) == []
    assert (tmp_path / "regions.parquet").exists()


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_cli_helps(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["export", "--help"])
    assert result.exit_code == 0
    for text in ("Examples", "--layer", "--batch-rows", "read_parquet", "duckdb", "--quiet"):
        assert text in result.output
    assert "export" in runner.invoke(cli, ["--help"]).output


def test_cli_exports_every_layer_to_a_folder_and_one_to_a_file(
    runner: CliRunner, run: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "parquet"
    result = runner.invoke(
        cli, ["export", "--gpkg", str(run), "-o", str(folder), "--batch-rows", "5"]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.iterdir()) == [
        "images.parquet",
        "indicators.parquet",
        "mixed.parquet",
        "regions.parquet",
    ]
    assert "regions: 11 rows" in result.output
    assert_geodataframe_equal(
        gpd.read_parquet(folder / "regions.parquet"),
        _as_read_layer(read_layer(run, C.LAYER_REGIONS)),
    )
    file = tmp_path / "r.parquet"
    args = ["export", "--gpkg", str(run), "--layer", "regions", "-o", str(file), "--quiet"]
    quiet = runner.invoke(cli, args)
    assert quiet.exit_code == 0 and quiet.output == ""
    assert len(gpd.read_parquet(file)) == N_REGIONS


def test_cli_names_the_layers_when_one_is_unknown(
    runner: CliRunner, run: Path, tmp_path: Path
) -> None:
    args = ["export", "--gpkg", str(run), "--layer", "regoins", "-o", str(tmp_path / "x.parquet")]
    result = runner.invoke(cli, args)
    assert result.exit_code == 1
    assert "Error: Layer(s) 'regoins' not in" in result.output
    assert "Its layers: regions, images, mixed, indicators." in result.output
    missing = runner.invoke(cli, ["export", "--gpkg", str(tmp_path / "no.gpkg"), "-o", "x"])
    assert missing.exit_code == 1 and "does not exist" in missing.output
