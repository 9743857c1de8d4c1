"""The offline map's region code, in JavaScript (``assets/regions.js``, package data, inlined
once in the page's head by :mod:`urbangeo.viz.leaflet`): the regions drawn on one canvas from
typed arrays, colours from the ramps of :mod:`urbangeo.viz.colors` applied in the browser,
hit-testing for tooltips and popups, captions, thumbnails and cells loaded on demand from the
folder beside the page, and ``window.urbangeo``, what tests and benchmarks read.

The data (``urbangeoRegions(map, data, ramps)``, see
:func:`urbangeo.viz.regions_data.regions_page`): ``fields`` (key, label, type ``f``: float32
or ``c``: uint16 codes of ``cats``, 0 = none), ``cells`` and ``blocks`` (``ids``, ``geom``:
lon/lat × 1e6 as int32, ``start`` ring offsets (default 4 vertices a ring), ``ring`` ring →
record (default the identity); ``cols``: base64 values; ``caption``/``img`` when inlined;
``chunk``: each cell's chunk), ``chunks`` (bounds in 0..1 Web Mercator and count), ``folder``
(the chunk files' folder, relative to the page).
"""

from functools import cache
from importlib.resources import files


@cache
def runtime_js() -> str:
    """The region code as the page inlines it (read once)."""
    return files("urbangeo.viz").joinpath("assets/regions.js").read_text(encoding="utf-8")
