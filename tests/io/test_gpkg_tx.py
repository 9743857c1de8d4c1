"""Layer writes into an existing GeoPackage by one SQLite transaction (urbangeo.io.gpkg_tx).

The reference is the old way, which every case here also runs: GDAL writing into a copy of the
whole file that replaces it (``gpkg._write_by_copy``). Both must give the same file content.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from geopandas.testing import assert_geodataframe_equal

from tests.conftest import require
from tests.downstream.helpers import square_regions
from tests.io.helpers import SYSTEM_PYTHON, require_qgis, require_system_python, system_python_json
from urbangeo import constants as C
from urbangeo.errors import OutputError
from urbangeo.io import gpkg, gpkg_tx, styles
from urbangeo.model.encoders.region_encoder import QGIS_METADATA_URI, write_layer_metadata

#: Columns that hold the time of the write, which differs between any two writes.
TIMESTAMPS = {"last_change", "update_time", "timestamp"}
#: A CRS without an EPSG code: GDAL gives it an srs_id of its own (100000 and up).
CUSTOM = "+proj=tmerc +lon_0=27.5 +k=0.9996 +x_0=612345 +ellps=GRS80 +units=m +no_defs"
OTHER_CUSTOM = CUSTOM.replace("+lon_0=27.5", "+lon_0=28.5")


def points(n: int, crs: str = "EPSG:32635", x0: float = 500_000.0) -> gpd.GeoDataFrame:
    rng = np.random.default_rng(n)
    xy = rng.uniform(0, 5_000, (n, 2))
    return gpd.GeoDataFrame(
        {C.POINT_ID: np.arange(n), "name": [f"p{i}" for i in range(n)]},
        geometry=shapely.points(xy[:, 0] + x0, xy[:, 1] + 6_700_000),
        crs=crs,
    )


def base_layers() -> dict[str, gpd.GeoDataFrame | pd.DataFrame]:
    regions = square_regions(5, 4)
    return {
        C.LAYER_REGIONS: regions,
        C.LAYER_SV_POINTS: points(40),
        C.LAYER_INDICATORS: pd.DataFrame({C.REGION_ID: regions[C.REGION_ID], "x": 1.5}),
        "custom": points(5, CUSTOM, x0=4_000_000),
    }


@pytest.fixture
def base(tmp_path) -> Path:
    """A run's GeoPackage: styled layers, a user's style, QGIS metadata on two layers."""
    path = tmp_path / "base" / "run.gpkg"
    gpkg.write_layers(path, base_layers(), styles=True)
    for layer in (C.LAYER_REGIONS, C.LAYER_SV_POINTS):
        write_layer_metadata(path, layer, description=f"about {layer}", qgis_xml=f"<{layer}/>")
    with sqlite3.connect(path) as con:
        con.execute(
            "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, "
            "f_geometry_column, styleName, styleQML, useAsDefault, owner) "
            "VALUES ('', '', 'sv_points', 'geom', 'mine', '<qgis/>', 1, '')"
        )
    con.close()
    return path


def _clusters() -> gpd.GeoDataFrame:
    regions = square_regions(5, 4)
    return regions[[C.REGION_ID, "geometry"]].assign(cluster=np.arange(len(regions)) % 3)


CASES: dict[str, tuple[dict, dict]] = {
    "new layers": (
        {
            C.LAYER_CLUSTERS: _clusters(),
            C.LAYER_CAPTIONS: pd.DataFrame({"image_id": ["a", "b"], "caption": ["x", "é"]}),
        },
        {"styles": True},
    ),
    "replaced layers": (
        {
            C.LAYER_SV_POINTS: points(70),
            C.LAYER_REGIONS: square_regions(3, 2),
            C.LAYER_INDICATORS: pd.DataFrame({C.REGION_ID: ["0_0"], "y": [2]}),
        },
        {"styles": True, "overwrite": True},
    ),
    "attribute tables": (
        {
            "urbangeo_stages": pd.DataFrame({"stage": ["grid"], "params": ["{}"]}),
            C.LAYER_INDICATORS: pd.DataFrame({C.REGION_ID: ["1_1", "2_2"], "z": [0.5, None]}),
            "types": pd.DataFrame(
                {
                    "flag": [True, False],
                    "when": pd.to_datetime(["2024-01-02T03:04:05", None], utc=True),
                    "big": [2**40, -1],
                    "text": ["ü", None],
                }
            ),
        },
        {"overwrite": True},
    ),
    "other CRSs": (
        {
            "wgs84": points(6, "EPSG:4326", x0=0).set_geometry(
                shapely.points(np.linspace(24, 25, 6), np.linspace(60, 61, 6))
            ),
            "mercator": points(7, "EPSG:3857"),
            "other_custom": points(8, OTHER_CUSTOM, x0=5_000_000),
            "custom": points(9, CUSTOM, x0=4_100_000),
            C.LAYER_SV_POINTS: points(10, "EPSG:32634"),
        },
        {"styles": True, "overwrite": True},
    ),
    "empty layers": (
        {
            C.LAYER_SV_POINTS: points(0),
            C.LAYER_CLUSTERS: _clusters().iloc[:0],
            "nothing": gpd.GeoDataFrame({"a": []}, geometry=[], crs="EPSG:32635"),
            "no_rows": pd.DataFrame({"a": pd.Series([], dtype="int64")}),
        },
        {"styles": True, "overwrite": True},
    ),
}


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def content(path: Path) -> dict:
    """Everything in the file but write times: its schema (each object's SQL), every table's
    rows (R-trees through their virtual tables), the header's ids."""
    con = sqlite3.connect(path)
    try:
        out: dict = {
            "header": con.execute("PRAGMA application_id").fetchone()
            + con.execute("PRAGMA user_version").fetchone(),
        }
        objects = con.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
        out["schema"] = sorted(objects, key=repr)
        virtual = [n for t, n, _, s in objects if t == "table" and "VIRTUAL" in (s or "")]
        shadows = {f"{v}{s}" for v in virtual for s in ("_node", "_parent", "_rowid")}
        for kind, name, _, _ in objects:
            if kind != "table" or name in shadows:
                continue
            columns = [
                row[1]
                for row in con.execute(f"PRAGMA table_info({q(name)})")
                if row[1] not in TIMESTAMPS
            ]
            rows = con.execute(f"SELECT {', '.join(map(q, columns))} FROM {q(name)}").fetchall()
            out[name] = sorted(rows, key=repr)
        return out
    finally:
        con.close()


def check_layers(path: Path, reference: Path) -> None:
    """Every layer reads back from ``path`` as from ``reference`` (pyogrio, as QGIS's GDAL)."""
    names = pyogrio.list_layers(path)
    assert names.tolist() == pyogrio.list_layers(reference).tolist()
    for name, geometry_type in names:
        info, ref_info = (
            pyogrio.read_info(path, layer=name),
            pyogrio.read_info(reference, layer=name),
        )
        for key in ("crs", "geometry_type", "features", "fields", "dtypes", "total_bounds"):
            assert np.array_equal(info[key], ref_info[key]) or info[key] == ref_info[key], key
        frame = pyogrio.read_dataframe(path, layer=name)
        ref = pyogrio.read_dataframe(reference, layer=name)
        frame, ref = (f.drop(columns=[c for c in f if c in TIMESTAMPS]) for f in (frame, ref))
        if geometry_type is None:
            pd.testing.assert_frame_equal(frame, ref)
            continue
        assert_geodataframe_equal(frame, ref)
        if len(frame):
            check_spatial_index(path, name, frame)


def check_spatial_index(path: Path, name: str, frame: gpd.GeoDataFrame) -> None:
    """The R-tree holds each geometry's bounds (as float32, rounded outwards) and a bbox read
    through it finds what shapely finds."""
    with sqlite3.connect(path) as con:
        (check,) = con.execute(f"SELECT rtreecheck('rtree_{name}_geom')").fetchone()
        rtree = con.execute(f'SELECT id, minx, maxx, miny, maxy FROM "rtree_{name}_geom"')
        boxes = pd.DataFrame(rtree.fetchall(), columns=["fid", "minx", "maxx", "miny", "maxy"])
    con.close()
    assert check == "ok"
    fids = pyogrio.read_dataframe(path, layer=name, fid_as_index=True).index
    bounds = frame.geometry.bounds.set_axis(fids)
    boxes = boxes.set_index("fid").loc[fids]
    tol = 1e-6 * np.abs(bounds.to_numpy()).max()
    assert (boxes["minx"] <= bounds["minx"]).all() and (bounds["minx"] - boxes["minx"] < tol).all()
    assert (boxes["maxx"] >= bounds["maxx"]).all() and (boxes["maxx"] - bounds["maxx"] < tol).all()
    assert (boxes["miny"] <= bounds["miny"]).all() and (boxes["maxy"] >= bounds["maxy"]).all()
    x0, y0, x1, y1 = frame.total_bounds
    box = (x0, y0, (x0 + x1) / 2, (y0 + y1) / 2)
    found = pyogrio.read_dataframe(path, layer=name, bbox=box)
    expected = frame[frame.geometry.intersects(shapely.box(*box))]
    assert sorted(found.geometry.to_wkb()) == sorted(expected.geometry.to_wkb())


def write_both(base: Path, layers: dict, monkeypatch, **kwargs) -> tuple[Path, Path]:
    """``layers`` written into two copies of ``base``: by the transaction (which must not fall
    back) and by the old copy-and-replace way."""
    new, old = base.parent / "new" / "run.gpkg", base.parent / "old" / "run.gpkg"
    for path in (new, old):
        path.parent.mkdir()
        shutil.copyfile(base, path)
    by_copy = gpkg._write_by_copy
    with monkeypatch.context() as m:

        def no_fallback(*args, **kw):
            raise AssertionError("the transaction fell back to copying the file")

        m.setattr(gpkg, "_write_by_copy", no_fallback)
        gpkg.write_layers(new, layers, **kwargs)
    gpkg.check_can_write(old, list(layers), overwrite=kwargs.get("overwrite", False))
    by_copy(old, layers, styles=kwargs.get("styles", False))
    return new, old


@pytest.mark.parametrize("case", list(CASES))
def test_the_transaction_writes_what_copying_the_file_writes(base, monkeypatch, case):
    layers, kwargs = CASES[case]
    new, old = write_both(base, layers, monkeypatch, **kwargs)
    assert content(new) == content(old)
    check_layers(new, old)
    assert sorted(p.name for p in new.parent.iterdir()) == ["run.gpkg"]  # no journal, no scratch
    with sqlite3.connect(new) as con:
        assert con.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    con.close()


def test_what_the_transaction_keeps_and_drops(base, monkeypatch):
    layers, kwargs = CASES["replaced layers"]
    new, _ = write_both(base, layers, monkeypatch, **kwargs)
    for name, frame in layers.items():
        assert len(gpkg.read_layer(new, name)) == len(frame)
    assert gpkg.read_layer(new, "custom").crs == gpd.GeoSeries(crs=CUSTOM).crs  # kept as it was
    rows = styles.read_styles(new)
    points_styles = rows[rows["f_table_name"] == C.LAYER_SV_POINTS]
    # urbangeo's style replaced and the default; the user's kept, no longer the default
    assert sorted(zip(points_styles["owner"], points_styles["useAsDefault"], strict=True)) == [
        ("", 0),
        (styles.OWNER, 1),
    ]
    with sqlite3.connect(new) as con:
        described = dict(con.execute("SELECT table_name, description FROM gpkg_contents"))
        documents = con.execute(
            "SELECT r.table_name, m.metadata FROM gpkg_metadata m JOIN gpkg_metadata_reference r "
            "ON r.md_file_id = m.id WHERE m.md_standard_uri = ?",
            (QGIS_METADATA_URI,),
        ).fetchall()
        (orphans,) = con.execute(
            "SELECT count(*) FROM gpkg_metadata WHERE id NOT IN "
            "(SELECT md_file_id FROM gpkg_metadata_reference)"
        ).fetchone()
    con.close()
    # replaced layers lose the metadata of the layer they replace, as GDAL drops it
    assert documents == [] and orphans == 0
    assert described[C.LAYER_SV_POINTS] == ""


def test_metadata_of_layers_not_written_is_kept(base, monkeypatch):
    layers, kwargs = CASES["new layers"]
    new, _ = write_both(base, layers, monkeypatch, **kwargs)
    with sqlite3.connect(new) as con:
        documents = sorted(
            con.execute(
                "SELECT r.table_name, m.metadata FROM gpkg_metadata m JOIN "
                "gpkg_metadata_reference r ON r.md_file_id = m.id"
            )
        )
    con.close()
    assert documents == [(C.LAYER_REGIONS, "<regions/>"), (C.LAYER_SV_POINTS, "<sv_points/>")]


def test_gdal_validates_the_result(base, monkeypatch):
    require_system_python(
        "from osgeo import gdal", "Debian's GDAL (python3-gdal)", "apt-get install python3-gdal"
    )
    script = "/usr/lib/python3/dist-packages/osgeo_utils/samples/validate_gpkg.py"
    require(Path(script).exists(), "GDAL's validate_gpkg.py", "apt-get install python3-gdal")
    path = base
    for layers, kwargs in CASES.values():
        gpkg.write_layers(path, layers, **{**kwargs, "overwrite": True})
        proc = subprocess.run(
            [SYSTEM_PYTHON, script, "--extra", "--warning-as-error", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    # GDAL 3.6 (QGIS 3.22's) reads every layer with its spatial index
    read = textwrap.dedent(
        """
        import json, sys
        from osgeo import ogr
        ds = ogr.Open(sys.argv[1])
        out = {}
        for i in range(ds.GetLayerCount()):
            layer = ds.GetLayer(i)
            index = layer.GetGeometryColumn() and ds.ExecuteSQL(
                f"SELECT HasSpatialIndex('{layer.GetName()}', '{layer.GetGeometryColumn()}')"
            )
            has = bool(index.GetNextFeature().GetField(0)) if index else None
            out[layer.GetName()] = [layer.GetFeatureCount(), has]
        print(json.dumps(out))
        """
    )
    seen = system_python_json(read, path)
    for name, geometry_type in pyogrio.list_layers(path):
        count, has_index = seen[name]
        assert count == len(pyogrio.read_dataframe(path, layer=name)), name
        assert has_index is (True if geometry_type is not None else None), name


def test_an_error_in_the_transaction_leaves_the_file_as_it_was(base, monkeypatch):
    before = base.read_bytes()
    real = gpkg_tx._copy
    copied = []

    def failing(con, name):
        real(con, name)  # the first layer is dropped and copied in, then it fails
        copied.append(name)
        if len(copied) == 2:
            raise RuntimeError("disk on fire")

    monkeypatch.setattr(gpkg_tx, "_copy", failing)
    layers, kwargs = CASES["replaced layers"]
    with pytest.raises(RuntimeError, match="disk on fire"):
        gpkg.write_layers(base, layers, **kwargs)
    assert copied == [C.LAYER_SV_POINTS, C.LAYER_REGIONS]
    assert base.read_bytes() == before
    assert sorted(p.name for p in base.parent.iterdir()) == ["run.gpkg"]
    monkeypatch.undo()
    gpkg.write_layers(base, layers, **kwargs)  # a rerun succeeds
    assert len(gpkg.read_layer(base, C.LAYER_SV_POINTS)) == 70


def test_ctrl_c_in_the_transaction_leaves_the_file_as_it_was(base, monkeypatch):
    before = base.read_bytes()
    real = styles.add_styles

    def interrupted(con, chosen):
        real(con, chosen)  # every layer moved and styled: only the commit is left
        raise KeyboardInterrupt

    monkeypatch.setattr(styles, "add_styles", interrupted)
    layers, kwargs = CASES["replaced layers"]
    with pytest.raises(KeyboardInterrupt):
        gpkg.write_layers(base, layers, **kwargs)
    assert base.read_bytes() == before
    assert sorted(p.name for p in base.parent.iterdir()) == ["run.gpkg"]
    monkeypatch.undo()
    gpkg.write_layers(base, layers, **kwargs)
    assert len(gpkg.read_layer(base, C.LAYER_REGIONS)) == 6


KILLED = """
import os, sys
import numpy as np, geopandas as gpd, shapely
from urbangeo.io import gpkg, gpkg_tx

real_check, real_copy = gpkg_tx._check, gpkg_tx._copy

def check(con, names):
    con.execute("PRAGMA cache_size = 2")  # changed pages go to the file before the commit
    real_check(con, names)

def copy(con, name):
    real_copy(con, name)
    if name == "second":
        os._exit(9)  # as a kill -9 or a power cut: no rollback, no clean-up

gpkg_tx._check, gpkg_tx._copy = check, copy
n = 20000
frame = gpd.GeoDataFrame(
    {"v": np.arange(n)}, geometry=shapely.points(np.arange(n), np.zeros(n)), crs="EPSG:32635"
)
gpkg.write_layers(sys.argv[1], {"sv_points": frame, "second": frame}, overwrite=True)
"""


def test_a_process_killed_in_the_commit_loses_nothing(base):
    before, content_before = base.read_bytes(), content(base)
    proc = subprocess.run([sys.executable, "-c", KILLED, str(base)], timeout=300)
    assert proc.returncode == 9
    journal = Path(f"{base}-journal")
    assert journal.exists() and base.read_bytes() != before  # killed half-way, pages written
    # the next reader rolls the journal back (GDAL alone cannot: it opens read-only)
    assert gpkg.list_layers(base) == pyogrio.list_layers(base)[:, 0].tolist()
    assert not journal.exists()
    assert base.read_bytes() == before and content(base) == content_before
    for scratch in base.parent.glob(".run.gpkg.*.scratch.gpkg"):
        scratch.unlink()  # left by the kill, as any temporary file


def test_a_locked_file_is_refused_with_a_hint_and_left_as_it_was(base, monkeypatch):
    monkeypatch.setattr(gpkg_tx, "LOCK_TIMEOUT", 0.1)
    before = base.read_bytes()
    other = sqlite3.connect(base, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")  # another program in the middle of its own write
        with pytest.raises(OutputError, match="locked by another program") as info:
            gpkg.write_layers(base, {"more": points(3)})
        assert "QGIS" in info.value.hint
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert base.read_bytes() == before
    gpkg.write_layers(base, {"more": points(3)})
    assert "more" in gpkg.list_layers(base)


def test_what_it_cannot_move_falls_back_to_copying_the_file(base, monkeypatch):
    calls = []
    real = gpkg._write_by_copy

    def unsupported(con, names):
        raise gpkg_tx.Unsupported("a table urbangeo does not know")

    def copying(path, layers, *, styles):
        calls.append(sorted(layers))
        return real(path, layers, styles=styles)

    monkeypatch.setattr(gpkg_tx, "_check", unsupported)
    monkeypatch.setattr(gpkg, "_write_by_copy", copying)
    layers, kwargs = CASES["replaced layers"]
    gpkg.write_layers(base, layers, **kwargs)
    assert calls == [sorted(layers)]
    assert len(gpkg.read_layer(base, C.LAYER_SV_POINTS)) == 70
    assert sorted(p.name for p in base.parent.iterdir()) == ["run.gpkg"]


def test_a_tile_table_of_the_same_name_is_not_dropped_by_sql(tmp_path, monkeypatch):
    # A raster (tiles) table cannot be dropped the way a vector layer is: fall back to GDAL.
    path = tmp_path / "run.gpkg"
    gpkg.write_layers(path, {"a": points(2)})
    with sqlite3.connect(path) as con:
        con.execute("UPDATE gpkg_contents SET data_type = 'tiles' WHERE table_name = 'a'")
    con.close()
    before = path.read_bytes()
    with gpkg_tx.scratch_path(path) as tmp:
        gpkg_tx.seed(tmp, path)
        gpkg._write_one(tmp, "a", points(3))
        with pytest.raises(gpkg_tx.Unsupported, match="not a vector layer"):
            gpkg_tx.move_layers(tmp, path, ["a"])
    assert path.read_bytes() == before


def test_new_crs_records_get_the_ids_gdal_would_give(base, monkeypatch):
    layers, kwargs = CASES["other CRSs"]
    # the scratch file alone would give other_custom 100000, which means custom in the file
    for path in write_both(base, layers, monkeypatch, **kwargs):
        with sqlite3.connect(path) as con:
            ids = dict(con.execute("SELECT table_name, srs_id FROM gpkg_geometry_columns"))
        con.close()
        assert ids["custom"] == 100000 and ids["other_custom"] == 100001
        assert ids["wgs84"] == 4326 and ids["mercator"] == 3857
        crs = gpkg.read_layer(path, "other_custom").crs
        assert crs == gpd.GeoSeries(crs=OTHER_CUSTOM).crs
        assert gpkg.read_layer(path, "custom").crs == gpd.GeoSeries(crs=CUSTOM).crs


QGIS_SCRIPT = r"""
import json, os, sys
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from qgis.core import QgsApplication, QgsFeatureSource, QgsVectorLayer
app = QgsApplication([], False)
app.initQgis()
out = {}
for name in sys.argv[2:]:
    layer = QgsVectorLayer(f"{sys.argv[1]}|layername={name}", name, "ogr")
    out[name] = {
        "valid": layer.isValid(),
        "count": layer.featureCount(),
        "crs": layer.crs().authid(),
        "index": layer.hasSpatialIndex() == QgsFeatureSource.SpatialIndexPresent,
        "renderer": layer.renderer().type() if layer.renderer() else None,
        "title": layer.metadata().title(),
    }
    del layer
app.exitQgis()
print(json.dumps(out))
"""


def test_qgis_opens_the_moved_layers_styled(base, monkeypatch):
    require_qgis()
    layers, kwargs = CASES["replaced layers"]
    gpkg.write_layers(base, {**layers, C.LAYER_CLUSTERS: _clusters()}, **kwargs)
    title = "Regions of the moved file"
    write_layer_metadata(
        base,
        C.LAYER_REGIONS,
        description="",
        qgis_xml=f"<qgis><identifier>regions</identifier><title>{title}</title></qgis>",
    )
    names = [C.LAYER_REGIONS, C.LAYER_SV_POINTS, C.LAYER_CLUSTERS, "custom"]
    seen = system_python_json(QGIS_SCRIPT, base, *names, timeout=180)
    for name in names:
        assert seen[name]["valid"] and seen[name]["index"], name
        assert seen[name]["count"] == len(gpkg.read_layer(base, name)), name
    assert seen[C.LAYER_CLUSTERS]["renderer"] == "categorizedSymbol"  # urbangeo's default style
    assert seen[C.LAYER_SV_POINTS]["renderer"] == "singleSymbol"
    assert seen[C.LAYER_SV_POINTS]["crs"] == "EPSG:32635"
    assert seen[C.LAYER_REGIONS]["title"] == title


def test_only_the_scratch_file_is_written_unsynced(base, monkeypatch):
    seen = []
    real = gpkg._write_one

    def spy(path, layer, frame):
        seen.append(pyogrio.get_gdal_config_option("OGR_SQLITE_SYNCHRONOUS"))
        real(path, layer, frame)

    monkeypatch.setattr(gpkg, "_write_one", spy)
    gpkg.write_layers(base, {"a": points(2)})
    assert seen == [False]  # "OFF", as pyogrio reads it back
    assert pyogrio.get_gdal_config_option("OGR_SQLITE_SYNCHRONOUS") is None
    monkeypatch.setenv("OGR_SQLITE_SYNCHRONOUS", "FULL")  # the user's choice is kept
    gpkg.write_layers(base, {"b": points(2)})
    assert seen[-1] == "FULL"
