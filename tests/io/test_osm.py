import warnings

import pyrosm
import pytest
import shapely
from geopandas.testing import assert_geodataframe_equal

from urbangeo import constants as C
from urbangeo.errors import InputError
from urbangeo.io import osm

KOTKA = pyrosm.get_data("test_pbf")  # the Kotka extract in the pyrosm wheel, offline
INNER = (26.94, 60.525, 26.96, 60.535)  # inside the extract's (26.93, 60.52, 26.97, 60.54)
EMPTY = (26.9301, 60.5201, 26.9302, 60.5202)  # a 6 m square with nothing mapped


def _direct(bbox, read):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read(pyrosm.OSM(KOTKA, bounding_box=list(bbox)))


def test_reads_equal_pyrosm_for_the_same_box():
    extract = osm.open_extract(KOTKA, bbox=INNER)
    buildings = extract.buildings()
    assert_geodataframe_equal(buildings, _direct(INNER, lambda o: o.get_buildings()))
    whole = osm.open_extract(KOTKA).buildings()
    assert 0 < len(buildings) < len(whole)  # the box selects
    assert_geodataframe_equal(
        extract.roads(network="driving"),
        _direct(INNER, lambda o: o.get_network(network_type="driving")),
    )
    assert_geodataframe_equal(
        extract.tagged({"leisure": True}, nodes=False),
        _direct(
            INNER,
            lambda o: o.get_data_by_custom_criteria(
                custom_filter={"leisure": True}, keep_nodes=False
            ),
        ),
    )


def test_polygon_box_reads_like_four_numbers():
    as_polygon = osm.open_extract(KOTKA, bbox=shapely.box(*INNER)).pois()
    assert len(as_polygon) > 0
    assert_geodataframe_equal(as_polygon, osm.open_extract(KOTKA, bbox=INNER).pois())


def test_empty_box_gives_empty_frames_with_crs_and_no_warnings():
    extract = osm.open_extract(KOTKA, bbox=EMPTY)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frames = {
            "building": extract.buildings(),
            "landuse": extract.landuse(),
            "natural": extract.natural(),
            "amenity": extract.pois(),
            C.HIGHWAY: extract.roads(),
            "waterway": extract.tagged({"water": True, "waterway": True}),
        }
    assert caught == []  # pyrosm warns "Could not find any ... elements" without the filter
    for column, frame in frames.items():
        assert frame.empty
        assert frame.crs == C.WGS84
        assert {osm.OSM_ID, column} <= set(frame.columns)


def test_unreadable_missing_and_wrong_files(tmp_path):
    broken = tmp_path / "broken.osm.pbf"
    broken.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(InputError, match=r"Cannot read the OSM extract .*broken") as info:
        osm.open_extract(broken, bbox=INNER)
    assert info.value.hint == osm.EXTRACT_HINT
    with pytest.raises(InputError, match="Cannot read road file") as info:
        osm.open_extract(broken, label="road file", hint="Give roads.")
    assert info.value.hint == "Give roads."
    with pytest.raises(InputError, match="does not exist") as info:
        osm.open_extract(tmp_path / "none.osm.pbf")
    assert info.value.hint
    (tmp_path / "roads.gpkg").write_bytes(b"")
    with pytest.raises(InputError, match=r"not an \.osm\.pbf file"):
        osm.open_extract(tmp_path / "roads.gpkg")
