"""Embedding products as encoders: rasters (AlphaEarth, TESSERA, generic) and patch files.

Every raster is synthetic, written here with rasterio (tiled GeoTIFFs, COGs and VRTs whose XML
is written by hand); the expected region vectors come from an independent numpy computation:
the pixel centres, moved to the grid's CRS, tested against each region polygon with shapely.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pyogrio
import pytest
import rasterio
import rasterio.shutil
import shapely
from click.testing import CliRunner
from pyproj import Transformer
from rasterio.enums import ColorInterp
from rasterio.transform import Affine, from_origin

from tests.helpers import qgis_metadata_document
from urbangeo import constants as C
from urbangeo.downstream.tables import gpkg_embeddings
from urbangeo.errors import InputError
from urbangeo.io.gpkg import read_layer, write_layers
from urbangeo.io.runs import read_stage_records
from urbangeo.model.encoders import ENCODERS
from urbangeo.model.encoders.patches import aggregate_patches
from urbangeo.model.encoders.raster import PRODUCTS, aggregate_raster
from urbangeo.model.encoders.region_encoder import RegionEncoder
from urbangeo.model.stages import embed_stage
from urbangeo.progress import set_mode
from urbangeo.settings.model import RASTER_PRODUCTS
from urbangeo_cli.main import cli

UTM = "EPSG:32635"
MERCATOR = "EPSG:3857"
X0, Y0 = 490_013.7, 6_700_008.3  # near Kotka (60.4 N, 26.8 E)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _quiet():
    set_mode("none")
    yield
    set_mode("bar")


# --- synthetic data ----------------------------------------------------------------------------


def grid(cols: int, rows: int, *, x0: float = X0, y0: float = Y0, size: float = 100.0, gap=0.0):
    """``cols`` × ``rows`` square regions of ``size`` metres (UTM 35N), ids ``c{col}r{row}``."""
    cells, ids = [], []
    for r in range(rows):
        for c in range(cols):
            x, y = x0 + c * (size + gap), y0 - r * (size + gap)
            cells.append(shapely.box(x, y - size, x + size, y))
            ids.append(f"c{c}r{r}")
    return gpd.GeoDataFrame({C.REGION_ID: ids}, geometry=cells, crs=UTM)


def write_raster(path: Path, data: np.ndarray, *, crs: str, transform: Affine, **profile) -> Path:
    """A tiled GeoTIFF of ``data`` ``[bands, rows, cols]``; ``cog=True``: a COG."""
    cog = profile.pop("cog", False)
    colorinterp = profile.pop("colorinterp", None)
    target = path.with_suffix(".tmp.tif") if cog else path
    bands, height, width = data.shape
    with rasterio.open(
        target,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=bands,
        dtype=data.dtype,
        crs=crs,
        transform=transform,
        tiled=True,
        blockxsize=64,
        blockysize=64,
        **profile,
    ) as ds:
        ds.write(data)
        if colorinterp:
            ds.colorinterp = colorinterp
    if cog:
        rasterio.shutil.copy(target, path, driver="COG", BLOCKSIZE=128, COMPRESS="DEFLATE")
        target.unlink()
    return path


def write_vrt(
    path: Path,
    tiles: list[tuple[Path, int, int, int, int]],
    *,
    width: int,
    height: int,
    bands: int,
    dtype: str,
    crs: str,
    transform: Affine,
    nodata: float | None = None,
) -> Path:
    """A VRT mosaic of ``tiles`` ``(file, x_offset, y_offset, width, height)`` (no
    gdalbuildvrt needed)."""
    gdal_type = {"int8": "Int8", "float32": "Float32", "uint8": "Byte"}[dtype]
    wkt = rasterio.crs.CRS.from_user_input(crs).to_wkt()
    geo = ", ".join(repr(float(v)) for v in transform.to_gdal())
    parts = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">']
    parts.append(f"<SRS>{wkt.replace('&', '&amp;').replace('<', '&lt;')}</SRS>")
    parts.append(f"<GeoTransform>{geo}</GeoTransform>")
    for band in range(1, bands + 1):
        parts.append(f'<VRTRasterBand dataType="{gdal_type}" band="{band}">')
        if nodata is not None:
            parts.append(f"<NoDataValue>{nodata}</NoDataValue>")
        for file, xoff, yoff, w, h in tiles:
            parts.append(
                f'<SimpleSource><SourceFilename relativeToVRT="0">{file}</SourceFilename>'
                f"<SourceBand>{band}</SourceBand>"
                f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
                f'<DstRect xOff="{xoff}" yOff="{yoff}" xSize="{w}" ySize="{h}"/></SimpleSource>'
            )
        parts.append("</VRTRasterBand>")
    parts.append("</VRTDataset>")
    path.write_text("\n".join(parts))
    return path


def dequantise(x: np.ndarray) -> np.ndarray:
    """AlphaEarth's rule, written out again: sign(x)·(|x|/127.5)²."""
    x = x.astype(np.float64)
    return np.sign(x) * np.abs(x / 127.5) ** 2


