"""Geo layer: boundaries, square region grids, OSM roads and street-view sample points.

Nothing here imports torch: these functions run inside light environments too.
"""
