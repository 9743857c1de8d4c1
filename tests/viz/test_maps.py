import re
import shutil
import subprocess

import geopandas as gpd
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.conftest import require
from tests.downstream.helpers import make_run
from urbangeo import constants as C
from urbangeo.downstream.heads import MLPConfig
from urbangeo.downstream.stages import cluster_stage, map_stage, predict_stage
from urbangeo.io.gpkg import read_layer, write_layers
from urbangeo.viz.colors import ramp
from urbangeo.viz.maps import leaflet_assets
from urbangeo_cli.downstream import map_command

EVIL = '<script>document.title="pwned"</script><img src=x onerror="document.title=\'pwned\'">'
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run with predictions, clusters, street-view points and captions, and its map."""
    folder = tmp_path_factory.mktemp("maprun")
    gpkg, _, _ = make_run(folder)
    predict_stage(gpkg, seeds=2, mlp=MLPConfig(hidden=16, max_epochs=30))
    cluster_stage(gpkg)
    regions = read_layer(gpkg, C.LAYER_REGIONS)
    points = gpd.GeoDataFrame(
        {C.POINT_ID: [0, 1, 2], C.REGION_ID: ["0_0", "1_0", "2_2"], C.HEADING: [10.0, 20, 30]},
        geometry=[regions.geometry.iloc[i].centroid for i in (0, 1, 26)],
        crs=regions.crs,
    )
    images = pd.DataFrame(
        {
            C.IMAGE_ID: ["s0", "p1"],
            C.KIND: [C.KIND_SATELLITE, C.KIND_STREETVIEW],
            C.REGION_ID: ["0_0", "1_0"],
            C.POINT_ID: [None, 1],
        }
    )
    captions = pd.DataFrame(
        {
            C.IMAGE_ID: ["s0", "s0", "p1"],
            C.CAPTION: [EVIL, "not selected", "a street " + EVIL],
            C.SELECTED: [1, 0, 1],
        }
    )
    write_layers(
        gpkg, {C.LAYER_SV_POINTS: points, C.LAYER_IMAGES: images, C.LAYER_CAPTIONS: captions}
    )
    result = map_stage(gpkg, tiles="none")
    return gpkg, result.files[0]


def test_map_is_self_contained(run):
    gpkg, html_path = run
    assert html_path == gpkg.parent / C.MAPS_DIR / "map.html"
    page = html_path.read_text()
    assert not re.search(r"<script[^>]+src=", page)
    assert not re.search(r"<link[^>]+href=", page)
    assert "Leaflet 1.9.3" in page  # inlined from xstatic-leaflet, licence header kept
    assert "images/layers.png" not in page and "data:image/png;base64," in page
    assert "<script>document.title" not in page and "<img src=x" not in page
    for name in (
        "Clusters",
        "Predicted population",
        "Observed population",
        "Residual population",
        "Street-view points",
    ):
        assert name in page


def test_leaflet_assets_come_from_the_package():
    js, css = leaflet_assets()
    assert "L.map" in js or "window.L" in js or "Leaflet" in js
    assert ".leaflet-container" in css


def test_ramp_colours():
    assert ramp([0.0, 1.0, float("nan")], 0, 1, ("#000000", "#ffffff")) == [
        "#000000",
        "#ffffff",
        None,
    ]


def chromium(*args, tmp_path):
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=4000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


OPEN_TOOLTIPS = """
<script>
var regions = window.urbangeoLayers['Clusters'];
regions.eachLayer(function (l) {
  if (l.feature.properties.region_id === '0_0') { l.openTooltip(l.getCenter()); }
});
</script>
"""


def test_map_in_a_real_browser(run, tmp_path):
    require(CHROMIUM is not None, "Chromium", "apt-get install --no-install-recommends chromium")
    _, html_path = run
    page = tmp_path / "page.html"
    page.write_text(html_path.read_text().replace("</html>", OPEN_TOOLTIPS + "</html>"))
    dom = chromium("--dump-dom", page.as_uri(), tmp_path=tmp_path).stdout
    # 120 region squares of the shown layer and 3 street-view circle markers.
    assert dom.count("leaflet-interactive") >= 123
    assert 'id="urbangeo-legend"' in dom and "cluster 0 (" in dom
    tooltip = re.search(r'<div class="leaflet-tooltip[^"]*".*?</div>', dom, re.S).group(0)
    assert "0_0" in tooltip
    assert "&lt;script&gt;document.title" in tooltip  # the caption, shown as text
    assert "<img" not in tooltip and "pwned" not in re.search(r"<title>(.*?)</title>", dom).group(1)
    shot = tmp_path / "shot.png"
    chromium(
        "--window-size=1000,800", f"--screenshot={shot}", html_path.as_uri(), tmp_path=tmp_path
    )
    image = Image.open(shot).convert("RGB")
    assert image.size == (1000, 800)
    assert len(image.getcolors(1 << 24)) > 50  # squares in three cluster colours, legend, text


def test_cli_map(run, tmp_path):
    gpkg, _ = run
    out = tmp_path / "m.html"
    result = CliRunner().invoke(map_command, ["--gpkg", str(gpkg), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert "tile.openstreetmap.org" in page  # the default base layer (online only)
    help_text = CliRunner().invoke(map_command, ["--help"]).output
    for word in ("Example", "offline", "--tiles", "default"):
        assert word in help_text