def centre_masks(regions, transform: Affine, crs: str, shape: tuple[int, int], pad: int):
    """Per region: which pixel centres of the lattice (``pad`` pixels beyond the raster on
    every side) fall in it, by moving the centres to the regions' CRS."""
    height, width = shape
    rows, cols = np.mgrid[-pad : height + pad, -pad : width + pad]
    xs, ys = transform @ (cols + 0.5, rows + 0.5)
    gx, gy = Transformer.from_crs(crs, regions.crs, always_xy=True).transform(xs, ys)
    return [shapely.contains_xy(geom, gx, gy) for geom in regions.geometry]


def expected_vectors(regions, data, nodata, transform, crs, *, quantised, normalise, pad=30):
    """(vectors, valid_share) by the independent computation."""
    bands, height, width = data.shape
    fill = nodata if nodata is not None and not np.isnan(nodata) else np.nan
    big = np.full((bands, height + 2 * pad, width + 2 * pad), fill, dtype=np.float64)
    big[:, pad : pad + height, pad : pad + width] = data
    if nodata is None or np.isnan(nodata):
        valid = np.isfinite(big).all(axis=0)
    else:
        valid = (big != nodata).all(axis=0)
    vectors, shares = [], []
    for mask in centre_masks(regions, transform, crs, (height, width), pad):
        chosen = mask & valid
        shares.append(chosen.sum() / mask.sum())
        if not chosen.any():
            vectors.append(np.zeros(bands))
            continue
        values = big[:, chosen]
        mean = (dequantise(values) if quantised else values).mean(axis=1)
        vectors.append(mean / np.linalg.norm(mean) if normalise else mean)
    return np.array(vectors), np.array(shares)


def assert_float_means(result, regions, data, transform, *, normalise: bool, atol: float) -> None:
    """The vectors and valid shares of ``result`` (``data``, floats in UTM with NaN as nodata,
    aggregated to ``regions``) are those of the independent computation."""
    want, share = expected_vectors(
        regions, data, np.nan, transform, UTM, quantised=False, normalise=normalise
    )
    np.testing.assert_allclose(result.vectors, want, atol=atol)
    np.testing.assert_allclose(result.frame["valid_share"], share)


def aef_data(rng, bands: int, height: int, width: int) -> np.ndarray:
    data = rng.integers(-127, 128, (bands, height, width)).astype(np.int8)
    holes = rng.random((height, width)) < 0.05
    data[:, holes] = -128  # masked in every band, as in the COGs
    return data


# --- rasters -----------------------------------------------------------------------------------


