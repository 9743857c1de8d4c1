"""WGS84 → GCJ-02 → BD-09 against reference pairs of the published formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from urbangeo.imagery.coords import (
    bd09_to_gcj02,
    bd09_to_wgs84,
    gcj02_to_bd09,
    gcj02_to_wgs84,
    wgs84_to_bd09,
    wgs84_to_gcj02,
)

# Outputs of the published formulas for (116.404, 39.915) (Beijing), as printed by the
# reference implementation wandergis/coordtransform (test/app.js).
REFERENCE = {
    "wgs84_to_gcj02": (116.41024449916938, 39.91640428150164),
    "gcj02_to_bd09": (116.41036949371029, 39.92133699351021),
    "bd09_to_gcj02": (116.39762729119315, 39.90865673957631),
}


def _scalar_wgs84_to_gcj02(lon: float, lat: float) -> tuple[float, float]:
    """The published formula, written out again with the math module (independent check)."""
    a, ee, pi = 6378245.0, 0.00669342162296594323, math.pi
    x, y = lon - 105.0, lat - 35.0
    dlat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * math.sqrt(abs(x))
    dlat += (20.0 * math.sin(6.0 * x * pi) + 20.0 * math.sin(2.0 * x * pi)) * 2.0 / 3.0
    dlat += (20.0 * math.sin(y * pi) + 40.0 * math.sin(y / 3.0 * pi)) * 2.0 / 3.0
    dlat += (160.0 * math.sin(y / 12.0 * pi) + 320 * math.sin(y * pi / 30.0)) * 2.0 / 3.0
    dlon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * math.sqrt(abs(x))
    dlon += (20.0 * math.sin(6.0 * x * pi) + 20.0 * math.sin(2.0 * x * pi)) * 2.0 / 3.0
    dlon += (20.0 * math.sin(x * pi) + 40.0 * math.sin(x / 3.0 * pi)) * 2.0 / 3.0
    dlon += (150.0 * math.sin(x / 12.0 * pi) + 300.0 * math.sin(x / 30.0 * pi)) * 2.0 / 3.0
    rad = lat / 180.0 * pi
    magic = 1 - ee * math.sin(rad) ** 2
    sqrt_magic = math.sqrt(magic)
    dlat = (dlat * 180.0) / ((a * (1 - ee)) / (magic * sqrt_magic) * pi)
    dlon = (dlon * 180.0) / (a / sqrt_magic * math.cos(rad) * pi)
    return lon + dlon, lat + dlat


def test_reference_pairs():
    assert wgs84_to_gcj02(116.404, 39.915) == pytest.approx(REFERENCE["wgs84_to_gcj02"], abs=1e-12)
    assert gcj02_to_bd09(116.404, 39.915) == pytest.approx(REFERENCE["gcj02_to_bd09"], abs=1e-12)
    assert bd09_to_gcj02(116.404, 39.915) == pytest.approx(REFERENCE["bd09_to_gcj02"], abs=1e-12)


@pytest.mark.parametrize(
    "lon, lat", [(116.404, 39.915), (121.4737, 31.2304), (113.2644, 23.1291), (87.6, 43.8)]
)
def test_forward_matches_the_formula_and_chains_to_bd09(lon, lat):
    assert wgs84_to_gcj02(lon, lat) == pytest.approx(_scalar_wgs84_to_gcj02(lon, lat), abs=1e-12)
    g = _scalar_wgs84_to_gcj02(lon, lat)
    assert wgs84_to_bd09(lon, lat) == pytest.approx(gcj02_to_bd09(*g), abs=1e-12)
    # The offsets are a few hundred metres to about 1.5 km, not more.
    bd_lon, bd_lat = wgs84_to_bd09(lon, lat)
    assert 0.001 < abs(bd_lon - lon) + abs(bd_lat - lat) < 0.03


def test_inverses_round_trip_vectorised():
    rng = np.random.default_rng(1)
    lon = rng.uniform(100, 125, 200)
    lat = rng.uniform(20, 45, 200)
    back_lon, back_lat = gcj02_to_wgs84(*wgs84_to_gcj02(lon, lat))
    np.testing.assert_allclose(back_lon, lon, atol=1e-9)
    np.testing.assert_allclose(back_lat, lat, atol=1e-9)
    back_lon, back_lat = bd09_to_wgs84(*wgs84_to_bd09(lon, lat))
    np.testing.assert_allclose(back_lon, lon, atol=1e-8)
    np.testing.assert_allclose(back_lat, lat, atol=1e-8)


def test_no_offset_outside_china():
    lon, lat = wgs84_to_gcj02([24.94, -74.0], [60.17, 40.7])
    np.testing.assert_array_equal(lon, [24.94, -74.0])
    np.testing.assert_array_equal(lat, [60.17, 40.7])
