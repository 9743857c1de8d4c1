import re
import subprocess

import geopandas as gpd
import pandas as pd
import pytest
import shapely
from click.testing import CliRunner
from PIL import Image

from tests.downstream.helpers import make_run
from tests.viz.browser import CHROMIUM, HEADLESS, Browser, opened_map, require_chromium
from urbangeo import constants as C
from urbangeo.downstream.heads import MLPConfig
from urbangeo.downstream.stages import cluster_stage, predict_stage
from urbangeo.io.gpkg import read_layer, write_layers
from urbangeo.viz.colors import ramp
from urbangeo.viz.maps import leaflet_assets
from urbangeo.viz.stages import map_stage
from urbangeo_cli.downstream import map_command

EVIL = '<script>document.title="pwned"</script><img src=x onerror="document.title=\'pwned\'">'


LONG = "A long caption about the region. " * 20


def overhead_images(folder, regions: gpd.GeoDataFrame) -> pd.DataFrame:
    """A 32-px image per region (a colour and a diagonal stripe), as the tiles stage writes."""
    out = folder / C.OVERHEAD_DIR
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, rid in enumerate(regions[C.REGION_ID]):
        image = Image.new("RGB", (32, 32), ((37 * i) % 256, (91 * i) % 256, 180))
        for k in range(32):
            image.putpixel((k, k), (255, 255, 255))
        image_id = "s0" if rid == "0_0" else f"overhead_{rid}"
        image.save(out / f"{image_id}.png")
        rows.append(
            {
                C.IMAGE_ID: image_id,
                C.KIND: C.KIND_OVERHEAD,
                C.REGION_ID: rid,
                C.POINT_ID: None,
                C.PATH: f"{C.OVERHEAD_DIR}/{image_id}.png",
                C.STATUS: C.STATUS_OK,
            }
        )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run with predictions, clusters, street-view points, captions, images, roads and a
    boundary, and its map."""
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
    images = pd.concat(
        [
            overhead_images(folder, regions),
            pd.DataFrame(
                {
                    C.IMAGE_ID: ["p1"],
                    C.KIND: [C.KIND_STREETVIEW],
                    C.REGION_ID: ["1_0"],
                    C.POINT_ID: [1],
                    C.PATH: ["images/streetview/p1.jpg"],  # not on disk: no thumbnail
                    C.STATUS: [C.STATUS_OK],
                }
            ),
        ],
        ignore_index=True,
    )
    captions = pd.DataFrame(
        {
            C.IMAGE_ID: ["s0", "s0", "p1", "overhead_1_0"],
            C.CAPTION: [EVIL, "not selected", "a street " + EVIL, LONG],
            C.SELECTED: [1, 0, 1, 1],
        }
    )
    area = regions.union_all()
    boundary = gpd.GeoDataFrame({"name": ["area"]}, geometry=[area.buffer(-200)], crs=regions.crs)
    x0, y0, x1, y1 = area.bounds
    roads = gpd.GeoDataFrame(
        {C.ROAD_ID: [0, 1]},
        geometry=[
            shapely.LineString([(x0, y0), (x1, y1)]),
            shapely.LineString([(x0, y1), (x1, y0)]),
        ],
        crs=regions.crs,
    )
    write_layers(
        gpkg,
        {
            C.LAYER_SV_POINTS: points,
            C.LAYER_IMAGES: images,
            C.LAYER_CAPTIONS: captions,
            C.LAYER_BOUNDARY: boundary,
            C.LAYER_ROADS: roads,
        },
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
            *HEADLESS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=4000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


#: Leaves only the base layer (and, with ``drop_base``, not even that).
ONLY_BASE = """
<script>
Object.keys(window.urbangeoLayers).forEach(function (name) {
  var layer = window.urbangeoLayers[name];
  if (name !== 'Run imagery' || DROP_BASE) { layer.remove(); }
});
</script>
"""


def _with_script(html_path, tmp_path, script: str):
    page = tmp_path / "page.html"
    page.write_text(html_path.read_text().replace("</html>", script + "</html>"))
    return page


def _tooltip_after_hover(browser: Browser, rid: str) -> str:
    browser.js(f"urbangeo.hover({rid!r}); 0")
    return browser.js(
        "new Promise(r => setTimeout(() => "
        "r((document.querySelector('.leaflet-tooltip') || {}).outerHTML || ''), 100))"
    )


def test_map_in_a_real_browser(run, tmp_path):
    require_chromium()
    _, html_path = run
    with opened_map(html_path) as browser:
        # 120 region squares drawn on the regions' canvas, one image per region, 3 points.
        assert browser.js("urbangeo.drawn()") == 120
        assert browser.js("document.querySelectorAll('.leaflet-image-layer').length") == 120
        assert browser.js("window.urbangeoLayers['Street-view points'].getLayers().length") == 3
        dom = browser.js("document.documentElement.outerHTML")
        assert 'id="urbangeo-legend"' in dom and "cluster 0 (" in dom
        for title in ("Base: run imagery", "Clusters", "Study area", "Street-view points"):
            assert f'<div class="title">{title}</div>' in dom  # a legend for every layer shown
        tooltip = _tooltip_after_hover(browser, "0_0")
        assert "0_0" in tooltip
        assert re.search(r'<img class="thumb" alt="" src="data:image/(png|jpeg);base64,', tooltip)
        assert "&lt;script&gt;document.title" in tooltip  # the caption, shown as text
        assert "<img src" not in tooltip and 'src="x"' not in tooltip
        assert "pwned" not in browser.js("document.title")
        assert browser.errors() == []
    shot = tmp_path / "shot.png"
    chromium(
        "--window-size=1000,800", f"--screenshot={shot}", html_path.as_uri(), tmp_path=tmp_path
    )
    image = Image.open(shot).convert("RGB")
    assert image.size == (1000, 800)
    assert len(image.getcolors(1 << 24)) > 50  # squares in three cluster colours, legend, text


def test_tooltips_are_bounded_and_popups_scroll(run, tmp_path):
    require_chromium()
    _, html_path = run
    with opened_map(html_path) as browser:
        _tooltip_after_hover(browser, "1_0")
        width, height = browser.js(
            "(function () { var b = document.querySelector('.leaflet-tooltip')"
            ".getBoundingClientRect(); return [b.width, b.height]; })()"
        )
        assert 100 < width <= 340 and 60 < height <= 260  # a 400-character caption, clamped
        assert "click for the whole caption" in browser.js("document.body.innerHTML")
        browser.js("urbangeo.click('1_0'); 0")
        popup = browser.js(
            "new Promise(r => setTimeout(() => "
            "r((document.querySelector('.leaflet-popup') || {}).outerHTML || ''), 100))"
        )
        assert "leaflet-popup-scrolled" in popup  # the popup holds it all, scrolling
        assert LONG.split()[0] in popup


def test_colours_in_the_page_follow_the_python_ramp(run):
    """The page computes the colours from the values and the ramps: compare with
    :func:`urbangeo.viz.colors.ramp` on the same values and scale."""
    require_chromium()
    import numpy as np

    from urbangeo.viz.colors import SEQUENTIAL, cluster_color

    gpkg, html_path = run
    predictions = read_layer(gpkg, C.LAYER_PREDICTIONS).set_index(C.REGION_ID)
    clusters = read_layer(gpkg, C.LAYER_CLUSTERS).set_index(C.REGION_ID)
    values = predictions["population_predicted"].astype(float)
    both = np.log1p(np.concatenate([values, predictions["population_observed"].astype(float)]))
    lo, hi = np.percentile(both, [2, 98])
    ids = list(values.index[:8])
    expected = ramp(np.log1p(values.loc[ids].to_numpy()), lo, hi, SEQUENTIAL)
    with opened_map(html_path) as browser:
        for rid, want in zip(ids, expected, strict=True):
            got = browser.js(f"urbangeo.colorOf('Predicted population', {rid!r})")
            rgb = [int(v) for v in re.findall(r"\d+", got)]
            wanted = [int(want[i : i + 2], 16) for i in (1, 3, 5)]
            assert max(abs(a - b) for a, b in zip(rgb, wanted, strict=True)) <= 3
            assert browser.js(f"urbangeo.colorOf('Clusters', {rid!r})") == cluster_color(
                int(clusters.loc[rid, "cluster"])
            )


def _map_area_colours(shot) -> int:
    image = Image.open(shot).convert("RGB")
    w, h = image.size
    crop = image.crop((int(w * 0.3), int(h * 0.3), int(w * 0.6), int(h * 0.7)))
    return len(crop.getcolors(1 << 24) or [])


def test_base_layer_is_not_blank(run, tmp_path):
    """With every overlay off the map still shows the run's imagery, offline; without it the
    same area is a flat colour (what the check would see on a blank map)."""
    require_chromium()
    _, html_path = run
    counts = {}
    for drop in (False, True):
        script = ONLY_BASE.replace("DROP_BASE", "true" if drop else "false")
        page = _with_script(html_path, tmp_path, script)
        shot = tmp_path / f"base-{drop}.png"
        chromium("--window-size=1000,800", f"--screenshot={shot}", page.as_uri(), tmp_path=tmp_path)
        counts[drop] = _map_area_colours(shot)
    assert counts[True] <= 3
    assert counts[False] > 30


def test_points_contrast_with_every_fill():
    from urbangeo.viz.colors import CATEGORICAL, DIVERGING, SEQUENTIAL
    from urbangeo.viz.leaflet import POINT_FILL, POINT_RING

    fills = {*CATEGORICAL, *SEQUENTIAL, *DIVERGING}
    assert POINT_FILL not in fills and POINT_RING not in fills


def test_map_without_images_draws_the_roads(run):
    from urbangeo.viz.maps import build_map

    gpkg, _ = run
    regions = read_layer(gpkg, C.LAYER_REGIONS)
    roads = read_layer(gpkg, C.LAYER_ROADS)
    fmap = build_map(regions, roads=roads, boundary=read_layer(gpkg, C.LAYER_BOUNDARY))
    specs = {
        child.spec.name: child.spec for child in fmap._children.values() if hasattr(child, "spec")
    }
    assert "Run imagery" not in specs
    assert specs["Roads"].show and specs["Study area"].show
    page = fmap.get_root().render()
    assert "urbangeo-roads" in page


def test_map_stage_writes_the_qgis_project(run):
    gpkg, _ = run
    assert (gpkg.parent / "run.qgz").is_file()


def test_docs_map_png_is_a_screenshot_of_a_run():
    from pathlib import Path

    shot = Path(__file__).resolve().parents[2] / "docs" / "map.png"
    image = Image.open(shot).convert("RGB")
    assert image.size[0] >= 800 and image.size[1] >= 600
    assert len(image.getcolors(1 << 24) or []) > 200  # imagery, fills, legend, text


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


def test_inlined_images_stay_within_their_budget(tmp_path):
    from urbangeo.viz.thumbs import image_uris

    paths = {}
    for i in range(4):
        path = tmp_path / f"{i}.png"
        Image.effect_noise((128, 128), 60 + i).convert("RGB").save(path)
        paths[str(i)] = path
    (tmp_path / "bad.png").write_text("not an image")
    paths["bad"] = tmp_path / "bad.png"
    full = image_uris(paths, px=128)
    assert set(full) == {"0", "1", "2", "3"}  # the unreadable file is left out
    assert all(uri.startswith("data:image/") for uri in full.values())
    smaller = image_uris(paths, px=128, budget=sum(map(len, full.values())) // 2)
    assert set(smaller) == set(full) and sum(map(len, smaller.values())) < sum(
        map(len, full.values())
    )
    assert image_uris(paths, px=128, budget=100) == {}  # too much: no images at all


def test_a_prediction_below_the_mean_baseline_is_flagged_on_the_map(run, tmp_path):
    """metrics.json flags a target whose layer model scores below the mean: its map layer says
    so (the CLI table, metrics.json and `urbangeo status` flag it too)."""
    import json

    from urbangeo import constants as C
    from urbangeo.viz.maps import BELOW_MEAN
    from urbangeo.viz.stages import map_stage

    gpkg, _ = run
    page_of = {}
    for flagged in (False, True):
        metrics = {
            "protocol": {"layer_model": "mlp"},
            "targets": {"population": {"below_baseline": {"mlp": flagged}}},
        }
        (gpkg.parent / C.METRICS_JSON).write_text(json.dumps(metrics))
        out = tmp_path / f"map_{flagged}.html"
        map_stage(gpkg, output=out, overwrite=True)
        page_of[flagged] = out.read_text()
    assert BELOW_MEAN.strip() in page_of[True] and BELOW_MEAN.strip() not in page_of[False]
