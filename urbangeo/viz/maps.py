"""Interactive folium maps of a run's products that work offline, up to millions of regions.

The page needs no network (:mod:`urbangeo.viz.leaflet`: Leaflet inlined from an installed
package; folium's CDN assets dropped). What it shows:

* **Base layer, offline**: the run's own overhead images (``images/overhead/``: the rendering
  of the OSM extract, or the raster or tiles the run used) placed on their regions, as small
  images (:mod:`urbangeo.viz.thumbs`). It is the one base that always matches the run and
  needs no network; a run without images gets its roads drawn instead, on a light ground.
  With ``tiles="osm"`` OpenStreetMap tiles are offered as a second base (online only).
* **Overlays**: clusters, per indicator its prediction, ground truth and residual, ground
  truth of other indicators, the edge cells (grey, dashed: regions mostly outside the study
  area or its image data, left out of the analysis: :mod:`urbangeo.imagery.edges`), the
  roads, the study area's outline and the street-view points (dark dots with a white ring,
  distinct from every fill colour; always on top).
* **Scores**: with the run's ``metrics.json``, a panel (a button at the top left, under the zoom
  buttons) of every indicator's test R² per model and feature set (:mod:`urbangeo.viz.scores`).
* **A legend** for every layer shown, and **tooltips** of bounded size with the region's
  image, its values and its selected caption (clamped; a click opens the whole caption in a
  scrolling popup).
* **Similar regions** (:mod:`urbangeo.viz.similar_regions`): a click on a region outlines
  the :data:`SIMILAR_TOP` regions whose embeddings are most like its own (cosine similarity,
  computed in the browser), when the map has at most
  :data:`~urbangeo.viz.similar_regions.MAX_SIMILAR_REGIONS` embedded regions: the page then
  holds every region's unit-length embedding as float16 (2 bytes a value, about 2.7 in base64:
  20,000 regions of 512 values add 27 MB). Not in the aggregated view.

How it scales (issue #16): the regions are compact data (:mod:`urbangeo.viz.regions_data`)
drawn on one canvas; the colour ramps (:mod:`urbangeo.viz.colors`) are sent once and applied in
the browser, a layer's colours computed the first time it is shown. Up to
:data:`INLINE_REGIONS` regions the page is a single self-contained file. Above, the captions and
thumbnails are written beside it (``map_files/`` for ``map.html``, one file per spatial chunk)
and loaded, by ``<script>`` elements, which work from ``file://``, when a tooltip or popup needs
them: keep the folder beside the page. Above :data:`AGGREGATE_REGIONS` regions the page holds
blocks of k × k cells and, once zoomed in, the cells of the chunks in view. Measured sizes and
times: ``benchmarks/bench_map_scale.py``.

Safety: every value shown (captions, ids, indicator names) reaches the page as JSON data
(escaped by Jinja's ``tojson``, or by ``json.dumps`` in the chunk files) and is put into the DOM
with ``textContent``, never as HTML, so a caption containing ``<script>`` shows as text.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Collection, Mapping
from pathlib import Path

import geopandas as gpd
import pandas as pd

from urbangeo import constants as C
from urbangeo.io.files import write_text_atomic
from urbangeo.viz.leaflet import (
    LayerSpec,
    elements,
    leaflet_assets,
    offline_map_class,
    similar_layer_class,
)
from urbangeo.viz.map_layers import (
    BELOW_MEAN,
    CAPTION_CHARS,
    EDGE_COLOR,
    caption_texts,
    edge_layer,
    imagery_layers,
    line_layers,
    region_layers,
)
from urbangeo.viz.regions_data import AGGREGATE_REGIONS, INLINE_REGIONS, regions_page
from urbangeo.viz.scores import scores_control_class, scores_panel
from urbangeo.viz.similar_regions import SIMILAR_LAYER, SIMILAR_TOP, similar_data, similar_legend

__all__ = [
    "AGGREGATE_REGIONS",
    "BELOW_MEAN",
    "CAPTION_CHARS",
    "EDGE_COLOR",
    "INLINE_REGIONS",
    "SIMILAR_TOP",
    "TILES",
    "build_map",
    "leaflet_assets",
    "map_files_dir",
    "similar_data",
    "write_map",
]

TILES = ("none", "osm")


def build_map(
    regions: gpd.GeoDataFrame,
    *,
    clusters: pd.DataFrame | None = None,
    predictions: pd.DataFrame | None = None,
    observed: pd.DataFrame | None = None,
    points: gpd.GeoDataFrame | None = None,
    region_captions: pd.Series | None = None,
    point_captions: pd.Series | None = None,
    boundary: gpd.GeoDataFrame | None = None,
    roads: gpd.GeoDataFrame | None = None,
    region_images: Mapping[str, str] | None = None,
    point_images: Mapping[str, str] | None = None,
    tiles: str = "none",
    log: bool = True,
    title: str = "urbangeo",
    embeddings: pd.DataFrame | None = None,
    below_baseline: Collection[str] = (),
    metrics: Mapping | None = None,
    inline_regions: int = INLINE_REGIONS,
    aggregate_regions: int = AGGREGATE_REGIONS,
):
    """A folium map with one toggleable layer per product (module docstring); write it with
    :func:`write_map` (it may have files to write beside the page).

    ``regions``: polygons with ``region_id``. ``clusters``: region_id-indexed ``cluster``.
    ``predictions``: region_id-indexed ``{t}_observed``, ``{t}_predicted``, ``{t}_residual``
    (as written by ``urbangeo predict``). ``observed``: region_id-indexed ground truth (used
    for indicators that have no predictions). ``points``: street-view points. Captions:
    region_id- or point_id-indexed text for the tooltips. ``boundary`` and ``roads``: the
    run's layers of those names. ``region_images`` / ``point_images``: region_id / point_id →
    ``data:image/`` URI (:func:`urbangeo.viz.thumbs.image_uris`); region images are the base
    layer and the tooltips' thumbnails. ``embeddings``: region_id-indexed vectors; a click on
    a region then outlines its :data:`SIMILAR_TOP` most similar regions (left out above
    :data:`~urbangeo.viz.similar_regions.MAX_SIMILAR_REGIONS` regions and in the aggregated
    view). ``metrics``: the run's ``metrics.json`` (as a dict); the page then has a "Scores"
    panel, collapsed to a button: per indicator the test R² of every model and feature set
    compared (:mod:`urbangeo.viz.scores`). ``inline_regions`` and ``aggregate_regions``: the
    sizes above which captions go beside the page and the page aggregates
    (:data:`INLINE_REGIONS`, :data:`AGGREGATE_REGIONS`).
    """
    import folium

    if tiles not in TILES:
        raise ValueError(f"tiles must be one of {TILES}")
    Assets, Panes, Data, Regions, GeoLayer, Legend = elements()
    index = pd.Index(regions[C.REGION_ID].astype(str))
    ids = index.tolist()
    specs, columns = region_layers(
        index,
        clusters=clusters,
        predictions=predictions,
        observed=observed,
        log=log,
        below_baseline=below_baseline,
    )
    edge_spec = edge_layer(regions, index, columns)
    captions = caption_texts(region_captions, index)
    images = dict(region_images or {})
    image_list = [images.get(rid) for rid in ids] if images else None
    lonlat = regions.geometry.to_crs(C.WGS84)
    page = regions_page(
        regions.geometry,
        ids,
        columns,
        captions,
        image_list,
        inline=inline_regions,
        aggregate=aggregate_regions,
        lonlat=lonlat,
    )

    base = imagery_layers(image_list)
    layers_data, lines = line_layers(roads, boundary, points, point_captions, point_images, base)

    OfflineMap = offline_map_class()
    west, south, east, north = lonlat.total_bounds
    fmap = OfflineMap(
        location=[(south + north) / 2, (west + east) / 2],
        zoom_start=13,
        tiles=None,
        control_scale=True,
        prefer_canvas=True,  # roads, outline and points: one canvas each, not SVG elements
    )
    fmap.get_root().header.add_child(Assets(), name="urbangeo_assets")
    fmap.get_root().title = title
    fmap.add_child(Panes())
    page.data["view"] = {"bounds": [[south, west], [north, east]], "padding": [270, 10]}
    region_data = Regions(page.data)
    fmap.add_child(region_data)
    fmap.urbangeo_files = page.files  # written beside the page by write_map
    fmap.urbangeo_regions = region_data
    data_elements = {key: Data(value) for key, value in layers_data.items()}
    for element in data_elements.values():
        fmap.add_child(element)
    for spec in base:
        fmap.add_child(GeoLayer(region_data.get_name(), spec))
    if tiles == "osm":
        folium.TileLayer("OpenStreetMap", name="OpenStreetMap (online)", show=not base).add_to(fmap)
    region_specs = [*specs, *([edge_spec] if edge_spec is not None else [])]
    for spec in region_specs:
        fmap.add_child(GeoLayer(region_data.get_name(), spec))
    for key, spec in lines:
        fmap.add_child(GeoLayer(data_elements[key].get_name(), spec))
    similar = similar_data(embeddings, index) if page.data["cells"] is not None else None
    if similar is not None:
        similar["layers"] = [s.name for s in region_specs]
        layer = similar_layer_class()(region_data.get_name(), SIMILAR_LAYER, similar)
        fmap.add_child(layer)
    folium.LayerControl(collapsed=False).add_to(fmap)
    scores = scores_panel(metrics)
    if scores is not None:
        fmap.add_child(scores_control_class()(scores))
    shown = [*base, *region_specs, *(spec for _, spec in lines)]
    fmap.add_child(
        Legend(_legend_entries(shown, similar is not None, page.data["blocks"], len(ids)))
    )
    # Keep the regions clear of the layer list and the legend on the right.
    fmap.fit_bounds([[south, west], [north, east]], padding_bottom_right=(270, 10))
    return fmap


def _legend_entries(
    shown: list[LayerSpec], similar: bool, blocks: dict | None, n: int
) -> list[dict]:
    """The legend: every layer shown that has one, the similar regions', and a line on the
    aggregated view (``blocks``) when the page has one."""
    entries = [
        {"layer": s.name, "title": s.legend_title, "items": s.legend} for s in shown if s.legend
    ]
    if similar:
        entries.append(similar_legend())
    if blocks is not None:
        k = blocks["k"]
        entries.append(
            {
                "layer": "",
                "title": f"{n:,} regions: blocks of {k} × {k} (means) until zoomed in",
                "items": [],
            }
        )
    return entries


#: A file in the folder beside a map, so that write_map knows the folder is its own.
_MARKER = "README.txt"


def map_files_dir(path: str | os.PathLike) -> Path:
    """The folder of the files a map at ``path`` loads on demand (``map_files/`` for
    ``map.html``)."""
    path = Path(path)
    return path.with_name(f"{path.stem}_files")


def write_map(fmap, path: str | os.PathLike) -> Path:
    """Render ``fmap`` to ``path`` atomically, and its chunk files (if any) into
    :func:`map_files_dir` beside it (the folder replaced as a whole; an earlier map's folder
    is removed when the new map needs none)."""
    path = Path(path)
    folder = map_files_dir(path)
    files: dict[str, str] = getattr(fmap, "urbangeo_files", {}) or {}
    regions = getattr(fmap, "urbangeo_regions", None)
    if regions is not None:
        regions.data["folder"] = folder.name
    ours = folder.is_dir() and (folder / _MARKER).is_file()
    if files:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=path.parent))
        try:
            for name, text in files.items():
                (staging / name).write_text(text, encoding="utf-8")
            (staging / _MARKER).write_text(
                f"Captions, thumbnails and cells that {path.name} loads when needed: keep this "
                "folder beside it.\n",
                encoding="utf-8",
            )
            old = None
            if folder.exists():
                if not ours:
                    from urbangeo.errors import OutputError

                    raise OutputError(
                        f"{folder} exists and is not an urbangeo map's folder.",
                        hint="Move it away or write the map elsewhere (--output).",
                    )
                old = folder.with_name(f".{folder.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                folder.rename(old)
            staging.rename(folder)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    elif ours:
        shutil.rmtree(folder, ignore_errors=True)
    return write_text_atomic(path, fmap.get_root().render())
