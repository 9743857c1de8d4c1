"""The geo settings refuse, before any work, what the geo stages cannot do."""

import pytest

from urbangeo.errors import InputError
from urbangeo.settings import GridSettings, SampleSettings


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"bbox": (-180, -90, 180, 90)}, "beyond UTM's latitudes"),
        ({"bbox": (-180, -80, 180, 80)}, "too wide for one UTM zone"),
        ({"bbox": "-33.9,151.2,-33.8,151.3"}, "Invalid bbox"),
        ({"city": "kotka", "crs": "EPSG:99999"}, "Unknown CRS"),
        ({"city": "kotka", "crs": "EPSG:4326"}, "not a projected CRS"),
        ({"city": "kotka", "boundary_layer": "districts"}, "applies to a --boundary file"),
        ({"boundary_file": "b.geojson", "boundary_crs": "EPSG:99999"}, "Unknown CRS"),
    ],
)
def test_grid_settings_refuse_before_any_work(values, message):
    with pytest.raises(InputError, match=message):
        GridSettings.from_mapping(values)


def test_a_projected_crs_lets_a_wide_bbox_through():
    settings = GridSettings.from_mapping({"bbox": (-180, -80, 180, 80), "crs": "EPSG:3857"})
    assert settings.crs == "EPSG:3857"


def test_sample_force_is_a_setting_outside_the_fingerprint():
    assert SampleSettings.from_mapping({"force": True}).force is True
    assert "force" not in SampleSettings().to_dict(runtime=False)
