"""Commands of the imagery layer: tiles (overhead image per region), streetview (per point).

Their options are the settings of :mod:`urbangeo.settings.imagery`; only the run's GeoPackage
(``--gpkg``, with ``-o`` its deprecated spelling) is declared here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from urbangeo.imagery.stages import streetview_stage, tiles_stage
from urbangeo.settings import StreetviewSettings, TilesSettings
from urbangeo_cli._options import gpkg_stage_command, resolve_gpkg, settings_from


@gpkg_stage_command(TilesSettings, "The run's GeoPackage, with 'regions' from `urbangeo grid`.")
def tiles(gpkg: Path | None, legacy_gpkg: Path | None, overwrite: bool, **values: Any) -> None:
    """Save one overhead image per region (a rendered map, aerial or satellite imagery).

    \b
    Sources (one of them; default --render osm):
      --render osm   map tiles drawn offline from OpenStreetMap data: buildings, roads by
                     class, water, green and land use, in a fixed colour scheme
                     (see urbangeo.imagery.sources.render); the run's bundled city or
                     --osm FILE
      --raster FILE  a GeoTIFF/COG in any CRS, read window by window and warped
      --xyz URL      a tile service ({z}/{x}/{y} URL or xyzservices name), fetched with
                     --concurrency connections, retries and a --rate-limit, cached in
                     images/.tilecache/ so that reruns never fetch a tile twice
    \b
    Output: images/overhead/overhead_{region_id}.png beside the GeoPackage, each exactly
    its region's square, north up, --size pixels; and rows of kind 'overhead' in the layer
    'images' (image_id, region_id, path, source: what the image is, status
    ok/missing/failed, reason, width, height, sha256). A run folder made by urbangeo 0.1
    keeps its images/satellite/sat_{region_id}.png (kind 'satellite' is read as 'overhead').
    Rerun the same command to continue after an interruption: images already saved are kept
    (checked by sha256); --overwrite redoes them all, and replaces the old images and rows
    only when the new ones are complete. When images fail and none could be made (a server
    down, not an image), the command exits with an error.

    \b
    Examples:
      urbangeo tiles --gpkg kotka/run.gpkg
      urbangeo tiles --gpkg run.gpkg --raster orthophoto.tif --bands 1,2,3 --size 512
      urbangeo tiles --gpkg run.gpkg --xyz Esri.WorldImagery --zoom 17
      urbangeo tiles --gpkg run.gpkg --xyz "https://tiles.example.org/{z}/{x}/{y}.png"
    """
    settings = settings_from(TilesSettings, values)
    tiles_stage(resolve_gpkg(gpkg, legacy_gpkg), settings, overwrite=overwrite)


@gpkg_stage_command(
    StreetviewSettings, "The run's GeoPackage, with 'sv_points' from `urbangeo sample`."
)
def streetview(gpkg: Path | None, legacy_gpkg: Path | None, overwrite: bool, **values: Any) -> None:
    """Save street-view images for the sample points.

    \b
    Providers:
      folder     images you have: located by file name (id_lon,lat_yyyymm_heading.jpg),
                 EXIF GPS or --csv, matched to the nearest point within --radius;
                 panoramas can be cut into --panorama-views views
      google     Street View Static API (a free metadata call first per point)
      mapillary  Mapillary API v4 (nearest image facing the heading)
      baidu      Baidu panorama static images (coordinates converted to BD-09)
    API keys come from the environment only (GOOGLE_MAPS_API_KEY, MAPILLARY_TOKEN,
    BAIDU_MAP_AK) and are never written to the GeoPackage, logs or messages. --base-url
    (or URBANGEO_GOOGLE_URL, URBANGEO_MAPILLARY_URL, URBANGEO_BAIDU_URL) points a web
    provider at a proxy.

    \b
    Output: images/streetview/sv_{point_id}_{heading}.jpg beside the GeoPackage and rows
    of kind 'streetview' in the layer 'images': one per image, and one per point without
    an image (status ok/missing/failed, with the reason). Rerun the same command to
    continue after an interruption; --overwrite redoes every image, and replaces the old
    images and rows only when the new ones are complete.

    \b
    Examples:
      urbangeo streetview --gpkg run.gpkg --folder photos/ --radius 25
      urbangeo streetview --gpkg run.gpkg --folder panos/ --panorama-views 4
      urbangeo streetview --gpkg run.gpkg --folder bj/ --coords bd09
      urbangeo streetview --gpkg run.gpkg --provider google --headings 90,270
    """
    settings = settings_from(StreetviewSettings, values)
    streetview_stage(resolve_gpkg(gpkg, legacy_gpkg), settings, overwrite=overwrite)
