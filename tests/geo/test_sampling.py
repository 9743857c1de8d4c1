import geopandas as gpd
import numpy as np
import pytest
import shapely
from pyproj import Geod, Proj
from scipy.spatial.distance import pdist

from tests.conftest import UTM35, utm_lines
from urbangeo.errors import InputError, UrbangeoWarning
from urbangeo.geo.grid import make_grid
from urbangeo.geo.sampling import sample_points, stride_positions

X0, Y0 = 500_000.0, 6_700_000.0  # on UTM 35N's central meridian


def _xy(points):
    return np.column_stack([shapely.get_x(points.geometry.values), shapely.get_y(points.geometry)])


def test_points_every_500_m_along_a_straight_road():
    roads = utm_lines([(X0, Y0), (X0 + 2000, Y0)])
    points = sample_points(roads)
    np.testing.assert_allclose(_xy(points), [[X0 + d, Y0] for d in range(0, 2001, 500)])
    assert list(points["point_id"]) == [0, 1, 2, 3, 4]


def test_spacing_is_exact_along_a_bent_road_split_into_pieces():
    # a road in three OSM pieces meeting end to end (no junction): one line, one stride
    roads = utm_lines(
        [(X0, Y0), (X0 + 700, Y0)],
        [(X0 + 700, Y0), (X0 + 700, Y0 + 900)],
        [(X0 + 700, Y0 + 900), (X0 + 1500, Y0 + 900)],
    )
    points = sample_points(roads, interval=250)
    path = shapely.LineString(
        [(X0, Y0), (X0 + 700, Y0), (X0 + 700, Y0 + 900), (X0 + 1500, Y0 + 900)]
    )
    along = np.sort(shapely.line_locate_point(path, points.geometry.values))
    np.testing.assert_allclose(along, np.arange(0, 2401, 250), atol=1e-6)


def test_two_way_streets_are_sampled_once():
    line = [(X0, Y0), (X0 + 300, Y0 + 400), (X0 + 1300, Y0 + 400)]
    one_way = sample_points(utm_lines(line))
    two_way = sample_points(utm_lines(line, line[::-1]))
    np.testing.assert_allclose(_xy(two_way), _xy(one_way))
    assert len(one_way) == 4  # 1500 m: 0, 500, 1000, 1500


