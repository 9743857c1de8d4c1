"""Imagery: satellite/overhead tiles per region and street-view images per sample point.

- :mod:`~urbangeo.imagery.stages`: ``tiles_stage`` and ``streetview_stage``, the library
  functions behind ``urbangeo tiles`` and ``urbangeo streetview``;
- :mod:`~urbangeo.imagery.satellite`: the ``TileSource`` interface, GeoTIFF/COG and XYZ sources;
- :mod:`~urbangeo.imagery.render`: map tiles drawn from OSM data (offline), and their colours;
- :mod:`~urbangeo.imagery.streetview`: street-view providers (folder, Google, Mapillary, Baidu)
  behind one interface, registered by name;
- :mod:`~urbangeo.imagery.manifest`: the ``images`` layer, atomic image files, resume;
- :mod:`~urbangeo.imagery.http`: the polite HTTP client (retries, rate limit, no leaked keys);
- :mod:`~urbangeo.imagery.coords`: WGS84 / GCJ-02 / BD-09; :mod:`~urbangeo.imagery.panorama`:
  perspective views from equirectangular panoramas.
"""
