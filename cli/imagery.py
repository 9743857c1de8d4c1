"""Commands of the imagery layer: tiles (overhead image per region), streetview (per point)."""

from __future__ import annotations

from pathlib import Path

import click

from urbangeo.imagery.sources import DEFAULT_MIN_VALID, DEFAULT_RESAMPLING, RESAMPLING
from urbangeo.imagery.stages import (
    DEFAULT_TILE_SIZE,
    RENDER_STYLES,
    TILE_KEY_ENV,
    streetview_stage,
    tiles_stage,
)
from urbangeo.imagery.streetview import (
    DEFAULT_FOV,
    DEFAULT_MAX_ANGLE,
    ENV_URLS,
    PROVIDERS,
)
from urbangeo.imagery.streetview import DEFAULT_MATCH_RADIUS_M as DEFAULT_RADIUS_M
from urbangeo.io.http import DEFAULT_CONCURRENCY, DEFAULT_RATE_LIMIT, DEFAULT_RETRIES
from urbangeo_cli._common import overwrite_option, stage_command


def _numbers(text: str | None, kind: type, what: str) -> tuple | None:
    if text is None:
        return None
    try:
        return tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of {what}.") from None


def _size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not WIDTHxHEIGHT, e.g. 640x640.") from None
    return w, h


def _gpkg_option(help_text: str):
    return click.option(
        "-o",
        "--gpkg",
        "gpkg",
        required=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help=help_text,
    )


def _http_options(func):
    func = click.option(
        "--retries",
        type=click.IntRange(0, 20),
        default=DEFAULT_RETRIES,
        show_default=True,
        help="Tries after the first on HTTP 429/5xx, timeouts and dropped connections, with "
        "exponential backoff (and at least the server's Retry-After).",
    )(func)
    func = click.option(
        "--rate-limit",
        type=float,
        default=DEFAULT_RATE_LIMIT,
        show_default=True,
        metavar="PER_SECOND",
        help="Most requests per second, all connections together (0: no limit). Keep it "
        "polite on public servers.",
    )(func)
    return click.option(
        "--concurrency",
        type=click.IntRange(1, 64),
        default=DEFAULT_CONCURRENCY,
        show_default=True,
        help="HTTP requests in flight at once.",
    )(func)


@click.command()
@_gpkg_option("The run's GeoPackage, with 'regions' from `urbangeo grid`.")
@click.option(
    "--render",
    type=click.Choice(RENDER_STYLES),
    help="Draw map tiles from OpenStreetMap data, offline (the default source).",
)
@click.option(
    "--osm",
    type=click.Path(dir_okay=False, path_type=Path),
    help="OSM extract (.osm.pbf) for --render. Default: the run's bundled city, or the "
    ".osm.pbf that `urbangeo sample` used.",
)
@click.option(
    "--raster",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A GeoTIFF/COG (any raster GDAL reads, any CRS) to cut the tiles from.",
)
@click.option("--bands", metavar="B,B,B", help="Raster bands for R,G,B, or one band for grey.")
@click.option(
    "--xyz",
    metavar="URL|PROVIDER",
    help="An XYZ tile service: a URL template with {z}/{x}/{y} or an xyzservices provider "
    "name such as Esri.WorldImagery.",
)
@click.option("--zoom", type=click.IntRange(0, 23), help="Zoom level for --xyz. Default: auto.")
@click.option(
    "--key-env",
    default=TILE_KEY_ENV,
    show_default=True,
    metavar="VAR",
    help="Environment variable holding the tile service's API key, if it needs one.",
)
@_http_options
@click.option(
    "--size",
    type=click.IntRange(16, 4096),
    default=DEFAULT_TILE_SIZE,
    show_default=True,
    metavar="PIXELS",
    help="Side of the square images.",
)
@click.option(
    "--resampling",
    type=click.Choice(RESAMPLING),
    default=DEFAULT_RESAMPLING,
    show_default=True,
    help="Resampling for --raster and --xyz.",
)
@click.option(
    "--min-valid",
    type=click.FloatRange(0, 1),
    default=DEFAULT_MIN_VALID,
    show_default=True,
    metavar="SHARE",
    help="A region with image data on less than this share of its area is recorded as "
    "missing (outside the raster, nodata, missing tiles).",
)
@overwrite_option
@stage_command
def tiles(
    gpkg,
    render,
    osm,
    raster,
    bands,
    xyz,
    zoom,
    key_env,
    concurrency,
    rate_limit,
    retries,
    size,
    resampling,
    min_valid,
    overwrite,
) -> None:
    """Save one overhead image per region (satellite, aerial or map tile).

    \b
    Sources (one of them; default --render osm):
      --render osm   map tiles drawn offline from OpenStreetMap: buildings, roads by
                     class, water, green and land use, in a fixed colour scheme
                     (see urbangeo.imagery.render); the run's bundled city or --osm FILE
      --raster FILE  a GeoTIFF/COG in any CRS, read window by window and warped
      --xyz URL      a tile service ({z}/{x}/{y} URL or xyzservices name), fetched with
                     --concurrency connections, retries and a --rate-limit, cached in
                     images/.tilecache/ so that reruns never fetch a tile twice
    \b
    Output: images/satellite/sat_{region_id}.png beside the GeoPackage, each exactly its
    region's square, north up, --size pixels; and rows of kind 'satellite' in the layer
    'images' (image_id, region_id, path, source, status ok/missing/failed, reason, width,
    height, sha256). Rerun the same command to continue after an interruption: images
    already saved are kept (checked by sha256); --overwrite redoes them all.

    \b
    Examples:
      urbangeo tiles --gpkg kotka/run.gpkg
      urbangeo tiles --gpkg run.gpkg --raster orthophoto.tif --bands 1,2,3 --size 512
      urbangeo tiles --gpkg run.gpkg --xyz Esri.WorldImagery --zoom 17
      urbangeo tiles --gpkg run.gpkg --xyz "https://tiles.example.org/{z}/{x}/{y}.png"
    """
    if not (render or raster or xyz):
        render = "osm"
    tiles_stage(
        gpkg,
        raster=raster,
        xyz=xyz,
        render=render,
        osm=osm,
        size=size,
        bands=_numbers(bands, int, "band numbers"),
        zoom=zoom,
        resampling=resampling,
        min_valid=min_valid,
        concurrency=concurrency,
        rate_limit=rate_limit,
        retries=retries,
        key_env=key_env,
        overwrite=overwrite,
    )


