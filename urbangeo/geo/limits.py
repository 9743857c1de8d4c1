"""What the geo stages accept before they work: documented limits and the checks that apply them.

Each limit guards against a run that would exhaust the machine or give a wrong result without
saying so:

- :data:`MAX_SV_POINTS`: street-view points one ``sample`` makes without ``force``. Sampling
  holds about 0.5 KB per point at its peak (4.47 million points took 2.3 GB and 53 s on the
  bundled Kotka extract at a 0.01 m interval), and every later street-view stage fetches at
  least one image per point; a million points is more than any study of one city needs (1,000 km
  of roads every metre, or 500,000 km every 500 m). The same figure as the grid's cell limit.
- :data:`LARGE_GRID_REGIONS`: above this many regions ``grid`` warns with a rough cost of the
  later stages, :data:`SECONDS_PER_REGION` per region on one CPU core.
- :data:`UTM_SOUTH`, :data:`UTM_NORTH`, :data:`UTM_MAX_SCALE_ERROR`: a grid in the local UTM
  zone (the default) is refused where UTM is not defined (south of 80°S, north of 84°N) or
  where its scale error passes 1 % somewhere in the area (about 8° of longitude either side of
  the zone's central meridian at the equator, 16° at 60°N): cells of "1,000 m" there would be
  990 m or less on the ground. A projected ``crs`` chosen by the user is used as given.

This module imports nothing heavy: the settings check bounding boxes with it.
"""

from __future__ import annotations

import math

from urbangeo.errors import InputError

#: Street-view points a ``sample`` makes without ``force`` (see the module docstring).
MAX_SV_POINTS = 1_000_000
#: Above this many regions, ``grid`` warns about the cost of the later stages.
LARGE_GRID_REGIONS = 20_000
#: Rough seconds per region of the default run on a 2-core machine (São Paulo at 100 m: 589 s
#: for 3,606 regions, 81 % of it training 40 epochs; benchmarks/RESULTS.md, "The issue's
#: scaling table, re-measured").
SECONDS_PER_REGION = 0.16
#: Latitudes where UTM zones are defined (beyond them UPS, a polar stereographic, takes over).
UTM_SOUTH = -80.0
UTM_NORTH = 84.0
#: The largest scale error (1 % of lengths) a default UTM grid may have anywhere in its area.
UTM_MAX_SCALE_ERROR = 0.01

BBOX_EXAMPLE = "--bbox 24.93,60.16,24.96,60.18"


def _fmt(values: tuple[float, ...]) -> str:
    return ",".join(f"{v:g}" for v in values)


def check_bbox(west: float, south: float, east: float, north: float) -> None:
    """Refuse a bounding box that is not W,S,E,N in WGS84 degrees, offering the reading the
    numbers suggest: latitude and longitude swapped (S,W,N,E), or corners in the wrong order."""
    given = (west, south, east, north)
    if not all(math.isfinite(v) for v in given):
        raise InputError(f"Invalid bbox {_fmt(given)}: every number must be finite.")
    lon_ok = all(-180 <= v <= 180 for v in (west, east))
    lat_ok = all(-90 <= v <= 90 for v in (south, north))
    if lon_ok and lat_ok and west < east and south < north:
        return
    across_antimeridian = lon_ok and west > east and west - east > 180
    reading = None
    if (
        not lat_ok
        and all(-90 <= v <= 90 for v in (west, east))
        and all(-180 <= v <= 180 for v in (south, north))
    ):
        # latitude first (S,W,N,E, as many web maps write points): swap each pair
        s, w, n, e = given
        reading = (min(w, e), min(s, n), max(w, e), max(s, n)), "S,W,N,E"
    elif lon_ok and lat_ok and west != east and south != north and not across_antimeridian:
        reading = (
            (min(west, east), min(south, north), max(west, east), max(south, north)),
            ("corners in another order"),
        )
    problems = []
    if not lon_ok:
        problems.append("a longitude (W, E) outside -180..180")
    if not lat_ok:
        problems.append("a latitude (S, N) outside -90..90")
    if lon_ok and west >= east:
        problems.append("west is not less than east")
    if lat_ok and south >= north:
        problems.append("south is not less than north")
    hint = "Give --bbox W,S,E,N in WGS84 degrees with W < E and S < N, e.g. " + BBOX_EXAMPLE + "."
    if reading is not None:
        numbers, how = reading
        hint = f"Did you mean --bbox {_fmt(numbers)} (the numbers read as {how})? " + hint
    if across_antimeridian:
        hint += (
            " An area across the antimeridian (180°) needs a --boundary file and a projected "
            "--crs, or two grids, one each side."
        )
    raise InputError(f"Invalid bbox {_fmt(given)}: {'; '.join(problems)}.", hint=hint)


def _nice_ceiling(value: float) -> float:
    """``value`` rounded up to two significant digits."""
    if value <= 0:
        return value
    scale = 10 ** (math.floor(math.log10(value)) - 1)
    return math.ceil(value / scale - 1e-9) * scale


def estimated_points(road_length_m: float, interval: float) -> int:
    """Street-view points along ``road_length_m`` metres of roads every ``interval`` metres,
    before near-duplicates are merged (one stride walks all the roads: length / interval + 1)."""
    if road_length_m <= 0:
        return 0
    return math.floor(road_length_m / interval + 1e-9) + 1


def check_point_count(
    road_length_m: float,
    interval: float,
    *,
    max_points: int = MAX_SV_POINTS,
    force: bool = False,
) -> int:
    """The estimated number of points; refuse more than ``max_points`` unless ``force``.

    The error gives the estimate and the smallest interval that stays within the limit.
    """
    n = estimated_points(road_length_m, interval)
    if n <= max_points or force:
        return n
    fits = _nice_ceiling(road_length_m / max(max_points - 1, 1))
    raise InputError(
        f"Sampling {road_length_m / 1000:,.1f} km of roads every {interval:g} m makes about "
        f"{n:,} street-view points, more than the limit of {max_points:,} (memory, and every "
        "later street-view stage, grow with the points).",
        hint=f"Use --interval {fits:g} or more (at most {max_points:,} points here), or --force "
        "to sample anyway.",
    )


def grid_cost_warning(regions: int, *, threshold: int = LARGE_GRID_REGIONS) -> str | None:
    """A warning about the later stages' cost for a grid of ``regions`` regions, or None."""
    if regions <= threshold:
        return None
    seconds = regions * SECONDS_PER_REGION
    hours = seconds / 3600
    cost = f"{hours:,.1f} hours" if hours >= 1 else f"{seconds / 60:,.0f} minutes"
    return (
        f"The grid has {regions:,} regions (more than {threshold:,}): the later stages work per "
        f"region. As a rough figure, the default run takes about {SECONDS_PER_REGION:g} s per "
        f"region on a 2-core machine, so about {cost} here, most of it training 40 epochs "
        "(--steps makes training a fixed cost; street-view images and larger models cost "
        "more). A larger --cell-size gives fewer regions; --shard spreads the per-region "
        "stages over machines."
    )
