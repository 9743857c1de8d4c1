import math

import geopandas as gpd
import numpy as np
import pytest
import shapely

from tests.conftest import UTM35
from urbangeo.errors import InputError
from urbangeo.geo.grid import make_grid


def _boundary(geom, crs=UTM35):
    return gpd.GeoDataFrame(geometry=[geom], crs=crs)


def test_cell_count_and_area_match_the_boundary_bounds():
    box = shapely.box(501_500, 6_702_500, 504_200, 6_705_000)
    grid = make_grid(_boundary(box), cell_size=1000)
    minx, miny, maxx, maxy = box.bounds
    expected = (math.ceil(maxx / 1000) - math.floor(minx / 1000)) * (
        math.ceil(maxy / 1000) - math.floor(miny / 1000)
    )
    assert len(grid) == expected == 12
    assert grid.crs == UTM35
    np.testing.assert_allclose(shapely.area(grid.geometry.values), 1e6)
    assert grid["area_m2"].eq(1e6).all()
    # the shares add up to the boundary's area
    assert (grid["inside_share"] * 1e6).sum() == pytest.approx(box.area)


def test_inside_share_is_the_cells_part_inside_the_boundary():
    circle = shapely.Point(500_000, 6_700_000).buffer(3_300, quad_segs=64)
    grid = make_grid(_boundary(circle), cell_size=1000)
    independent = shapely.area(shapely.intersection(grid.geometry.values, circle)) / 1e6
    np.testing.assert_allclose(grid["inside_share"], independent, atol=1e-9)
    assert grid["inside_share"].gt(0).all() and grid["inside_share"].le(1).all()
    assert (grid["inside_share"] * 1e6).sum() == pytest.approx(circle.area)
    # every cell meeting the circle's interior is there, and no other
    minx, miny, maxx, maxy = circle.bounds
    lattice = [
        shapely.box(c * 1000, r * 1000, c * 1000 + 1000, r * 1000 + 1000)
        for c in range(math.floor(minx / 1000), math.ceil(maxx / 1000))
        for r in range(math.floor(miny / 1000), math.ceil(maxy / 1000))
    ]
    assert len(grid) == sum(cell.intersection(circle).area > 0 for cell in lattice)


def test_region_ids_name_the_lattice_square():
    grid = make_grid(_boundary(shapely.box(500_100, 6_700_100, 503_900, 6_702_900)), cell_size=500)
    minx = shapely.bounds(grid.geometry.values)[:, 0]
    miny = shapely.bounds(grid.geometry.values)[:, 1]
    assert list(grid["region_id"]) == [
        f"{int(x // 500)}_{int(y // 500)}" for x, y in zip(minx, miny, strict=True)
    ]
    assert list(grid["col"]) == list((minx // 500).astype(int))
    assert list(grid["row"]) == list((miny // 500).astype(int))
    assert grid["region_id"].is_unique


def test_ids_are_stable_under_a_shifted_boundary():
    box = shapely.box(500_200, 6_700_300, 506_000, 6_704_000)
    a = make_grid(_boundary(box), cell_size=1000).set_index("region_id")
    b = make_grid(_boundary(shapely.affinity.translate(box, 1_500, 700)), cell_size=1000).set_index(
        "region_id"
    )
    common = a.index.intersection(b.index)
    assert len(common) >= 15
    assert shapely.equals(a.loc[common].geometry.values, b.loc[common].geometry.values).all()


def test_geographic_boundary_is_gridded_in_its_utm_zone():
    grid = make_grid(_boundary(shapely.box(26.93, 60.52, 26.97, 60.54), crs="EPSG:4326"))
    assert grid.crs.to_epsg() == 32635
    widths = np.diff(shapely.bounds(grid.geometry.values)[:, [0, 2]], axis=1).ravel()
    np.testing.assert_allclose(widths, 1000.0)


@pytest.mark.parametrize(
    ("crs", "message"),
    [
        ("EPSG:4326", "not a projected CRS"),  # degrees: once replaced by UTM with a warning
        ("EPSG:2263", "US survey foot, not metres"),
        ("EPSG:99999", "Unknown CRS 'EPSG:99999'"),  # was pyproj's CRSError, a traceback
    ],
)
def test_a_crs_that_is_not_projected_metres_is_refused(crs, message):
    boundary = _boundary(shapely.box(26.93, 60.52, 26.97, 60.54), crs="EPSG:4326")
    with pytest.raises(InputError, match=message) as info:
        make_grid(boundary, crs=crs)
    assert "projected CRS in metres" in info.value.hint


@pytest.mark.parametrize(
    ("bbox", "message"),
    [
        ((-180, -90, 180, 90), "beyond UTM's latitudes"),  # was 0 regions, exit 0
        ((10, 85, 11, 86), "beyond UTM's latitudes"),  # was geopandas' RuntimeError
        ((-180, -80, 180, 80), "too wide for one UTM zone"),  # was 22,226 cells in zone 30N
        ((0, 0, 20, 10), r"off by up to 1\.\d%"),
    ],
)
def test_areas_no_utm_zone_holds_are_refused_without_a_crs(bbox, message):
    boundary = _boundary(shapely.box(*bbox), crs="EPSG:4326")
    with pytest.raises(InputError, match=message) as info:
        make_grid(boundary, cell_size=100_000)
    assert "--crs" in info.value.hint and "split the area" in info.value.hint


def test_wide_areas_fit_a_utm_zone_towards_the_poles_or_with_a_crs():
    # 20 degrees of longitude at 60-65 N: within 1 % in one UTM zone
    assert len(make_grid(_boundary(shapely.box(20, 60, 40, 65), crs=4326), cell_size=50_000))
    world = _boundary(shapely.box(-180, -80, 180, 80), crs=4326)
    grid = make_grid(world, cell_size=2_000_000, crs="EPSG:3857")
    assert grid.crs.to_epsg() == 3857 and len(grid) > 0


def test_cells_that_only_touch_the_boundary_are_left_out():
    grid = make_grid(_boundary(shapely.box(500_000, 6_700_000, 502_000, 6_701_000)))
    assert sorted(grid["region_id"]) == ["500_6700", "501_6700"]


@pytest.mark.parametrize("size", [0, -5, float("nan"), float("inf")])
def test_bad_cell_size_is_refused(size):
    with pytest.raises(InputError, match="Cell size"):
        make_grid(_boundary(shapely.box(0, 0, 10, 10)), cell_size=size)


def test_too_many_cells_need_force():
    boundary = _boundary(shapely.box(500_000, 6_700_000, 510_000, 6_710_000))
    with pytest.raises(InputError, match="10,000 cells") as info:
        make_grid(boundary, cell_size=100, max_cells=5_000)
    assert "--force" in info.value.hint
    assert len(make_grid(boundary, cell_size=100, max_cells=5_000, force=True)) == 10_000


def test_boundary_without_crs_is_refused():
    with pytest.raises(InputError, match="no CRS"):
        make_grid(gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 1, 1)]))