_URLS = ", ".join(ENV_URLS.values())


@click.command()
@_gpkg_option("The run's GeoPackage, with 'sv_points' from `urbangeo sample`.")
@click.option(
    "--provider",
    type=click.Choice(sorted(PROVIDERS)),
    default="folder",
    show_default=True,
    help="Where the images come from.",
)
@click.option(
    "--folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="folder: a folder of images (searched recursively).",
)
@click.option(
    "--csv",
    "csv_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="folder: a CSV with columns image, lon, lat[, heading] locating the images.",
)
@click.option(
    "--coords",
    type=click.Choice(["wgs84", "gcj02", "bd09"]),
    default="wgs84",
    show_default=True,
    help="folder: datum of the coordinates in names/CSV/EXIF (gcj02, bd09: Chinese maps).",
)
@click.option(
    "--radius",
    type=float,
    default=DEFAULT_RADIUS_M,
    show_default=True,
    metavar="METRES",
    help="Match an image to a sample point only this close.",
)
@click.option(
    "--headings",
    default="0",
    show_default=True,
    metavar="DEG,DEG",
    help="Camera headings relative to the road (0: along it; 90,270: both sides).",
)
@click.option(
    "--panorama-views",
    type=click.IntRange(0, 36),
    default=0,
    show_default=True,
    metavar="N",
    help="folder: cut 2:1 panoramas into N perspective views around the road heading "
    "(0: keep panoramas whole).",
)
@click.option(
    "--fov",
    type=float,
    default=DEFAULT_FOV,
    show_default=True,
    metavar="DEG",
    help="Horizontal field of view of a view.",
)
@click.option(
    "--pitch",
    type=float,
    default=0.0,
    show_default=True,
    metavar="DEG",
    help="Camera tilt above the horizon.",
)
@click.option(
    "--size",
    metavar="WxH",
    help="Image size (default: google 640x640, baidu 1024x512, panorama views 640x640).",
)
@click.option(
    "--max-angle",
    type=float,
    default=DEFAULT_MAX_ANGLE,
    show_default=True,
    metavar="DEG",
    help="mapillary: accept images facing at most this far from the wanted heading.",
)
@click.option(
    "--base-url",
    metavar="URL",
    help=f"API base URL, for proxies and tests (or the environment: {_URLS}).",
)
@_http_options
@overwrite_option
@stage_command
def streetview(
    gpkg,
    provider,
    folder,
    csv_file,
    coords,
    radius,
    headings,
    panorama_views,
    fov,
    pitch,
    size,
    max_angle,
    base_url,
    concurrency,
    rate_limit,
    retries,
    overwrite,
) -> None:
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
    BAIDU_MAP_AK) and are never written to the GeoPackage, logs or messages.

    \b
    Output: images/streetview/sv_{point_id}_{heading}.jpg beside the GeoPackage and rows
    of kind 'streetview' in the layer 'images': one per image, and one per point without
    an image (status ok/missing/failed, with the reason). Rerun the same command to
    continue after an interruption; --overwrite redoes every image.

    \b
    Examples:
      urbangeo streetview --gpkg run.gpkg --folder photos/ --radius 25
      urbangeo streetview --gpkg run.gpkg --folder panos/ --panorama-views 4
      urbangeo streetview --gpkg run.gpkg --folder bj/ --coords bd09
      urbangeo streetview --gpkg run.gpkg --provider google --headings 90,270
    """
    tuple_headings = _numbers(headings, float, "degrees") or (0.0,)
    streetview_stage(
        gpkg,
        provider=provider,
        folder=folder,
        csv=csv_file,
        radius=radius,
        coords=coords,
        headings=tuple_headings,
        panorama_views=panorama_views,
        fov=fov,
        pitch=pitch,
        size=_size(size),
        max_angle=max_angle,
        base_url=base_url,
        concurrency=concurrency,
        rate_limit=rate_limit,
        retries=retries,
        overwrite=overwrite,
    )