def test_aef_vrt_of_tiles_in_another_crs_equals_numpy(tmp_path: Path) -> None:
    """int8 AlphaEarth-style tiles in Web Mercator, a VRT of them, a UTM grid: de-quantised,
    masked (-128), averaged over the pixel centres in each region, re-normalised."""
    rng = np.random.default_rng(1)
    regions = grid(6, 5)
    # the raster covers the grid but for half of its last column of cells
    x0, y0, x1, y1 = regions.total_bounds
    to_merc = Transformer.from_crs(UTM, MERCATOR, always_xy=True)
    left, top = to_merc.transform(x0 - 60, y1 + 60)
    right, bottom = to_merc.transform(x1 - 50, y0 - 60)
    res = 20.0  # Web Mercator metres: about 10 m on the ground at 60 N
    width, height = int((right - left) // res), int((top - bottom) // res)
    transform = from_origin(left, top, res, res)
    data = aef_data(rng, 64, height, width)
    # region c2r2: no data at all
    mask = centre_masks(regions.iloc[[14]], transform, MERCATOR, (height, width), 0)[0]
    rows, cols = np.nonzero(mask)
    data[:, rows.min() - 1 : rows.max() + 2, cols.min() - 1 : cols.max() + 2] = -128
    tiles = []
    half_w, half_h = width // 2, height // 2
    for ty, (r0, r1) in enumerate(((0, half_h), (half_h, height))):
        for tx, (c0, c1) in enumerate(((0, half_w), (half_w, width))):
            tile = tmp_path / f"tile_{ty}{tx}.tif"
            write_raster(
                tile,
                data[:, r0:r1, c0:c1],
                crs=MERCATOR,
                transform=transform @ Affine.translation(c0, r0),
                nodata=-128,
            )
            tiles.append((tile, c0, r0, c1 - c0, r1 - r0))
    vrt = write_vrt(
        tmp_path / "mosaic.vrt",
        tiles,
        width=width,
        height=height,
        bands=64,
        dtype="int8",
        crs=MERCATOR,
        transform=transform,
        nodata=-128,
    )
    result = aggregate_raster(regions, vrt, product="aef", chunk_values=64 * 40 * 40)
    want, share = expected_vectors(
        regions, data, -128, transform, MERCATOR, quantised=True, normalise=True
    )
    frame = result.frame.set_index(C.REGION_ID).loc[regions[C.REGION_ID]]
    np.testing.assert_allclose(frame[result.vector_columns].to_numpy(), want, atol=2e-7)
    np.testing.assert_array_equal(frame["valid_share"].to_numpy(), share)
    assert (
        frame.loc["c2r2", "valid_share"] == 0
        and (frame.loc["c2r2", result.vector_columns] == 0).all()
    )
    assert 0 < frame.loc["c5r0", "valid_share"] < 0.7  # half outside the raster
    norms = np.linalg.norm(frame[result.vector_columns].to_numpy(np.float64), axis=1)
    np.testing.assert_allclose(norms[share > 0], 1.0, atol=1e-6)
    assert np.isfinite(result.vectors).all()
    assert result.counts["regions_empty"] == 1 and result.counts["dim"] == 64


def test_south_up_raster_and_small_regions(tmp_path: Path) -> None:
    """A raster stored bottom-up gives the same vectors; a region smaller than a pixel takes
    the pixel under it."""
    rng = np.random.default_rng(2)
    data = aef_data(rng, 16, 40, 40)
    north = from_origin(X0 - 50, Y0 + 50, 10, 10)
    south = Affine(10, 0, X0 - 50, 0, 10, Y0 + 50 - 400)
    a = write_raster(tmp_path / "n.tif", data, crs=UTM, transform=north, nodata=-128)
    b = write_raster(
        tmp_path / "s.tif", data[:, ::-1, :].copy(), crs=UTM, transform=south, nodata=-128
    )
    regions = grid(3, 3)
    one = aggregate_raster(regions, a, product="generic")
    two = aggregate_raster(regions, b, product="generic", chunk_values=16 * 16 * 16)
    np.testing.assert_allclose(one.vectors, two.vectors, atol=1e-9)
    np.testing.assert_array_equal(one.frame["valid_share"], two.frame["valid_share"])
    tiny = gpd.GeoDataFrame(
        {C.REGION_ID: ["t"]}, geometry=[shapely.box(X0 + 1, Y0 - 3, X0 + 3, Y0 - 1)], crs=UTM
    )
    small = aggregate_raster(tiny, a, product="generic")
    row, col = rasterio.transform.rowcol(north, X0 + 2, Y0 - 2)
    assert small.frame["valid_share"].iloc[0] in (0.0, 1.0)
    if data[0, row, col] != -128:
        np.testing.assert_allclose(small.vectors[0], data[:, row, col], atol=1e-6)


def test_tessera_float_nan_and_int8_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    data = rng.normal(size=(128, 30, 30)).astype(np.float32)
    data[:, rng.random((30, 30)) < 0.1] = np.nan
    transform = from_origin(X0 - 20, Y0 + 20, 10, 10)
    path = write_raster(tmp_path / "t.tif", data, crs=UTM, transform=transform, cog=True)
    regions = grid(2, 2)
    result = aggregate_raster(regions, path, product="tessera")
    assert_float_means(result, regions, data, transform, normalise=False, atol=1e-5)
    assert result.attribution and "TESSERA" in result.attribution
    quantised = write_raster(
        tmp_path / "q.tif", np.zeros((128, 8, 8), np.int8), crs=UTM, transform=transform
    )
    with pytest.raises(InputError, match="scales"):
        aggregate_raster(regions, quantised, product="tessera")


def test_aef_exported_as_floats_is_not_dequantised_but_normalised(tmp_path: Path) -> None:
    """An Earth Engine export of the Satellite Embedding holds floats in [-1, 1] already."""
    rng = np.random.default_rng(8)
    data = rng.uniform(-1, 1, (64, 25, 25)).astype(np.float32)
    data[:, :3, :] = np.nan
    transform = from_origin(X0 - 20, Y0 + 20, 10, 10)
    path = write_raster(tmp_path / "ee.tif", data, crs=UTM, transform=transform)
    regions = grid(2, 2)
    result = aggregate_raster(regions, path, product="aef")
    assert_float_means(result, regions, data, transform, normalise=True, atol=1e-6)


def test_rgb_is_refused_unless_generic(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (3, 30, 30)).astype(np.uint8)
    path = write_raster(
        tmp_path / "rgb.tif",
        rgb,
        crs=UTM,
        transform=from_origin(X0 - 20, Y0 + 20, 10, 10),
        photometric="RGB",
        colorinterp=[ColorInterp.red, ColorInterp.green, ColorInterp.blue],
    )
    regions = grid(2, 2)
    for product in ("aef", "tessera"):
        with pytest.raises(InputError, match="does not look like") as err:
            aggregate_raster(regions, path, product=product)
        assert "--product generic" in str(err.value)
    result = aggregate_raster(regions, path, product="generic")
    want, _ = expected_vectors(
        regions,
        rgb,
        None,
        from_origin(X0 - 20, Y0 + 20, 10, 10),
        UTM,
        quantised=False,
        normalise=False,
    )
    np.testing.assert_allclose(result.vectors, want, atol=1e-4)
    assert (result.frame["valid_share"] == 1).all()


def test_coverage_is_reported_before_any_work(tmp_path: Path, capsys) -> None:
    set_mode("bar")
    data = aef_data(np.random.default_rng(5), 8, 20, 20)
    far = write_raster(
        tmp_path / "far.tif", data, crs=UTM, transform=from_origin(X0 + 50_000, Y0, 10, 10)
    )
    regions = grid(4, 1)
    with pytest.raises(InputError, match="covers none of the 4 regions") as err:
        aggregate_raster(regions, far, product="generic")
    assert "lon/lat" in str(err.value)
    half = write_raster(tmp_path / "half.tif", data, crs=UTM, transform=from_origin(X0, Y0, 10, 10))
    result = aggregate_raster(regions, half, product="generic")  # 200 m of a 400 m row
    assert "covers 50.0% of the regions' area (2 of 4 regions touch it)" in capsys.readouterr().err
    assert list(result.frame["valid_share"]) == [1.0, 1.0, 0.0, 0.0]
    assert (result.vectors[2:] == 0).all()


def test_memory_stays_bounded_on_a_4_gb_virtual_raster(tmp_path: Path) -> None:
    """64 bands × 8000 × 8000 int8 (4 GB) as a VRT repeating one 500 px tile; 400 regions
    spread over all of it: the peak RSS stays far below the raster's size."""
    tile = tmp_path / "tile.tif"
    rng = np.random.default_rng(6)
    data = rng.integers(-127, 128, (64, 500, 500)).astype(np.int8)
    write_raster(tile, data, crs=UTM, transform=from_origin(0, 0, 10, 10), compress="DEFLATE")
    side, n = 500, 16
    origin = from_origin(400_000, 6_800_000, 10, 10)
    tiles = [(tile, i * side, j * side, side, side) for j in range(n) for i in range(n)]
    vrt = write_vrt(
        tmp_path / "big.vrt",
        tiles,
        width=side * n,
        height=side * n,
        bands=64,
        dtype="int8",
        crs=UTM,
        transform=origin,
        nodata=-128,
    )
    code = textwrap.dedent(
        f"""
        import json, resource
        import geopandas as gpd, numpy as np, rasterio
        from urbangeo.model.encoders.raster import aggregate_raster
        from urbangeo.progress import set_mode
        import shapely
        set_mode("none")
        boxes = [shapely.box(400_013 + 4000 * c, 6_799_887 - 4000 * r,
                             400_113 + 4000 * c, 6_799_987 - 4000 * r)
                 for r in range(20) for c in range(20)]
        regions = gpd.GeoDataFrame({{"region_id": [str(k) for k in range(400)]}},
                                   geometry=boxes, crs="EPSG:32635")
        with rasterio.open({str(vrt)!r}) as ds:
            size = ds.count * ds.width * ds.height
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result = aggregate_raster(regions, {str(vrt)!r}, product="aef")
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"size": size, "before_kb": before, "after_kb": after,
                          "shares": sorted(set(result.frame["valid_share"].round(6))),
                          "norm": float(np.linalg.norm(result.vectors, axis=1).min())}}))
        """
    )
    # Linux hands a child the peak RSS of the process it was forked from (pytest's, with
    # torch): a small launcher forks the measured process, so that its getrusage is its own.
    launcher = (
        "import subprocess, sys; sys.exit(subprocess.call([sys.executable, '-c', sys.argv[1]]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", launcher, code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["size"] == 64 * 8000 * 8000
    assert out["shares"] == [1.0] and out["norm"] > 0.999
    peak, grown = out["after_kb"] * 1024, (out["after_kb"] - out["before_kb"]) * 1024
    assert peak < out["size"] / 8, out  # under 512 MB in all
    assert grown < 200 * 2**20, out  # the aggregation itself: under 200 MB


# --- the embed stage ---------------------------------------------------------------------------


def make_run(folder: Path, regions: gpd.GeoDataFrame) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_layers(folder / "run.gpkg", {C.LAYER_REGIONS: regions})


def test_embed_stage_writes_the_usual_outputs_with_valid_share_and_attribution(
    tmp_path: Path,
) -> None:
    regions = grid(3, 2)
    data = aef_data(np.random.default_rng(7), 64, 24, 34)
    data[:, :, 20:] = -128  # the last column of regions has no data
    cog = write_raster(
        tmp_path / "aef.tif",
        data,
        crs=UTM,
        transform=from_origin(X0 - 20, Y0 + 20, 10, 10),
        nodata=-128,
        cog=True,
    )
    gpkg = make_run(tmp_path / "run", regions)
    result = CliRunner().invoke(
        cli,
        ["embed", "--gpkg", str(gpkg), "--encoder", "raster", "--raster", str(cog)],
    )
    assert result.exit_code == 0, result.output
    table = pq.read_table(gpkg.parent / C.EMBEDDINGS_PARQUET)
    assert table.column_names[:3] == [C.REGION_ID, "valid_share", "n_pixels"]
    assert table.column_names[3:] == [f"e{i}" for i in range(64)]
    meta = json.loads(table.schema.metadata[b"urbangeo"])
    assert meta["product"] == "aef" and meta["licence"] == "CC-BY-4.0"
    assert "Google DeepMind" in meta["attribution"]
    layer = read_layer(gpkg, C.LAYER_REGION_EMBEDDINGS)
    assert len(layer) == 6 and "valid_share" in layer and layer.crs == regions.crs
    empty = layer[layer["valid_share"] == 0]
    assert set(empty[C.REGION_ID]) == {"c2r0", "c2r1"}
    assert (empty[[f"e{i}" for i in range(64)]].to_numpy() == 0).all()
    # the licence: the layer's description (QGIS: Abstract) and QGIS's metadata document
    info = pyogrio.read_info(gpkg, layer=C.LAYER_REGION_EMBEDDINGS)["layer_metadata"]
    assert "Google DeepMind" in info["DESCRIPTION"]
    xml = qgis_metadata_document(gpkg, C.LAYER_REGION_EMBEDDINGS)
    assert "<license>CC-BY-4.0</license>" in xml and "Google DeepMind" in xml
    record = read_stage_records(gpkg)["embed"]
    assert (
        record.params["encoder"] == "raster" and "Google DeepMind" in record.params["attribution"]
    )
    assert record.counts["regions_empty"] == 2
    # the heads leave out the regions without data and never see valid_share
    features = gpkg_embeddings(gpkg)
    assert set(features.index) == set(regions[C.REGION_ID]) - {"c2r0", "c2r1"}
    assert list(features.columns) == [f"e{i}" for i in range(64)]
    parquet = gpkg.parent / C.EMBEDDINGS_PARQUET
    parquet.rename(parquet.with_suffix(".bak"))  # the layer alone: the same
    assert gpkg_embeddings(gpkg).equals(features)
    parquet.with_suffix(".bak").rename(parquet)
    # again, with the user's own attribution: one metadata document, replaced
    embed_stage(
        gpkg, encoder="raster", raster=cog, attribution="My own credit line", overwrite=True
    )
    with sqlite3.connect(gpkg) as con:
        docs = con.execute("SELECT metadata FROM gpkg_metadata").fetchall()
    assert len(docs) == 1 and "My own credit line" in docs[0][0]


def test_a_raster_without_raster_setting_is_refused(tmp_path: Path) -> None:
    gpkg = make_run(tmp_path / "run", grid(2, 1))
    with pytest.raises(InputError, match="needs --raster"):
        embed_stage(gpkg, encoder="raster")
    with pytest.raises(InputError, match="does not exist"):
        embed_stage(gpkg, encoder="raster", raster=tmp_path / "missing.tif")


# --- patches -----------------------------------------------------------------------------------


def test_patch_polygons_area_weighted_and_points_inside_or_nearest(tmp_path: Path) -> None:
    regions = grid(2, 1)  # c0r0: X0..X0+100, c1r0: X0+100..X0+200
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    polygons = gpd.GeoDataFrame(
        {"embedding": [list(v) for v in vectors]},
        geometry=[
            shapely.box(X0 - 25, Y0 - 100, X0 + 75, Y0),  # 75 m² × 100 in c0r0
            shapely.box(X0 + 75, Y0 - 100, X0 + 175, Y0),  # 25 in c0r0, 75 in c1r0
            shapely.box(X0 + 175, Y0 - 100, X0 + 275, Y0),  # 25 in c1r0
        ],
        crs=UTM,
    ).to_crs(C.WGS84)
    polygons.to_parquet(tmp_path / "poly.parquet")
    got = aggregate_patches(regions, tmp_path / "poly.parquet")
    # areas are measured in UTM after a round trip through lon/lat: close to 75/25 shares
    np.testing.assert_allclose(got.vectors[0], [0.75, 0.25], atol=1e-4)
    np.testing.assert_allclose(got.vectors[1], (0.75 * vectors[1] + 0.25 * vectors[2]), atol=1e-4)
    assert list(got.frame["n_patches"]) == [2, 2]
    assert list(got.frame["patch_distance_m"]) == [0.0, 0.0]
    # points in a GeoPackage, the vector as JSON text; c1r0 has none: its nearest, 30 m away
    points = gpd.GeoDataFrame(
        {"vec": [json.dumps(list(v)) for v in vectors]},
        geometry=[
            shapely.Point(X0 + 10, Y0 - 10),
            shapely.Point(X0 + 60, Y0 - 50),
            shapely.Point(X0 + 230, Y0 - 50),
        ],
        crs=UTM,
    )
    points.to_file(tmp_path / "points.gpkg", layer="patches", engine="pyogrio")
    got = aggregate_patches(regions, tmp_path / "points.gpkg", column="vec")
    np.testing.assert_allclose(got.vectors[0], vectors[:2].mean(axis=0))
    np.testing.assert_allclose(got.vectors[1], vectors[2])
    assert list(got.frame["n_patches"]) == [2, 0]
    np.testing.assert_allclose(got.frame["patch_distance_m"], [0.0, 30.0])
    # number columns p0, p1 and a plain Parquet with WKB geometry (read as lon/lat)
    plain = pd.DataFrame({"p0": vectors[:, 0], "p1": vectors[:, 1]})
    plain["geometry"] = shapely.to_wkb(points.to_crs(C.WGS84).geometry.values)
    plain.to_parquet(tmp_path / "plain.parquet")
    again = aggregate_patches(regions, tmp_path / "plain.parquet", column="p")
    np.testing.assert_allclose(again.vectors, got.vectors, atol=1e-9)
    with pytest.raises(InputError, match="--patch-column"):
        aggregate_patches(regions, tmp_path / "plain.parquet")


def test_patches_through_the_embed_stage(tmp_path: Path) -> None:
    regions = grid(2, 2)
    points = gpd.GeoDataFrame(
        {"embeddings": [[1.0, 2.0, 3.0]] * 3},
        geometry=[shapely.Point(X0 + 50, Y0 - 50 - 100 * k) for k in range(3)],
        crs=UTM,
    )
    points.to_parquet(tmp_path / "clay.parquet")
    gpkg = make_run(tmp_path / "run", regions)
    embed_stage(gpkg, encoder="patches", patches=tmp_path / "clay.parquet", attribution="Clay")
    layer = read_layer(gpkg, C.LAYER_REGION_EMBEDDINGS)
    assert {"n_patches", "patch_distance_m", "e0", "e2"} <= set(layer.columns)
    assert (layer[["e0", "e1", "e2"]].to_numpy() == [1.0, 2.0, 3.0]).all()
    assert list(gpkg_embeddings(gpkg).columns) == ["e0", "e1", "e2"]


# --- shape -------------------------------------------------------------------------------------


def test_registered_products_and_no_torch() -> None:
    assert tuple(PRODUCTS) == RASTER_PRODUCTS
    for name in ("raster", "patches"):
        assert issubclass(ENCODERS.get(name), RegionEncoder)
    code = (
        "import sys, urbangeo.model.encoders.raster, urbangeo.model.encoders.patches;"
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.stdout.strip() == "False", done.stderr[-2000:]
    with pytest.raises(InputError, match="encodes no images"):
        ENCODERS.get("raster").build(checkpoint=None)