def test_the_network_gets_one_point_per_interval_of_its_length():
    rng = np.random.default_rng(3)
    starts = rng.uniform(0, 20_000, size=(60, 2)) + np.array([X0 - 10_000, Y0])
    ends = starts + rng.uniform(-3000, 3000, size=(60, 2))
    roads = utm_lines(*[[tuple(a), tuple(b)] for a, b in zip(starts, ends, strict=True)])
    points = sample_points(roads, merge_tolerance=0)
    total = shapely.length(roads.geometry.values).sum()
    assert len(points) == int(total // 500) + 1


def test_near_duplicates_where_roads_meet_are_merged():
    # four 1 km arms meeting at a junction, and two arms that end 10 m from each other
    c = (X0, Y0)
    roads = utm_lines(
        [c, (X0 + 1000, Y0)],
        [c, (X0 - 1000, Y0)],
        [c, (X0, Y0 + 1000)],
        [c, (X0, Y0 - 1000)],
        [(X0 + 3000, Y0), (X0 + 3000, Y0 + 1000)],
        [(X0 + 3010, Y0 + 1000), (X0 + 3010, Y0 + 2000)],
    )
    raw = sample_points(roads, merge_tolerance=0)
    merged = sample_points(roads, merge_tolerance=25)
    assert pdist(_xy(raw)).min() < 25  # duplicates exist before merging
    assert pdist(_xy(merged)).min() >= 25
    # merging only removes points, and every removed point has a kept one within 25 m
    kept = shapely.MultiPoint(merged.geometry.values.tolist())
    assert set(map(tuple, _xy(merged))) <= set(map(tuple, _xy(raw)))
    assert (shapely.distance(raw.geometry.values, kept) < 25).all()
    assert len(merged) < len(raw)


@pytest.mark.parametrize(("dx", "dy"), [(0, 1), (1, 1), (1, 0), (0, -1), (-1, 0), (-1, 2)])
def test_heading_is_the_roads_bearing_from_true_north(dx, dy):
    # 60 km east of the central meridian, where grid north and true north differ by ~0.95 deg
    start = np.array([X0 + 60_000, Y0])
    end = start + np.array([dx, dy]) / np.hypot(dx, dy) * 1200
    points = sample_points(utm_lines([tuple(start), tuple(end)]))
    grid_bearing = np.degrees(np.arctan2(dx, dy))
    # independent: true azimuth = grid bearing + the meridian convergence at each point
    convergence = np.array(
        [
            Proj(UTM35).get_factors(lon, lat).meridian_convergence
            for lon, lat in zip(points["lon"], points["lat"], strict=True)
        ]
    )
    assert np.all(np.abs(convergence) > 0.9)
    expected = (grid_bearing + convergence) % 360
    diff = (points["heading"].to_numpy() - expected + 180) % 360 - 180
    np.testing.assert_allclose(diff, 0, atol=0.002)


def test_points_get_the_region_that_contains_them_and_lon_lat():
    boundary = gpd.GeoDataFrame(geometry=[shapely.box(X0, Y0, X0 + 3000, Y0 + 2000)], crs=UTM35)
    regions = make_grid(boundary)
    roads = utm_lines(
        [(X0 + 10, Y0 + 10), (X0 + 2990, Y0 + 1990)], [(X0, Y0 + 1500), (X0 + 3000, Y0 + 1500)]
    )
    points = sample_points(roads, regions=regions)
    by_id = regions.set_index("region_id").geometry
    assigned = by_id.loc[points["region_id"]].values
    assert shapely.covers(assigned, points.geometry.values).all()
    # points strictly inside one cell get exactly that cell (independent spatial join)
    joined = gpd.sjoin(points[["point_id", "geometry"]], regions, predicate="within")
    assert len(joined) >= len(points) - 3
    expected = dict(zip(joined.point_id, joined.region_id, strict=True))
    actual = dict(zip(points.point_id, points.region_id, strict=True))
    assert all(actual[k] == v for k, v in expected.items())
    lonlat = points.to_crs(4326)
    np.testing.assert_allclose(points["lon"], lonlat.geometry.x)
    np.testing.assert_allclose(points["lat"], lonlat.geometry.y)


def test_a_point_on_a_shared_cell_edge_gets_one_region():
    regions = make_grid(
        gpd.GeoDataFrame(geometry=[shapely.box(X0, Y0, X0 + 2000, Y0 + 1000)], crs=UTM35)
    )
    points = sample_points(
        utm_lines([(X0 + 1000, Y0 + 100), (X0 + 1000, Y0 + 900)]), regions=regions
    )
    assert points["region_id"].notna().all()
    assert set(points["region_id"]) <= {"500_6700", "501_6700"}


def test_geographic_roads_are_sampled_in_metres():
    roads = gpd.GeoDataFrame(
        geometry=[shapely.LineString([(26.93, 60.52), (26.95, 60.52)])], crs=4326
    )
    with pytest.warns(UrbangeoWarning, match="geographic CRS"):
        points = sample_points(roads)
    assert points.crs.is_projected
    _, _, dist = Geod(ellps="WGS84").inv(
        points["lon"].to_numpy()[:-1],
        points["lat"].to_numpy()[:-1],
        points["lon"].to_numpy()[1:],
        points["lat"].to_numpy()[1:],
    )
    np.testing.assert_allclose(dist, 500, rtol=2e-3)  # UTM scale factor, not degrees


def test_no_roads_gives_no_points():
    points = sample_points(gpd.GeoDataFrame(geometry=[], crs=UTM35))
    assert len(points) == 0
    assert {"point_id", "region_id", "heading", "lon", "lat"} <= set(points.columns)


@pytest.mark.parametrize("interval", [0, -1, float("nan")])
def test_bad_interval_is_refused(interval):
    with pytest.raises(InputError, match="interval"):
        sample_points(utm_lines([(X0, Y0), (X0 + 10, Y0)]), interval=interval)


def test_stride_positions_carry_over_line_ends():
    line, dist = stride_positions(np.array([300.0, 300.0, 1000.0]), 500)
    assert list(line) == [0, 1, 2, 2]
    np.testing.assert_allclose(dist, [0, 200, 400, 900])
    line, dist = stride_positions(np.array([300.0, 300.0, 900.0]), 500)  # 1500 m: end kept
    assert list(line) == [0, 1, 2, 2]
    np.testing.assert_allclose(dist, [0, 200, 400, 900])


def test_too_many_points_are_refused_before_sampling_with_an_interval_that_fits():
    from urbangeo.geo.limits import MAX_SV_POINTS, check_point_count

    # 10 km of road, with the two directions of a two-way street counted once
    roads = utm_lines([(X0, Y0), (X0 + 10_000, Y0)], [(X0 + 10_000, Y0), (X0, Y0)])
    with pytest.raises(InputError, match=r"10\.0 km of roads every 1 m makes about 10,001") as info:
        sample_points(roads, interval=1, merge_tolerance=0, max_points=5_000)
    assert "--interval 2.1 or more" in info.value.hint and "--force" in info.value.hint
    assert len(sample_points(roads, interval=2.1, merge_tolerance=0, max_points=5_000)) <= 5_000
    forced = sample_points(roads, interval=1, merge_tolerance=0, max_points=5_000, force=True)
    assert len(forced) == 10_001
    # the documented limit: a million points; --interval 0.01 on the 44.7 km of Kotka is over it
    with pytest.raises(InputError, match="more than the limit of 1,000,000"):
        check_point_count(44_667.0, 0.01)
    assert MAX_SV_POINTS == 1_000_000 and check_point_count(44_667.0, 0.045) <= MAX_SV_POINTS
